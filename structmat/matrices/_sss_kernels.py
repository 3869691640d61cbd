"""Numba kernels of the SSS family: the two sweeps of ``M @ X`` and ``M.T @ Y``, and a direct ``to_dense``.

All kernels take the flat layout documented in :mod:`structmat.matrices.sss` (stage sizes ``m_sizes``,
``n_sizes``; causal dims ``d`` and anticausal dims ``e``, each of length K+1 with zero ends; one flat row-major
array per generator kind) and compute the per-stage offsets themselves. Serial; the column batch of ``X`` is
the innermost, contiguous loop of every small product. Cost: ``nparams`` multiply-adds per column.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from structmat.matrices._block_kernels import acc_block, acc_block_t

__all__ = ["sss_offsets", "sss_matmat", "sss_rmatmat", "sss_to_dense"]


@njit(cache=True)
def sss_offsets(m_sizes, n_sizes, d, e):
    """Offsets (K+1 each, last = total) of rows, cols and of A, B, C, D, E, F, G in their flat arrays."""
    K = m_sizes.shape[0]
    off = np.zeros((9, K + 1), dtype=np.int64)
    for k in range(K):
        m, n = m_sizes[k], n_sizes[k]
        off[0, k + 1] = off[0, k] + m
        off[1, k + 1] = off[1, k] + n
        off[2, k + 1] = off[2, k] + d[k + 1] * d[k]      # A_k: d[k+1] x d[k]
        off[3, k + 1] = off[3, k] + d[k + 1] * n         # B_k: d[k+1] x n_k
        off[4, k + 1] = off[4, k] + m * d[k]             # C_k: m_k x d[k]
        off[5, k + 1] = off[5, k] + m * n                # D_k: m_k x n_k
        off[6, k + 1] = off[6, k] + e[k] * e[k + 1]      # E_k: e[k] x e[k+1]
        off[7, k + 1] = off[7, k] + e[k] * n             # F_k: e[k] x n_k
        off[8, k + 1] = off[8, k] + m * e[k + 1]         # G_k: m_k x e[k+1]
    return off


@njit(cache=True)
def sss_matmat(m_sizes, n_sizes, d, e, A, B, C, D, E, F, G, X, Y):
    """Y (m, b) = M @ X (n, b): forward sweep (causal part and D), then backward sweep (anticausal). Y zeroed."""
    K = m_sizes.shape[0]
    off = sss_offsets(m_sizes, n_sizes, d, e)
    b = X.shape[1]
    width = max(d.max(), e.max(), 1)
    cur = np.zeros((width, b), dtype=Y.dtype)
    nxt = np.zeros((width, b), dtype=Y.dtype)
    for k in range(K):  # causal: y_k = C_k x + D_k u_k;  x <- A_k x + B_k u_k
        r0, c0 = off[0, k], off[1, k]
        acc_block(C, off[4, k], m_sizes[k], d[k], cur, 0, Y, r0)
        acc_block(D, off[5, k], m_sizes[k], n_sizes[k], X, c0, Y, r0)
        nxt[: d[k + 1]] = 0.0
        acc_block(A, off[2, k], d[k + 1], d[k], cur, 0, nxt, 0)
        acc_block(B, off[3, k], d[k + 1], n_sizes[k], X, c0, nxt, 0)
        cur, nxt = nxt, cur
    for k in range(K - 1, -1, -1):  # anticausal: y_k += G_k z;  z <- E_k z + F_k u_k
        r0, c0 = off[0, k], off[1, k]
        acc_block(G, off[8, k], m_sizes[k], e[k + 1], cur, 0, Y, r0)
        nxt[: e[k]] = 0.0
        acc_block(E, off[6, k], e[k], e[k + 1], cur, 0, nxt, 0)
        acc_block(F, off[7, k], e[k], n_sizes[k], X, c0, nxt, 0)
        cur, nxt = nxt, cur
    return Y


@njit(cache=True)
def sss_rmatmat(m_sizes, n_sizes, d, e, A, B, C, D, E, F, G, V, Z):
    """Z (n, b) = Mᵀ @ V (m, b): the causal part runs backward, the anticausal part forward. Z zeroed."""
    K = m_sizes.shape[0]
    off = sss_offsets(m_sizes, n_sizes, d, e)
    b = V.shape[1]
    width = max(d.max(), e.max(), 1)
    cur = np.zeros((width, b), dtype=Z.dtype)
    nxt = np.zeros((width, b), dtype=Z.dtype)
    for k in range(K - 1, -1, -1):  # out_k = B_kᵀ p + D_kᵀ v_k;  p <- C_kᵀ v_k + A_kᵀ p
        r0, c0 = off[0, k], off[1, k]
        acc_block_t(B, off[3, k], d[k + 1], n_sizes[k], cur, 0, Z, c0)
        acc_block_t(D, off[5, k], m_sizes[k], n_sizes[k], V, r0, Z, c0)
        nxt[: d[k]] = 0.0
        acc_block_t(C, off[4, k], m_sizes[k], d[k], V, r0, nxt, 0)
        acc_block_t(A, off[2, k], d[k + 1], d[k], cur, 0, nxt, 0)
        cur, nxt = nxt, cur
    cur[:] = 0.0
    for k in range(K):  # out_k += F_kᵀ q;  q <- G_kᵀ v_k + E_kᵀ q
        r0, c0 = off[0, k], off[1, k]
        acc_block_t(F, off[7, k], e[k], n_sizes[k], cur, 0, Z, c0)
        nxt[: e[k + 1]] = 0.0
        acc_block_t(G, off[8, k], m_sizes[k], e[k + 1], V, r0, nxt, 0)
        acc_block_t(E, off[6, k], e[k], e[k + 1], cur, 0, nxt, 0)
        cur, nxt = nxt, cur
    return Z


@njit(cache=True)
def sss_to_dense(m_sizes, n_sizes, d, e, A, B, C, D, E, F, G, out):
    """out (m, n), zeroed: D blocks copied; block (i, j) = C_i A_{i-1}…A_{j+1} B_j below, G_i E_{i+1}…E_{j-1} F_j above."""
    K = m_sizes.shape[0]
    off = sss_offsets(m_sizes, n_sizes, d, e)
    width = max(d.max(), e.max(), 1)
    nmax = max(n_sizes.max(), 1)
    cur = np.zeros((width, nmax), dtype=out.dtype)
    nxt = np.zeros((width, nmax), dtype=out.dtype)
    for j in range(K):
        r0, c0, nj = off[0, j], off[1, j], n_sizes[j]
        for i in range(m_sizes[j]):
            for t in range(nj):
                out[r0 + i, c0 + t] = D[off[5, j] + i * nj + t]
        if nj == 0:
            continue
        # causal: T = B_j, then for i > j: block = C_i T, T <- A_i T
        for i in range(d[j + 1]):
            for t in range(nj):
                cur[i, t] = B[off[3, j] + i * nj + t]
        for i in range(j + 1, K):
            mi, di = m_sizes[i], d[i]
            for p in range(mi):
                for q in range(di):
                    a = C[off[4, i] + p * di + q]
                    for t in range(nj):
                        out[off[0, i] + p, c0 + t] += a * cur[q, t]
            nxt[: d[i + 1], :nj] = 0.0
            for p in range(d[i + 1]):
                for q in range(di):
                    a = A[off[2, i] + p * di + q]
                    for t in range(nj):
                        nxt[p, t] += a * cur[q, t]
            cur, nxt = nxt, cur
        # anticausal: T = F_j, then for i < j (descending): block = G_i T, T <- E_i T
        for i in range(e[j]):
            for t in range(nj):
                cur[i, t] = F[off[7, j] + i * nj + t]
        for i in range(j - 1, -1, -1):
            mi, ei = m_sizes[i], e[i + 1]
            for p in range(mi):
                for q in range(ei):
                    a = G[off[8, i] + p * ei + q]
                    for t in range(nj):
                        out[off[0, i] + p, c0 + t] += a * cur[q, t]
            nxt[: e[i], :nj] = 0.0
            for p in range(e[i]):
                for q in range(ei):
                    a = E[off[6, i] + p * ei + q]
                    for t in range(nj):
                        nxt[p, t] += a * cur[q, t]
            cur, nxt = nxt, cur
    return out
