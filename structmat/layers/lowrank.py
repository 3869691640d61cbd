"""``LowRankLinear``: ``y = (x V) Uᵀ + b``, two thin products, never the dense weight."""

from __future__ import annotations

import math

import numpy as np

import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers.base import StructuredLinear, check_structure_size
from structmat.matrices.lowrank import LowRank

__all__ = ["LowRankLinear"]


class LowRankLinear(StructuredLinear):
    """A linear layer with weight ``U Vᵀ``: ``U`` of shape (out_features, rank), ``V`` of shape (in_features, rank).

    ``nparams = rank * (in_features + out_features)``; a forward pass costs that many multiply-adds per row.
    """

    family = "lowrank"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_structure_size(check_positive_int(rank, "rank"), "rank", min(in_features, out_features),
                                    "min(in_features, out_features)")
        self.U = nn.Parameter(torch.empty(out_features, rank, device=device, dtype=dtype))
        self.V = nn.Parameter(torch.empty(in_features, rank, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    def reset_parameters(self) -> None:
        """Entries of ``U Vᵀ`` get ``nn.Linear``'s variance ``1 / (3 in_features)``: Var V = 1/in, Var U = 1/(3 rank)."""
        nn.init.uniform_(self.V, -math.sqrt(3.0 / self.in_features), math.sqrt(3.0 / self.in_features))
        nn.init.uniform_(self.U, -1.0 / math.sqrt(self.rank), 1.0 / math.sqrt(self.rank))
        self.reset_bias()

    def _weight_product(self, x):
        return (x @ self.V) @ self.U.T

    def to_matrix(self, dtype=np.float64) -> LowRank:
        return LowRank(self.U.detach().cpu().double().numpy().astype(dtype),
                       self.V.detach().cpu().double().numpy().astype(dtype))

    @classmethod
    def _build_from_matrix(cls, M: LowRank, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, rank=M.rank, device=device, dtype=dtype)
        with torch.no_grad():
            layer.U.copy_(torch.from_numpy(M.U.copy()))
            layer.V.copy_(torch.from_numpy(M.V.copy()))
        return layer

    def _structure_repr(self) -> str:
        return f"rank={self.rank}"
