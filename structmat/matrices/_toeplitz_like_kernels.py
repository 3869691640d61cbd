"""Numba kernels of the Toeplitz-like family: the map from ``Q = G (J H)ᵀ`` to the matrix, and its adjoint.

With ``Z_1`` the cyclic down-shift and ``Z_{-1}`` the skew one (N×N), every Toeplitz-like matrix is

    M = ½ Σ_j Z_1(g_j) Z_{-1}(J h_j) = ½ 𝒜(Q),   𝒜(Q) := Σ_{a,b} Q[a, b] Z_1^a Z_{-1}^b,   Q = G (J H)ᵀ.

``Z_1^a Z_{-1}^b e_l = ±e_{(l+a+b) mod N}``, with a minus sign iff ``l + b >= N``. So ``𝒜`` sends the
anti-diagonal ``a + b ≡ c`` of ``Q`` to the wrapped diagonal ``c`` of the matrix: with ``q_c[b] = Q[(c-b) mod N, b]``,

    𝒜(Q)[(l+c) mod N, l] = Σ_{b < N-l} q_c[b] - Σ_{b >= N-l} q_c[b],

and the adjoint ``𝒜*(R)[a, b] = <R, Z_1^a Z_{-1}^b>`` is the same prefix-sum trick along the wrapped diagonals of
``R``. Both cost O(N²), so ``to_dense`` costs one GEMM (``N² r``) plus O(N²), and the least-squares fits get their
right-hand sides without any FFT. See structmat/matrices/toeplitz_like.py for the references.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["_assemble", "_adjoint", "_masked_gram_block"]


#: Wrapped diagonals processed together, so that each cache line of the N×N operands is read once.
_BLOCK = 16


@njit(cache=True)
def _assemble(Q, m, n):
    """``𝒜(Q)[:m, :n]`` for ``Q`` of shape (N, N) with ``N >= m, n``; returns (m, n) float64."""
    N = Q.shape[0]
    out = np.zeros((m, n), dtype=np.float64)
    prefix = np.empty((N + 1, _BLOCK), dtype=np.float64)
    for c0 in range(0, N, _BLOCK):
        width = min(_BLOCK, N - c0)
        for t in range(width):
            prefix[0, t] = 0.0
        for b in range(N):
            for t in range(width):
                a = c0 + t - b
                if a < 0:
                    a += N
                prefix[b + 1, t] = prefix[b, t] + Q[a, b]
        for l in range(n):
            for t in range(width):
                i = l + c0 + t
                if i >= N:
                    i -= N
                if i < m:
                    out[i, l] = 2.0 * prefix[N - l, t] - prefix[N, t]
    return out


@njit(cache=True)
def _adjoint(R, N):
    """``𝒜*(R̄)`` for ``R`` of shape (m, n), zero-padded to ``R̄`` of shape (N, N); returns (N, N) float64."""
    m, n = R.shape
    out = np.empty((N, N), dtype=np.float64)
    prefix = np.empty((N + 1, _BLOCK), dtype=np.float64)
    for c0 in range(0, N, _BLOCK):
        width = min(_BLOCK, N - c0)
        for t in range(width):
            prefix[0, t] = 0.0
        for l in range(N):
            for t in range(width):
                i = l + c0 + t
                if i >= N:
                    i -= N
                value = 0.0
                if i < m and l < n:
                    value = R[i, l]
                prefix[l + 1, t] = prefix[l, t] + value
        for b in range(N):
            for t in range(width):
                a = c0 + t - b
                if a < 0:
                    a += N
                out[a, b] = 2.0 * prefix[N - b, t] - prefix[N, t]
    return out


@njit(cache=True)
def _masked_gram_block(K, length, signed):
    """Windowed diagonal sums of the periodic (``signed``: sign-flipped across the period) extension of ``K``.

    ``K`` has shape (N, N). Returns ``B`` (N, N) with, for ``signed=False``,
    ``B[a, a'] = Σ_{i<length} K[(i-a) mod N, (i-a') mod N]`` (the masked G-step blocks) and, for ``signed=True``,
    ``B[k, k'] = Σ_{l<length} σ(l+k) σ(l+k') K[(l+k) mod N, (l+k') mod N]`` with ``σ(u) = -1`` iff ``u >= N``
    (the masked H-step blocks). O(N²) through prefix sums along the diagonals of the 2N×2N extension.
    """
    N = K.shape[0]
    prefix = np.zeros((2 * N + 1, 2 * N + 1), dtype=np.float64)
    for u in range(2 * N):
        for v in range(2 * N):
            value = K[u % N, v % N]
            if signed and ((u >= N) != (v >= N)):
                value = -value
            prefix[u + 1, v + 1] = prefix[u, v] + value
    out = np.empty((N, N), dtype=np.float64)
    for a in range(N):
        for b in range(N):
            if signed:
                s, t = a, b
            else:
                s, t = N - a, N - b
            out[a, b] = prefix[s + length, t + length] - prefix[s, t]
    return out
