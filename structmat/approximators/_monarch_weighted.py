"""Monarch fitted to a layer's outputs: whitened block starts, then alternating weighted least squares.

The objective ``tr((W − M) C (W − M)ᵀ)`` (``C`` the regularised input second moment) separates over the output
groups ``j``: the rows ``l·J + j`` of ``M`` are ``L_j S_j``, where ``S_j`` (``K t × n``) is block-diagonal with the
blocks ``R_k[j t : (j+1) t, :]``. So (structmat's note ``data-aware.md``; the Monarch parametrisation of Dao et al.,
ICML 2022, eq. (1)):

- **L-step**, exact for every group at once: ``L_j = W_j C S_jᵀ (S_j C S_jᵀ)⁻¹`` (weighted least squares), and the
  objective after it is ``tr(W C Wᵀ) − Σ_j tr(L_j S_j C W_jᵀ)``;
- **R-step**, block coordinate descent over ``k`` within each group (the blocks of ``S_j`` belong to group ``j``
  only): with ``P_j = (W_j − L_j S_j) C`` and the others fixed, block ``k`` is
  ``S_{jk} = (L_{jk}ᵀ L_{jk})⁻¹ L_{jk}ᵀ (P_j + L_{jk} S_{jk} C_{kk})_{:, k} C_{kk}⁻¹``, an exact minimiser; ``P_j``
  is then updated by the rank-``t`` change. A sweep costs about ``n`` times ``nparams`` multiply-adds.

Every step minimises exactly over its block, so the objective never increases (alternating least squares;
Bertsekas, *Nonlinear Programming*, 2nd ed., 1999, §2.7, block coordinate descent). Starts: each block's whitened
truncated SVD under the block-diagonal part of ``C`` (``[B_{jk} T_k]_t T_k⁻¹``, ``T_k T_kᵀ = C_{kk}``: exact when
``K = 1``). Every pair of block counts is scored by its start followed by one L-step, which ranks the pairs as
their converged errors do on the measured layers; the pairs are searched coarse to fine
(:func:`~structmat.approximators.monarch.search_pairs`) and the best ``REFINED_PAIRS`` are refined. The plain Frobenius fit
and the whitened low-rank optimum (``K = J = 1``) are candidates too, so the result is never worse than either on
the fitting inputs.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
import scipy.linalg

from structmat.approximators._weighted import WeightedProblem, cholesky_factor
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators.monarch import _search, search_pairs
from structmat.matrices.monarch import Monarch

__all__ = ["fit_monarch_to_inputs", "DEFAULT_ITERATIONS", "REFINED_PAIRS"]

logger = logging.getLogger(__name__)

#: Alternating least-squares iterations on each refined pair (each one L-step and one R-step sweep).
DEFAULT_ITERATIONS = 8
#: How many of the best-scored block-count pairs are refined.
REFINED_PAIRS = 2
#: Stop refining a pair when an iteration lowers its squared error by less than this share.
TOLERANCE = 1e-4


def _solve_spd(G: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``G⁻¹ B`` for a symmetric positive semi-definite ``G``: Cholesky, or the least-squares solution if singular."""
    try:
        factor = scipy.linalg.cho_factor(G, check_finite=False)
        if np.min(np.abs(np.diag(factor[0]))) ** 2 > 1e-12 * max(float(np.max(np.diag(G))), 1e-300):
            return scipy.linalg.cho_solve(factor, B, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(G, B, rcond=None)[0]


class _Padded:
    """The problem for one ``(K, J)``: ``W`` and ``C`` zero-padded to ``(L_r J) × (K I)`` (padded inputs get the
    weight ``mean diag C`` and no coupling, so their parameters stay exactly zero), with per-block Cholesky factors."""

    def __init__(self, problem: WeightedProblem, WC: np.ndarray, K: int, J: int):
        m, n = problem.W.shape
        self.K, self.J = K, J
        self.I, self.Lr = I, Lr = math.ceil(n / K), math.ceil(m / J)
        N = K * I
        self.C = np.zeros((N, N))
        self.C[:n, :n] = problem.C
        if N > n:
            self.C[n:, n:] = np.eye(N - n) * (np.trace(problem.C) / n)
        self.Cb = self.C.reshape(K, I, N)                                   # rows of block k
        self.Ckk = [np.ascontiguousarray(self.C[k * I:(k + 1) * I, k * I:(k + 1) * I]) for k in range(K)]
        self.T = [cholesky_factor(c) for c in self.Ckk]
        self.Ckk_factor = [(t, True) for t in self.T]                        # cho_solve form
        W = np.zeros((Lr * J, N))
        W[:m, :n] = problem.W
        WCp = np.zeros((Lr * J, N))
        WCp[:m, :n] = WC
        self.Wg = W.reshape(Lr, J, N).transpose(1, 0, 2)                   # (J, Lr, N): group j's rows
        self.WCg = WCp.reshape(Lr, J, N).transpose(1, 0, 2)

    def whitened_blocks(self) -> np.ndarray:
        """``B_{jk} T_k`` for all blocks, shape ``(J, K, L_r, I)``."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        WT = np.matmul(self.Wg.reshape(J * Lr, K, I).transpose(1, 0, 2), np.stack(self.T))   # (K, J Lr, I)
        return WT.reshape(K, J, Lr, I).transpose(1, 0, 2, 3)

    def start(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Each block's whitened truncated SVD under ``C_kk``: Monarch factors ``(R, L)``."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        G = self.whitened_blocks().reshape(J * K, Lr, I)
        if I <= Lr:
            w, V = np.linalg.eigh(np.matmul(G.transpose(0, 2, 1), G))      # right vectors, ascending
            V = V[:, :, ::-1][:, :, :t]
            sigma = np.sqrt(np.clip(w[:, ::-1][:, :t], 0.0, None))
            left = np.matmul(G, V)                                           # U Σ
            right_w = V.transpose(0, 2, 1) * sigma[:, :, None]               # Σ Vᵀ (whitened)
        else:
            w, U = np.linalg.eigh(np.matmul(G, G.transpose(0, 2, 1)))
            U = U[:, :, ::-1][:, :, :t]
            sigma = np.sqrt(np.clip(w[:, ::-1][:, :t], 0.0, None))
            left = U * sigma[:, None, :]
            right_w = np.matmul(U.transpose(0, 2, 1), G)
        scale = np.where(sigma > 0, 1.0 / np.sqrt(np.where(sigma > 0, sigma, 1.0)), 0.0)
        left = left * scale[:, None, :]                                       # U √Σ
        right_w = right_w * scale[:, :, None]                                 # √Σ Vᵀ
        right_w = right_w.reshape(J, K, t, I)
        R = np.empty((K, J * t, I))
        for k in range(K):  # un-whiten: R_k = (√Σ Vᵀ) T_k⁻¹
            Rw = right_w[:, k].reshape(J * t, I)
            R[k] = scipy.linalg.solve_triangular(self.T[k], Rw.T, lower=True, trans="T", check_finite=False).T
        L = left.reshape(J, K, Lr, t).transpose(0, 2, 1, 3).reshape(J, Lr, K * t)
        return R, L

    def l_step(self, R: np.ndarray, t: int):
        """The exact L given R; returns ``(L, captured, SC)`` with ``captured = Σ_j tr(L_j S_j C W_jᵀ)`` and the
        products ``S_j C`` of every group (``(J, K t, N)``), reused by the R-step."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        Rj = R.reshape(K, J, t, I).transpose(1, 0, 2, 3)                     # (J, K, t, I)
        L = np.empty((J, Lr, K * t))
        SC = np.empty((J, K * t, K * I))
        captured = 0.0
        for j in range(J):
            RjT = Rj[j].transpose(0, 2, 1)                                   # (K, I, t)
            sc = np.matmul(Rj[j], self.Cb).reshape(K * t, K * I)            # S_j C
            gram = np.matmul(sc.reshape(K * t, K, I).transpose(1, 0, 2), RjT).transpose(1, 0, 2)
            gram = gram.reshape(K * t, K * t)                                # S_j C S_jᵀ
            rhs = np.matmul(self.WCg[j].reshape(Lr, K, I).transpose(1, 0, 2), RjT).transpose(1, 0, 2)
            rhs = rhs.reshape(Lr, K * t)                                     # W_j C S_jᵀ
            L[j] = _solve_spd((gram + gram.T) / 2, rhs.T).T
            captured += float(np.einsum("ij,ij->", L[j], rhs))
            SC[j] = sc
        return L, captured, SC

    def r_step(self, R: np.ndarray, L: np.ndarray, SC: np.ndarray, t: int) -> None:
        """One block coordinate sweep over every block of R (in place)."""
        K, J, I = self.K, self.J, self.I
        for j in range(J):
            P = self.WCg[j] - L[j] @ SC[j]                                   # (W_j − L_j S_j) C
            for k in range(K):
                Ljk = L[j][:, k * t:(k + 1) * t]
                old = R[k, j * t:(j + 1) * t, :]
                X = P[:, k * I:(k + 1) * I] + Ljk @ (old @ self.Ckk[k])
                Z = _solve_spd(Ljk.T @ Ljk, Ljk.T @ X)
                new = scipy.linalg.cho_solve(self.Ckk_factor[k], Z.T, check_finite=False).T
                P -= Ljk @ ((new - old) @ self.Cb[k])
                R[k, j * t:(j + 1) * t, :] = new


def fit_monarch_to_inputs(W: np.ndarray, budget, pairs, inputs, *, ridge: float, iterations=None,
                          options=None) -> Monarch:
    """The data-aware Monarch fit behind ``fit_monarch(..., inputs=...)`` (see the module docstring).

    ``pairs`` are the ``(K, J, t)`` allowed by the budget and options (:func:`~structmat.approximators.monarch.
    block_pairs`). Returns the candidate with the smallest output error on the inputs.
    """
    m, n = W.shape
    iterations = DEFAULT_ITERATIONS if iterations is None else int(iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be an int >= 0; got {iterations}")
    stats = as_statistics(inputs, n)
    problem = WeightedProblem(W, stats, ridge)
    candidates = [_search(W, pairs)]                                         # the plain fit
    lowrank_pair = next((p for p in pairs if p[:2] == (1, 1)), None)
    if lowrank_pair is not None:
        whitened = fit_lowrank(W, lowrank_pair[2] * (m + n), inputs=stats, ridge=ridge)
        candidates.append(Monarch.from_lowrank(whitened))
    others = [p for p in pairs if p[:2] != (1, 1)]
    if others:
        WC = W @ problem.C
        energy = problem.energy if problem.energy > 0 else 1.0

        @lru_cache(maxsize=2)
        def padded(K, J):
            return _Padded(problem, WC, K, J)

        def score(K, J, t):
            P = padded(K, J)
            R, _ = P.start(t)
            _, captured, _ = P.l_step(R, t)
            return max(energy - captured, 0.0) / energy

        scores = search_pairs(others, score, exhaustive=False)
        ranked = sorted(scores, key=lambda p: (scores[p], p))
        for K, J, t in ranked[:REFINED_PAIRS]:
            P = padded(K, J)
            R, _ = P.start(t)
            history = []
            L, captured, SC = P.l_step(R, t)
            history.append(max(energy - captured, 0.0) / energy)
            for _ in range(iterations if K > 1 else 0):  # with K = 1 the start is already optimal
                P.r_step(R, L, SC, t)
                L, captured, SC = P.l_step(R, t)
                history.append(max(energy - captured, 0.0) / energy)
                if history[-2] - history[-1] <= TOLERANCE * history[-2]:
                    break
            logger.debug("fit_monarch (inputs): K=%d J=%d t=%d output error %s", K, J, t,
                         " -> ".join(f"{math.sqrt(e):.5f}" for e in history))
            candidates.append(Monarch(R, L, shape=(m, n)))
    best, error2 = problem.best(candidates)
    logger.debug("fit_monarch (inputs): %r, output error %.5f", best, math.sqrt(error2))
    return best
