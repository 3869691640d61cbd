"""Numba kernel of the sequential optimal-brain-surgeon pruning
(:func:`structmat.approximators._sequential_pruning.sequential_prune`)."""

from __future__ import annotations

from numba import njit

__all__ = ["prune_block"]


@njit(cache=True)
def prune_block(block, keep, U, losses):
    """Prune one block of columns in place, left to right: block (m, b), keep (m, b) bool, U (b, b) upper
    Cholesky factor of the block's ``H⁻¹``, losses (m, b) out: ``q_j = w_j / U_jj`` for pruned entries, subtracted
    from the block's later columns as ``q_j U_j,j:`` (SparseGPT, Frantar & Alistarh 2023, Algorithm 1).

    Made for Fortran-ordered ``block``, ``keep`` and ``losses``: every update is a sweep down a contiguous column,
    all rows at once."""
    m, b = block.shape
    for j in range(b):
        pivot = U[j, j]
        for i in range(m):
            if keep[i, j]:
                losses[i, j] = 0.0
            else:
                losses[i, j] = block[i, j] / pivot
                block[i, j] = 0.0
        for c in range(j + 1, b):
            u = U[j, c]
            for i in range(m):
                block[i, c] -= losses[i, j] * u
