"""Numba kernels of the block-sparse family: BSR products with a dense block, forward and transposed.

A BSR matrix of shape ``(m, n)`` with blocks of ``br × bc`` is ``indptr`` (int32, ``⌈m/br⌉ + 1``: the blocks of
block-row ``I`` are ``indptr[I]:indptr[I+1]``), ``indices`` (int32, ``nblocks``: each block's block-column) and
``values`` (float, ``(nblocks, br, bc)``, row-major blocks). Blocks of the last block-row or column may reach past
row ``m`` or column ``n``; those entries are zero and skipped. The kernels are serial: benchmarks time one core.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["bsr_matmat", "bsr_rmatmat", "bsr_to_dense", "block_energies"]


@njit(cache=True)
def bsr_matmat(indptr, indices, values, X, out):
    """``out = M @ X``: indptr (mb+1,), indices (nblocks,), values (nblocks, br, bc), X (n, k), out (m, k)."""
    m, k = out.shape
    n = X.shape[0]
    br, bc = values.shape[1], values.shape[2]
    for i in range(m):
        for t in range(k):
            out[i, t] = 0.0
    for block_row in range(indptr.shape[0] - 1):
        r0 = block_row * br
        rows = min(br, m - r0)
        for p in range(indptr[block_row], indptr[block_row + 1]):
            c0 = indices[p] * bc
            cols = min(bc, n - c0)
            for r in range(rows):
                for c in range(cols):
                    v = values[p, r, c]
                    for t in range(k):
                        out[r0 + r, t] += v * X[c0 + c, t]


@njit(cache=True)
def bsr_rmatmat(indptr, indices, values, Y, out):
    """``out = Mᵀ @ Y``: indptr (mb+1,), indices (nblocks,), values (nblocks, br, bc), Y (m, k), out (n, k)."""
    n, k = out.shape
    m = Y.shape[0]
    br, bc = values.shape[1], values.shape[2]
    for j in range(n):
        for t in range(k):
            out[j, t] = 0.0
    for block_row in range(indptr.shape[0] - 1):
        r0 = block_row * br
        rows = min(br, m - r0)
        for p in range(indptr[block_row], indptr[block_row + 1]):
            c0 = indices[p] * bc
            cols = min(bc, n - c0)
            for r in range(rows):
                for c in range(cols):
                    v = values[p, r, c]
                    for t in range(k):
                        out[c0 + c, t] += v * Y[r0 + r, t]


@njit(cache=True)
def bsr_to_dense(indptr, indices, values, out):
    """Write the blocks into the zeroed dense ``out`` (m, n), skipping entries past its edges."""
    m, n = out.shape
    br, bc = values.shape[1], values.shape[2]
    for block_row in range(indptr.shape[0] - 1):
        r0 = block_row * br
        for p in range(indptr[block_row], indptr[block_row + 1]):
            c0 = indices[p] * bc
            for r in range(min(br, m - r0)):
                for c in range(min(bc, n - c0)):
                    out[r0 + r, c0 + c] = values[p, r, c]


def block_energies(W: np.ndarray, block_shape: tuple[int, int]) -> np.ndarray:
    """``E[I, J] = ‖W[I·br:(I+1)·br, J·bc:(J+1)·bc]‖²_F`` for every block of the grid, shape ``(⌈m/br⌉, ⌈n/bc⌉)``."""
    m, n = W.shape
    br, bc = block_shape
    mb, nb = -(-m // br), -(-n // bc)
    padded = np.zeros((mb * br, nb * bc), dtype=W.dtype)
    padded[:m, :n] = W
    return np.einsum("arbc,arbc->ab", padded.reshape(mb, br, nb, bc), padded.reshape(mb, br, nb, bc))

