"""Numba kernel of the sequential optimal-brain-surgeon pruning (:func:`structmat.approximators.sparse.obs_prune`)."""

from __future__ import annotations

from numba import njit

__all__ = ["prune_block"]


@njit(cache=True)
def prune_block(block, keep, U, losses):
    """Prune one block of columns in place, left to right: block (m, b), keep (m, b) bool, U (b, b) upper
    Cholesky factor of the block's ``H⁻¹``, losses (m, b) out: ``q_j = w_j / U_jj`` for pruned entries, subtracted
    from the block's later columns as ``q_j U_j,j:`` (SparseGPT, Frantar & Alistarh 2023, Algorithm 1)."""
    m, b = block.shape
    for j in range(b):
        d = U[j, j]
        for i in range(m):
            if keep[i, j]:
                losses[i, j] = 0.0
            else:
                q = block[i, j] / d
                losses[i, j] = q
                block[i, j] = 0.0
                for c in range(j + 1, b):
                    block[i, c] -= q * U[j, c]
