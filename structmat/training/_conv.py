"""Shared pieces of the training-time convolution layers: padding, the two gradient convolutions, checks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["pad_input", "conv_input_grad", "conv_weight_grad", "check_conv_input", "output_hw", "conv_geometry"]


def pad_input(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``(x, padding)`` for a convolution with integer padding, padding ``x`` here when needed.

    ``padding="same"`` (possibly asymmetric) and the non-zero padding modes are applied with ``F.pad`` through
    ordinary autograd, so that the custom gradient functions only see zero padding given as two integers.
    """
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return F.pad(x, conv._reversed_padding_repeated_twice, mode=mode), (0, 0)
    return x, tuple(conv.padding)


def conv_input_grad(input_shape, weight, grad_output, stride, padding, dilation, groups) -> torch.Tensor:
    """``dL/dx`` of ``conv2d(x, weight)`` given ``dL/dy`` (a transposed convolution)."""
    return torch.nn.grad.conv2d_input(input_shape, weight, grad_output, stride, padding, dilation, groups)


def conv_weight_grad(x, weight_shape, grad_output, stride, padding, dilation, groups) -> torch.Tensor:
    """``dL/dW`` of ``conv2d(x, W)`` given ``dL/dy`` (a sum over the examples of the batch)."""
    return torch.nn.grad.conv2d_weight(x, weight_shape, grad_output, stride, padding, dilation, groups)


def check_conv_input(layer: nn.Conv2d, input: torch.Tensor) -> None:
    """A ValueError naming the expected shape unless ``input`` is ``(batch, in_channels, H, W)``."""
    if input.dim() != 4 or input.shape[1] != layer.in_channels:
        raise ValueError(f"{type(layer).__name__} expects input of shape (batch, {layer.in_channels}, H, W); "
                         f"got {tuple(input.shape)}")


def output_hw(y: torch.Tensor) -> tuple[int, int]:
    return int(y.shape[-2]), int(y.shape[-1])


def conv_geometry(conv: nn.Conv2d) -> dict:
    """The keyword arguments that rebuild ``conv``'s geometry (for ``from_conv2d`` constructors)."""
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode)
