"""``MonarchLinear``: ``y = x Mᵀ + b`` with ``M`` a Monarch matrix, by two batched block-diagonal products.

The two ``torch.bmm`` calls are the plain and training path; without autograd on the CPU, a batch of a few rows
takes one Numba sweep per row over ``R`` and ``L`` (:func:`structmat.layers._fast_kernels.monarch_rows`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers._fast_kernels import monarch_rows
from structmat.layers.base import StructuredLinear
from structmat.matrices.monarch import Monarch, default_blocks

__all__ = ["MonarchLinear"]

#: Batches up to this many rows take the per-row Numba sweep on the fast path; larger ones two batched products.
FAST_SWEEP_MAX_BATCH = 4


def _blocks_for(side: int, rank: int) -> int:
    """``default_blocks(side)``, reduced if needed so that blocks have at least ``rank`` rows or columns."""
    return max(1, min(default_blocks(side), side // rank))


class MonarchLinear(StructuredLinear):
    """A linear layer with a Monarch weight (Dao et al., ICML 2022): ``R`` of shape ``(K, J·t, I)`` acts on the
    ``K`` input blocks, the Monarch permutation regroups, ``L`` of shape ``(J, L_r, K·t)`` produces the outputs.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    in_blocks, out_blocks : int, optional
        ``K`` and ``J``; default :func:`~structmat.matrices.monarch.default_blocks` of each side (about its
        square root), fewer if ``rank`` needs larger blocks. Sides they do not divide are zero-padded (see :class:`~structmat.matrices.Monarch`).
    rank : int
        ``t``, at most ``min(I, L_r)``.

    Notes
    -----
    ``nparams = t · J · K · (I + L_r)``, also the multiply-adds per input row. The forward pass is two
    ``torch.bmm`` calls and never forms the dense weight.
    """

    family = "monarch"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, in_blocks: int | None = None,
                 out_blocks: int | None = None, rank: int = 1, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_positive_int(rank, "rank")
        K = _blocks_for(in_features, rank) if in_blocks is None else check_positive_int(in_blocks, "in_blocks")
        J = _blocks_for(out_features, rank) if out_blocks is None else check_positive_int(out_blocks, "out_blocks")
        if K > in_features or J > out_features:
            raise ValueError(f"in_blocks must be <= in_features={in_features} and out_blocks <= out_features="
                             f"{out_features}; got {K} and {J}")
        I, Lr = math.ceil(in_features / K), math.ceil(out_features / J)
        if rank > min(I, Lr):
            raise ValueError(f"rank must be <= min(block sizes) = {min(I, Lr)} (in_blocks={K}, out_blocks={J}); "
                             f"got {rank}")
        self.R = nn.Parameter(torch.empty(K, J * rank, I, device=device, dtype=dtype))
        self.L = nn.Parameter(torch.empty(J, Lr, K * rank, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def in_blocks(self) -> int:
        return self.R.shape[0]

    @property
    def out_blocks(self) -> int:
        return self.L.shape[0]

    @property
    def rank(self) -> int:
        return self.R.shape[1] // self.out_blocks

    def reset_parameters(self) -> None:
        """Uniform blocks with ``Var(y) = Var(x) / 3`` like ``nn.Linear``: ``Var R = 1/I``, ``Var L = 1/(3 K t)``."""
        I, Kt = self.R.shape[2], self.L.shape[2]
        nn.init.uniform_(self.R, -math.sqrt(3.0 / I), math.sqrt(3.0 / I))
        nn.init.uniform_(self.L, -1.0 / math.sqrt(Kt), 1.0 / math.sqrt(Kt))
        self.reset_bias()

    def _weight_product(self, x):
        K, Jt, I = self.R.shape
        J, Lr, _ = self.L.shape
        t = Jt // J
        batch = x.shape[0]
        if K * I != self.in_features:
            x = F.pad(x, (0, K * I - self.in_features))
        U = torch.bmm(x.reshape(batch, K, I).transpose(0, 1), self.R.transpose(1, 2))       # (K, batch, J·t)
        U = U.reshape(K, batch, J, t).permute(2, 1, 0, 3).reshape(J, batch, K * t)          # Monarch permutation
        V = torch.bmm(U, self.L.transpose(1, 2))                                             # (J, batch, L_r)
        return V.permute(1, 2, 0).reshape(batch, Lr * J)[:, : self.out_features]

    def _fast_product(self, x):
        if x.shape[0] > FAST_SWEEP_MAX_BATCH:
            return self._weight_product(x).contiguous()
        R, L, U, u = self._cached(f"sweep_{x.dtype}", lambda: (
            self.R.detach().numpy(), self.L.detach().numpy(),
            np.empty(self.R.shape[0] * self.R.shape[1], dtype=self.R.detach().numpy().dtype),
            np.empty(self.L.shape[2], dtype=self.R.detach().numpy().dtype)))
        y = x.new_empty((x.shape[0], self.out_features))
        monarch_rows(R, L, x.numpy(), y.numpy(), U, u)
        return y

    def to_matrix(self, dtype=np.float64) -> Monarch:
        return Monarch(self.R.detach().cpu().double().numpy().astype(dtype),
                       self.L.detach().cpu().double().numpy().astype(dtype), shape=(self.out_features, self.in_features))

    @classmethod
    def _build_from_matrix(cls, M: Monarch, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, in_blocks=M.in_blocks, out_blocks=M.out_blocks, rank=M.rank,
                    device=device, dtype=dtype)
        with torch.no_grad():
            layer.R.copy_(torch.from_numpy(np.array(M.R, dtype=np.float64)))
            layer.L.copy_(torch.from_numpy(np.array(M.L, dtype=np.float64)))
        return layer

    def _structure_repr(self) -> str:
        return f"in_blocks={self.in_blocks}, out_blocks={self.out_blocks}, rank={self.rank}"
