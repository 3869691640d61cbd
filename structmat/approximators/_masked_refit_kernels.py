"""Numba kernel of the conjugate-gradient refit's preconditioner
(:class:`structmat.approximators._masked_refit._LowRankPlusDiagonal`)."""

from __future__ import annotations

from numba import njit

__all__ = ["cholesky_solve_rows"]


@njit(cache=True)
def cholesky_solve_rows(factors, B):
    """Solve ``L_i L_iᵀ x = b_i`` in place for every row ``b_i`` of ``B`` (m, r), ``L_i = factors[i]`` (m, r, r)
    lower triangular: a forward and a back substitution per row (``r²`` multiply-adds, against ``r³`` for an
    explicit inverse)."""
    m, r = B.shape
    for i in range(m):
        L = factors[i]
        for a in range(r):
            s = B[i, a]
            for c in range(a):
                s -= L[a, c] * B[i, c]
            B[i, a] = s / L[a, a]
        for a in range(r - 1, -1, -1):
            s = B[i, a]
            for c in range(a + 1, r):
                s -= L[c, a] * B[i, c]
            B[i, a] = s / L[a, a]
