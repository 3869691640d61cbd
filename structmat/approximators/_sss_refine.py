"""Alternating least squares on the causal generators of an SSS matrix: lowers ``‖L - L̂‖_F`` after the sweep.

The strictly block-lower part ``L̂`` of an SSS matrix is linear in each generator kind when the others are fixed:

- block row i (columns before stage i) is ``C_i R_i`` with the reachability matrix ``R_i = [A_{i-1} R_{i-1}, B_{i-1}]``;
- block column j (rows after stage j) is ``O_{j+1} B_j`` with the observability matrix ``O_j = [C_j; O_{j+1} A_j]``;
- the blocks that pass through stage k (rows after k, columns before k) are ``O_{k+1} A_k R_k``.

One iteration solves these three least-squares problems in turn (A for every k, then B, then C), each exactly,
so the error never increases; the last (C) step returns the exact error ``Σ_i ‖L_i − C_i R_i‖²`` for free.
The anticausal part is the same problem on ``Wᵀ``. The sweep's solution is within ``√(K−1)`` of the best
causal part with its dims (note §1.5), which bounds what this can gain. It breaks the input-normal form of the
sweep; products are unaffected.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["refine_causal"]


def _solve_left(F: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``argmin_X ‖Y − F X‖`` through the normal equations ``(FᵀF) X = FᵀY`` (two GEMMs and a small
    Cholesky solve), falling back to the minimum-norm least-squares solution when ``FᵀF`` is singular."""
    if F.shape[1] == 0 or Y.size == 0:
        return np.zeros((F.shape[1], Y.shape[1]))
    gram = F.T @ F
    try:
        factor = scipy.linalg.cho_factor(gram, check_finite=False)
        if np.min(np.abs(np.diag(factor[0]))) ** 2 > 1e-10 * np.max(np.diag(gram)):
            return scipy.linalg.cho_solve(factor, F.T @ Y, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(F, Y, rcond=None)[0]


def _solve_right(Y: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``argmin_X ‖Y − X G‖`` (minimum norm)."""
    return _solve_left(G.T, Y.T).T


def _reachability(A, B, K):
    """R[k] = [A_{k-1} R[k-1], B_{k-1}] (d[k] x c_k), R[0] empty."""
    R = [np.zeros((0, 0))]
    for k in range(1, K):
        prev = A[k - 1] @ R[k - 1] if R[k - 1].size else np.zeros((A[k - 1].shape[0], R[k - 1].shape[1]))
        R.append(np.concatenate([prev, B[k - 1]], axis=1))
    return R


def _observability(A, C, K):
    """O[k] = [C_k; O[k+1] A_k] ((m − r_k) x d[k]); O[K-1] = C_{K-1}."""
    O = [None] * K
    O[K - 1] = C[K - 1]
    for k in range(K - 2, -1, -1):
        O[k] = np.concatenate([C[k], O[k + 1] @ A[k]], axis=0)
    return O


def refine_causal(W: np.ndarray, m_sizes, n_sizes, A, B, C, *, iterations: int, tolerance: float = 1e-4):
    """Run up to ``iterations`` ALS iterations on (A, B, C) (lists of K stage matrices, not modified).

    Returns ``(A, B, C, errors)`` where ``errors[t]`` is the squared error ``‖L − L̂‖²`` after iteration t;
    stops early when an iteration lowers it by less than ``tolerance`` (relative).
    """
    K = len(m_sizes)
    r = np.concatenate([[0], np.cumsum(m_sizes)])
    c = np.concatenate([[0], np.cumsum(n_sizes)])
    A, B, C = [a.copy() for a in A], [b.copy() for b in B], [x.copy() for x in C]
    errors: list[float] = []
    for _ in range(iterations):
        O = _observability(A, C, K)
        R = _reachability(A, B, K)
        for k in range(1, K - 1):  # A_k: blocks W[r_{k+1}:, :c_k] = O_{k+1} A_k R_k
            if A[k].size:
                X = _solve_left(O[k + 1], W[r[k + 1]:, : c[k]])
                A[k] = _solve_right(X, R[k])
                R[k + 1] = np.concatenate([A[k] @ R[k], B[k]], axis=1)
        O = _observability(A, C, K)
        for j in range(K - 1):  # B_j: block column W[r_{j+1}:, c_j:c_{j+1}] = O_{j+1} B_j
            if B[j].size:
                B[j] = _solve_left(O[j + 1], W[r[j + 1]:, c[j]:c[j + 1]])
        R = _reachability(A, B, K)
        error = 0.0
        for i in range(1, K):  # C_i: block row W[r_i:r_{i+1}, :c_i] = C_i R_i, and the exact error
            L_i = W[r[i]:r[i + 1], : c[i]]
            if C[i].size:
                C[i] = _solve_right(L_i, R[i])
                error += float(np.sum((L_i - C[i] @ R[i]) ** 2))
            else:
                error += float(np.sum(L_i ** 2))
        errors.append(error)
        if len(errors) >= 2 and errors[-2] - errors[-1] <= tolerance * errors[-2]:
            break
    return A, B, C, errors
