"""``StructuredPointwiseConv2d``: a 1×1 convolution whose ``(out_channels, in_channels)`` weight is structured.

A pointwise convolution applies one matrix to every pixel: ``y[:, :, i, j] = W x[:, :, s·i, s·j] + b`` (stride
``s``; zero padding ``p`` adds pixels whose input is 0, so their output is ``b``). This module keeps the
convolution's interface — input ``(batch, in_channels, H, W)``, output ``(batch, out_channels, H', W')`` — and
computes the product with a registry layer (:class:`~structmat.layers.base.StructuredLinear`) held as ``.linear``
on the ``(batch·H'·W', in_channels)`` rows of the pixels, so the module tree stays ordinary: a structured layer
inside a thin wrapper made of a pad, a strided slice and two permutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from structmat.layers.base import StructuredLinear

__all__ = ["StructuredPointwiseConv2d", "pointwise_geometry", "pointwise_pixels"]


def pointwise_geometry(conv: nn.Conv2d) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(stride, padding)`` of a 1×1 ``nn.Conv2d`` as pairs of ints; a ValueError for what cannot be kept.

    Refused: ``groups != 1``, a kernel other than 1×1, ``padding="same"``/``"valid"`` strings other than the
    trivial ones, and non-zero padding with a padding mode other than ``"zeros"``.
    """
    if tuple(conv.kernel_size) != (1, 1) or conv.groups != 1:
        raise ValueError(f"only pointwise convolutions (kernel 1x1, groups=1) are matrices; got kernel "
                         f"{tuple(conv.kernel_size)}, groups={conv.groups}")
    stride = tuple(int(s) for s in conv.stride)
    if len(stride) == 1:
        stride = stride * 2
    padding = conv.padding
    if isinstance(padding, str):  # a 1x1 kernel needs no padding for "same" (stride 1 only) or "valid"
        padding = (0, 0)
    padding = tuple(int(p) for p in padding)
    if any(padding) and conv.padding_mode != "zeros":
        raise ValueError(f"a pointwise convolution with padding {padding} and padding_mode={conv.padding_mode!r} "
                         "cannot be kept; only zero padding is supported")
    return stride, padding


def pointwise_pixels(input: torch.Tensor, stride=(1, 1), padding=(0, 0)) -> torch.Tensor:
    """The ``(batch, H', W', channels)`` channel vectors a pointwise convolution multiplies (zero padding, then
    the stride's slice), from an input of shape ``(batch, channels, H, W)``."""
    if any(padding):
        input = F.pad(input, (padding[1], padding[1], padding[0], padding[0]))
    if tuple(stride) != (1, 1):
        input = input[:, :, ::stride[0], ::stride[1]]
    return input.permute(0, 2, 3, 1)


class StructuredPointwiseConv2d(nn.Module):
    """A pointwise convolution computed by a structured layer on the pixels' channel vectors.

    Parameters
    ----------
    linear : StructuredLinear
        ``in_features = in_channels``, ``out_features = out_channels``; it holds the weight and the bias.
    stride : int or (int, int)
    padding : int or (int, int)
        Zero padding on each side (as ``nn.Conv2d``).
    """

    def __init__(self, linear: StructuredLinear, stride=1, padding=0) -> None:
        super().__init__()
        if not isinstance(linear, StructuredLinear):
            raise TypeError(f"linear must be a StructuredLinear; got {type(linear).__name__}")
        self.linear = linear
        self.stride = (stride, stride) if isinstance(stride, int) else tuple(int(s) for s in stride)
        self.padding = (padding, padding) if isinstance(padding, int) else tuple(int(p) for p in padding)
        if len(self.stride) != 2 or min(self.stride) < 1 or len(self.padding) != 2 or min(self.padding) < 0:
            raise ValueError(f"stride must be ints >= 1 and padding ints >= 0 (one or two of each); got "
                             f"stride={stride!r}, padding={padding!r}")

    @property
    def in_channels(self) -> int:
        return self.linear.in_features

    @property
    def out_channels(self) -> int:
        return self.linear.out_features

    @property
    def family(self) -> str:
        return self.linear.family

    @property
    def nparams(self) -> int:
        return self.linear.nparams

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, linear: StructuredLinear) -> "StructuredPointwiseConv2d":
        """Wrap ``linear`` with the stride and padding of the pointwise ``conv`` it replaces."""
        stride, padding = pointwise_geometry(conv)
        if (linear.in_features, linear.out_features) != (conv.in_channels, conv.out_channels):
            raise ValueError(f"linear is {linear.out_features}x{linear.in_features} but the convolution maps "
                             f"{conv.in_channels} to {conv.out_channels} channels")
        return cls(linear, stride, padding)

    def pixels(self, input: torch.Tensor) -> torch.Tensor:
        """The ``(batch, H', W', in_channels)`` channel vectors the weight multiplies (after padding and stride)."""
        if input.dim() != 4 or input.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects input of shape (batch, {self.in_channels}, H, W); got "
                             f"{tuple(input.shape)}")
        return pointwise_pixels(input, self.stride, self.padding)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pixels(input)).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, padding={self.padding}"
