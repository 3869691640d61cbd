"""A tiny seeded backbone and dataset for fast feature-cache tests (also imported by a child process)."""

import numpy as np
import torch
from torch import nn

from structmat.features import ArrayDataset, ImageTransform, backbone_from_module


class TinyNet(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.body = nn.Linear(16, 12)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.fc(torch.relu(self.body(x)))


def tiny_backbone(seed=0, image_size=12, layer="fc"):
    torch.manual_seed(seed)
    transform = ImageTransform(image_size, channels=3, mean=127.0, std=128.0)
    return backbone_from_module(TinyNet(), layer, transform=transform, name="tiny")


def tiny_dataset(count=200, seed=0, labels=True):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 10, 10), dtype=np.uint8)
    return ArrayDataset(images, rng.integers(0, 5, count) if labels else None, name=f"tiny{count}")
