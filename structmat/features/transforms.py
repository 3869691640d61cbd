"""The image transform a backbone needs: resize, channel conversion, normalisation, applied to whole batches.

Datasets yield images as tensors of shape ``(C, H, W)`` with pixel values on the 0–255 scale (uint8 or float).
:meth:`ImageTransform.collate` stacks a list of ``(image, label)`` items into one batch, resizing each image to
``image_size × image_size`` (bilinear; antialiased when shrinking; no crop, so a non-square image is stretched),
repeating a grey channel three times (or averaging colour to grey), and normalising each channel as
``(x − mean) / std``. Everything but the per-item resize of differently sized images runs on the whole batch.
EfficientNet-Lite expects ``(x − 127) / 128``; torchvision's ImageNet models ``(x/255 − μ) / σ``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ImageTransform"]


def _check_channel_stats(values, name: str, channels: int) -> tuple[float, ...]:
    if isinstance(values, numbers.Real):
        values = (float(values),)
    values = tuple(float(v) for v in values)
    if len(values) not in (1, channels):
        raise ValueError(f"{name} must hold 1 or {channels} values (one per channel); got {len(values)}: {values}")
    return values


@dataclass(frozen=True)
class ImageTransform:
    """Resize to ``image_size``, convert to ``channels`` channels, and normalise as ``(x − mean) / std``.

    Parameters
    ----------
    image_size : int
        Side of the square images the backbone receives.
    channels : int
        1 or 3. Grey images are repeated to 3 channels; colour images are averaged to 1.
    mean, std : float or tuple of float
        Per-channel normalisation on the 0–255 pixel scale (one value for all channels, or one per channel).
    """

    image_size: int
    channels: int = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, numbers.Integral) or self.image_size < 1:
            raise ValueError(f"image_size must be an int >= 1; got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {self.channels!r}")
        object.__setattr__(self, "mean", _check_channel_stats(self.mean, "mean", self.channels))
        object.__setattr__(self, "std", _check_channel_stats(self.std, "std", self.channels))
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive; got {self.std}")

    def to_json(self) -> dict:
        """The settings, as written into a feature cache's manifest."""
        return {"image_size": int(self.image_size), "channels": self.channels, "mean": list(self.mean),
                "std": list(self.std)}

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if tuple(images.shape[-2:]) == (size, size):
            return images
        shrinking = images.shape[-2] > size or images.shape[-1] > size
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)

    def _convert_channels(self, images: torch.Tensor) -> torch.Tensor:
        have = images.shape[1]
        if have == 4:  # RGBA: drop alpha
            images, have = images[:, :3], 3
        if have == self.channels:
            return images
        if have == 1 and self.channels == 3:
            return images.expand(-1, 3, -1, -1)
        if have == 3 and self.channels == 1:
            return images.mean(dim=1, keepdim=True)
        raise ValueError(f"images must have 1, 3 or 4 channels; got shape {tuple(images.shape)}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Transform a batch of shape ``(B, C, H, W)`` (0–255 scale) to ``(B, channels, size, size)`` float32."""
        if not torch.is_tensor(images) or images.dim() != 4:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise ValueError(f"expected a batch tensor of shape (batch, channels, height, width); got {shape}")
        images = self._resize(images.to(torch.float32))
        images = self._convert_channels(images)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return ((images - mean) / std).contiguous()

    def collate(self, items) -> tuple[torch.Tensor, torch.Tensor]:
        """``DataLoader`` collate function: ``[(image, label), ...]`` → ``(images, labels)``, transformed."""
        images = [torch.as_tensor(image) for image, _ in items]
        labels = torch.tensor([int(label) for _, label in items], dtype=torch.int64)
        if len({tuple(image.shape) for image in images}) == 1:
            batch = torch.stack(images)
        else:  # sizes or channel counts differ: bring each image to the common shape first
            batch = torch.cat([self._convert_channels(self._resize(image.unsqueeze(0).to(torch.float32)))
                               for image in images])
        return self(batch), labels
