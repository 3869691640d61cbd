"""``LowRankSparseLinear``: ``y = (x V) Uᵀ + x Sᵀ + b``, a low-rank part plus a sparse part with a fixed support.

``U`` and ``V`` are parameters; ``S`` is held as the one factor of a
:class:`~structmat.layers.sparse_product.SparseProductLinear`, which this layer extends: its values are the parameter
vector ``values.0`` on the int32 CSR index buffers ``crow_0`` and ``col_0``. Each of the three paths of
:class:`~structmat.layers.base.StructuredLinear` is the two parts' own: two thin products for ``U Vᵀ``, and the
sparse layer's plain (gather and scatter-add; ELLPACK while tracing), training (CSR products with a sparse backward)
or inference path for ``S``; on the inference path the compiled kernels compute both parts and the bias in one call
for small batches (the low-rank part as two vector passes), the sparse part and the bias in one call plus a matrix
product for the low-rank part from 32 rows on. The dense weight is never formed. A part that is empty
(``rank = 0`` or ``nnz = 0``) costs nothing, and an empty ``S`` stores no indices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers.base import FAST_DTYPES, StructuredLinear, check_structure_size
from structmat.layers.sparse_product import SparseProductLinear
from structmat.matrices.lowrank_sparse import LowRankSparse

__all__ = ["LowRankSparseLinear"]


def random_support(shape: tuple[int, int], count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(crow, col)`` of ``count`` distinct positions, one in every row first (no dead outputs)."""
    m, n = shape
    count = min(count, m * n)
    first = np.arange(min(m, count)) * n + rng.integers(0, n, min(m, count))
    rest = np.setdiff1d(np.arange(m * n), first, assume_unique=True)
    chosen = np.sort(np.concatenate([first, rng.choice(rest, count - first.size, replace=False)]))
    rows, cols = np.divmod(chosen, n)
    crow = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=crow[1:])
    return crow, cols


class LowRankSparseLinear(SparseProductLinear):
    """A linear layer with weight ``U Vᵀ + S``: ``U`` (out_features, rank), ``V`` (in_features, rank), and ``S``
    holding ``nnz`` trainable values at fixed positions.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rank : int >= 0
        At most ``min(in_features, out_features)``.
    nnz : int >= 0, optional
        Non-zeros of ``S`` for a fresh layer (default: as many as the low-rank part's parameters), at random
        positions (``seed``) with at least one per row.
    seed : int
        Seeds the support and the values of a fresh layer.

    Notes
    -----
    ``nparams = rank · (in_features + out_features) + nnz``, also the multiply-adds per input row. A fresh layer
    splits ``nn.Linear``'s output variance evenly between the two parts.
    """

    family = "lowrank_sparse"
    _matrix_class = LowRankSparse

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int, nnz: int | None = None,
                 seed: int = 0, device=None, dtype=None) -> None:
        StructuredLinear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_structure_size(check_positive_int(rank, "rank", minimum=0), "rank",
                                    min(in_features, out_features), "min(in_features, out_features)")
        size = in_features * out_features
        nnz = min(rank * (in_features + out_features), size) if nnz is None else check_positive_int(nnz, "nnz", 0)
        check_structure_size(nnz, "nnz", size, "in_features * out_features")
        if rank == 0 and nnz == 0:
            raise ValueError("a LowRankSparseLinear needs rank >= 1 or nnz >= 1; got neither")
        crow, col = random_support((out_features, in_features), nnz, np.random.default_rng(seed))
        self._set_structure(rank, crow, col, device, dtype)
        self.reset_parameters(seed)

    def _set_structure(self, rank, crow, col, device, dtype) -> None:
        self._rank, self._nnz = int(rank), int(len(col))  # plain ints: the paths branch on them while tracing
        self.U = nn.Parameter(torch.zeros(self.out_features, rank, device=device, dtype=dtype))
        self.V = nn.Parameter(torch.zeros(self.in_features, rank, device=device, dtype=dtype))
        shape = (self.out_features, self.in_features)
        SparseProductLinear._set_structure(self, [(crow, col, shape)] if self._nnz else [], device, dtype)

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def nnz(self) -> int:
        return self._nnz

    def reset_parameters(self, seed: int = 0) -> None:
        """Uniform values with ``Var(y) = Var(x) / 3`` (``nn.Linear``'s), half from each part when both exist."""
        generator = torch.Generator().manual_seed(seed)
        parts = (self.rank > 0) + (self.nnz > 0)

        def uniform(tensor, bound):
            sample = torch.empty(tensor.shape, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
            tensor.copy_(sample.to(tensor.dtype))

        with torch.no_grad():
            if self.rank:
                uniform(self.V, math.sqrt(3.0 / self.in_features))
                uniform(self.U, math.sqrt(1.0 / (parts * self.rank)))    # Var U = 1 / (3 · parts · rank)
            if self.nnz:
                uniform(self.values[0], math.sqrt(self.out_features / (parts * self.nnz)))
        self.reset_bias()

    # ---------------------------------------------------------------- the three paths
    def _low(self, x):
        return (x @ self.V) @ self.U.T

    def _combine(self, x, sparse_product):
        if not self.nnz:
            return self._low(x)
        y = sparse_product(x)
        return y + self._low(x) if self.rank else y

    def _weight_product(self, x):
        return self._combine(x, lambda x: SparseProductLinear._weight_product(self, x))

    def _train_product(self, x):
        if x.dtype not in FAST_DTYPES:  # the CSR kernels have no reduced-precision versions: the sparse plain path
            return self._weight_product(x)
        return self._combine(x, lambda x: SparseProductLinear._train_product(self, x))

    def _fast_product(self, x):
        return self._combine(x, lambda x: SparseProductLinear._fast_product(self, x))

    def _lowrank_parameters(self):  # the compiled kernels add U (Vᵀ x) in the same call (see SparseProductLinear)
        return (self.U, self.V) if self.rank else None

    # ---------------------------------------------------------------- matrices
    def to_matrix(self, dtype=np.float64) -> LowRankSparse:
        m, n = self.out_features, self.in_features
        if self.nnz:
            crow, col = (t.detach().cpu().numpy() for t in self._factor(0))
            indptr, indices, data = crow, col, self.values[0].detach().cpu().double().numpy()
        else:
            indptr, indices, data = np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        U = self.U.detach().cpu().double().numpy()
        V = self.V.detach().cpu().double().numpy()
        return LowRankSparse.from_csr(U, V, indptr, indices, data, dtype=dtype)

    @classmethod
    def _build_from_matrix(cls, M: LowRankSparse, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        layer._set_structure(M.rank, M.indptr, M.indices, device, dtype)
        with torch.no_grad():
            layer.U.copy_(torch.from_numpy(np.array(M.U, dtype=np.float64)))
            layer.V.copy_(torch.from_numpy(np.array(M.V, dtype=np.float64)))
            if M.nnz:
                layer.values[0].copy_(torch.from_numpy(np.array(M.data, dtype=np.float64)))
        return layer

    def _structure_repr(self) -> str:
        return f"rank={self.rank}, nnz={self.nnz}"
