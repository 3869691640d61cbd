"""Numba kernels of hierarchical matrices (``structmat.matrices.hmatrix``): products, densification, tiling check.

Every kernel takes the leaf table ``leaves`` of shape ``(L, 6)`` (int64 rows ``r0, r1, c0, c1, rank, offset``;
``rank = -1`` marks a dense leaf) and the flat float buffer ``values``. A dense leaf stores ``D_b`` (``m_b × n_b``,
row-major) at ``offset``; a low-rank leaf stores ``U_b`` (``m_b × r_b``, row-major) followed by ``V_b``
(``n_b × r_b``, row-major) and means ``U_b V_bᵀ``. Products cost ``nparams`` multiply-adds per column: explicit
loops with the column batch innermost for few columns, BLAS (``np.dot``) per leaf for many.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from structmat.matrices._block_kernels import acc_block, acc_block_t

__all__ = ["hmatrix_matmat", "hmatrix_rmatmat", "hmatrix_to_dense", "hmatrix_coverage"]

#: From this many columns on, each leaf's product goes through BLAS instead of explicit loops.
_BLAS_MIN_COLUMNS = 16


@njit(cache=True)
def _lowrank_leaf_loops(values, offa, offb, ma, nb, r, X, c0, Y, r0, t):
    """``Y[r0:r0+ma] += A (Bᵀ X[c0:c0+nb])`` with A (ma, r) at ``offa`` and B (nb, r) at ``offb``; t (r, k) scratch."""
    k = X.shape[1]
    for j in range(r):
        for col in range(k):
            t[j, col] = 0.0
    for i in range(nb):
        for j in range(r):
            b = values[offb + i * r + j]
            for col in range(k):
                t[j, col] += b * X[c0 + i, col]
    for i in range(ma):
        for j in range(r):
            a = values[offa + i * r + j]
            for col in range(k):
                Y[r0 + i, col] += a * t[j, col]


@njit(cache=True)
def hmatrix_matmat(leaves, values, X, Y):
    """``Y += H X``: leaves (L, 6) int64, values (nparams,), X (n, k), Y (m, k), all C-contiguous, one dtype."""
    k = X.shape[1]
    max_rank = 1
    for b in range(leaves.shape[0]):
        max_rank = max(max_rank, leaves[b, 4])
    t = np.empty((max_rank, k), dtype=X.dtype)
    for b in range(leaves.shape[0]):
        r0, r1, c0, c1, r, off = leaves[b, 0], leaves[b, 1], leaves[b, 2], leaves[b, 3], leaves[b, 4], leaves[b, 5]
        mb, nb = r1 - r0, c1 - c0
        if r < 0:
            if k >= _BLAS_MIN_COLUMNS:
                Y[r0:r1] += np.dot(values[off:off + mb * nb].reshape(mb, nb), X[c0:c1])
            else:
                acc_block(values, off, mb, nb, X, c0, Y, r0)
        elif r > 0:
            if k >= _BLAS_MIN_COLUMNS:
                U = values[off:off + mb * r].reshape(mb, r)
                V = values[off + mb * r:off + (mb + nb) * r].reshape(nb, r)
                Y[r0:r1] += np.dot(U, np.dot(V.T, X[c0:c1]))
            else:
                _lowrank_leaf_loops(values, off, off + mb * r, mb, nb, r, X, c0, Y, r0, t)


@njit(cache=True)
def hmatrix_rmatmat(leaves, values, Yin, Xout):
    """``Xout += Hᵀ Yin``: leaves (L, 6) int64, values (nparams,), Yin (m, k), Xout (n, k), C-contiguous."""
    k = Yin.shape[1]
    max_rank = 1
    for b in range(leaves.shape[0]):
        max_rank = max(max_rank, leaves[b, 4])
    t = np.empty((max_rank, k), dtype=Yin.dtype)
    for b in range(leaves.shape[0]):
        r0, r1, c0, c1, r, off = leaves[b, 0], leaves[b, 1], leaves[b, 2], leaves[b, 3], leaves[b, 4], leaves[b, 5]
        mb, nb = r1 - r0, c1 - c0
        if r < 0:
            if k >= _BLAS_MIN_COLUMNS:
                Xout[c0:c1] += np.dot(values[off:off + mb * nb].reshape(mb, nb).T, Yin[r0:r1])
            else:
                acc_block_t(values, off, mb, nb, Yin, r0, Xout, c0)
        elif r > 0:
            if k >= _BLAS_MIN_COLUMNS:
                U = values[off:off + mb * r].reshape(mb, r)
                V = values[off + mb * r:off + (mb + nb) * r].reshape(nb, r)
                Xout[c0:c1] += np.dot(V, np.dot(U.T, Yin[r0:r1]))
            else:
                # Hᵀ's leaf is V Uᵀ: the same loops with the roles of U and V swapped.
                _lowrank_leaf_loops(values, off + mb * r, off, nb, mb, r, Yin, r0, Xout, c0, t)


@njit(cache=True)
def hmatrix_to_dense(leaves, values, out):
    """Write every leaf into ``out`` (m, n), which must start at zero."""
    for b in range(leaves.shape[0]):
        r0, r1, c0, c1, r, off = leaves[b, 0], leaves[b, 1], leaves[b, 2], leaves[b, 3], leaves[b, 4], leaves[b, 5]
        mb, nb = r1 - r0, c1 - c0
        if r < 0:
            out[r0:r1, c0:c1] = values[off:off + mb * nb].reshape(mb, nb)
        elif r > 0:
            U = values[off:off + mb * r].reshape(mb, r)
            V = values[off + mb * r:off + (mb + nb) * r].reshape(nb, r)
            out[r0:r1, c0:c1] = np.dot(U, V.T)


@njit(cache=True)
def hmatrix_coverage(rows, cols, num_rows, num_cols):
    """How often each cell of a compressed grid is covered: rows, cols (L, 2) int64 cell ranges; returns
    (num_rows, num_cols) int32 counts."""
    count = np.zeros((num_rows, num_cols), dtype=np.int32)
    for b in range(rows.shape[0]):
        for i in range(rows[b, 0], rows[b, 1]):
            for j in range(cols[b, 0], cols[b, 1]):
                count[i, j] += 1
    return count
