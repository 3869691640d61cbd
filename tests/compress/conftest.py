"""A small transformer-like model (embeddings, attention projections, a feed-forward block) and a small convolutional
network with pointwise convolutions, built in-process and seeded: what the compression tests run on."""

import pytest
import torch
from torch import nn


class TinyBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.intermediate = nn.Linear(width, hidden)
        self.out = nn.Linear(hidden, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x, mask):
        scores = self.query(x) @ self.key(x).transpose(1, 2) / x.shape[-1] ** 0.5
        scores = scores.masked_fill(~mask[:, None, :], -1e4)
        x = self.norm1(x + self.output(torch.softmax(scores, -1) @ self.value(x)))
        return self.norm2(x + self.out(torch.nn.functional.gelu(self.intermediate(x))))


class TinyTransformer(nn.Module):
    """Called as ``model(input_ids=..., attention_mask=...)`` like a tokenizer's batch; returns hidden states."""

    def __init__(self, vocab: int = 50, width: int = 24, hidden: int = 48, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(TinyBlock(width, hidden) for _ in range(layers))
        self.pooler = nn.Linear(width, width)

    def forward(self, input_ids, attention_mask):
        x, mask = self.embed(input_ids), attention_mask.bool()
        for block in self.blocks:
            x = block(x, mask)
        return x


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 24, 1)
        self.project = nn.Conv2d(24, 16, 1, stride=2, bias=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.expand(torch.relu(self.stem(x))))
        return self.fc(torch.relu(self.project(x)).mean((2, 3)))


def token_batches(count: int, seed: int, *, batch: int = 4, length: int = 7, vocab: int = 50):
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(1, vocab, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length - 2:] = 0  # some padding
        ids[mask == 0] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


@pytest.fixture
def tiny_transformer():
    torch.manual_seed(0)
    return TinyTransformer().eval()


@pytest.fixture
def tiny_convnet():
    torch.manual_seed(1)
    return TinyConvNet().eval()


@pytest.fixture
def curve_cache(tmp_path):
    return tmp_path / "curves"
