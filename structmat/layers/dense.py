"""``DenseLinear``: the dense reference as a StructuredLinear, so that "dense" works wherever a family does."""

from __future__ import annotations

import math

import numpy as np

import torch
from torch import nn

from structmat.layers.base import StructuredLinear
from structmat.matrices.dense import Dense

__all__ = ["DenseLinear"]


class DenseLinear(StructuredLinear):
    """``nn.Linear`` under the StructuredLinear interface; ``weight`` has shape (out_features, in_features)."""

    family = "dense"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.reset_bias()

    def _weight_product(self, x):
        return x @ self.weight.T

    def to_matrix(self, dtype=np.float64) -> Dense:
        return Dense(self.weight.detach().cpu().double().numpy().astype(dtype))

    @classmethod
    def _build_from_matrix(cls, M: Dense, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(M.W.copy()))
        return layer
