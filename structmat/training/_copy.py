"""Building a training-time layer from the ``nn.Linear`` / ``nn.Conv2d`` it replaces."""

from __future__ import annotations

import torch
from torch import nn

from structmat.training._conv import conv_geometry

__all__ = ["copied_layer"]


def copied_layer(cls, module: nn.Linear | nn.Conv2d, **options):
    """``cls`` with ``module``'s geometry, device and dtype, holding copies of its weight and bias."""
    if isinstance(module, nn.Conv2d):
        geometry = conv_geometry(module)
    else:
        geometry = dict(in_features=module.in_features, out_features=module.out_features, bias=module.bias is not None)
    layer = cls(**geometry, device=module.weight.device, dtype=module.weight.dtype, **options)
    with torch.no_grad():
        layer.weight.copy_(module.weight)
        if module.bias is not None:
            layer.bias.copy_(module.bias)
    return layer
