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

The steps use the second moment with at least ``STEP_RIDGE`` (:mod:`structmat.approximators._weighted`), which
keeps the weights bounded. Every step minimises exactly over its block, so that objective never increases
(alternating least squares; Bertsekas, *Nonlinear Programming*, 2nd ed., 1999, §2.7, block coordinate descent).

Starts: each block's whitened truncated SVD under the block-diagonal part of ``C`` (``[B_{jk} T_k]_t T_k⁻¹``,
``T_k T_kᵀ = C_{kk}``: exact when ``K = 1``). A pair of block counts is scored by its start followed by one L-step,
which ranks the pairs as their converged errors do on the measured layers. To keep the search cheap the pairs are
first searched coarse to fine (:func:`~structmat.approximators.monarch.search_pairs`) by their starts' errors under
the block-diagonal part of ``C`` (eigenvalues only), the best ``SHORTLIST`` are scored with the L-step, and the best
``REFINED_PAIRS`` of those are refined. The plain Frobenius fit and the whitened low-rank optimum (``K = J = 1``)
are candidates too, so the result is never worse than either on the fitting inputs.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
import scipy.linalg

from structmat._validation import check_positive_int
from structmat.approximators._weighted import WeightedProblem, cholesky_factor
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators.monarch import _search, search_pairs
from structmat.matrices.monarch import Monarch

__all__ = ["fit_monarch_to_inputs", "DEFAULT_ITERATIONS", "REFINED_PAIRS"]

logger = logging.getLogger(__name__)

#: Alternating least-squares iterations on each refined pair (each one L-step and one R-step sweep).
DEFAULT_ITERATIONS = 8
#: How many of the best-scored block-count pairs are refined (the L-step score ranked the refined errors in the
#: same order on the measured layers, so one is enough).
REFINED_PAIRS = 1
#: Pairs scored by their start and one L-step: the best this many by their starts' block-diagonal errors.
SHORTLIST = 6
#: Blocks with a side of at least this get their top eigenpairs from LAPACK's MRRR solver (``syevr``) one by one
#: instead of a full batched ``eigh`` (about three times faster for the few vectors a start needs).
SUBSET_MIN_SIDE = 256
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


def _top_eigenpairs(grams: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``t`` largest eigenvalues (descending) and their eigenvectors of a stack of symmetric matrices."""
    side = grams.shape[-1]
    if side >= SUBSET_MIN_SIDE and 4 * t <= side:
        pairs = [scipy.linalg.eigh(g, subset_by_index=[side - t, side - 1], driver="evr", check_finite=False)
                 for g in grams]
        return np.stack([w[::-1] for w, _ in pairs]), np.stack([v[:, ::-1] for _, v in pairs])
    w, V = np.linalg.eigh(grams)
    return w[:, ::-1][:, :t], V[:, :, ::-1][:, :, :t]


class _InputBlocks:
    """``C`` zero-padded to ``K I`` inputs (padded inputs get the weight ``mean diag C`` and no coupling, so their
    parameters stay exactly zero), its diagonal blocks' Cholesky factors and ``W · blockdiag(T_k)``: what every
    ``J`` shares for one ``K``."""

    def __init__(self, problem: WeightedProblem, K: int):
        m, n = problem.W.shape
        self.K, self.I = K, I = K, math.ceil(n / K)
        N = K * I
        self.C = np.zeros((N, N))
        self.C[:n, :n] = problem.C
        if N > n:
            self.C[n:, n:] = np.eye(N - n) * (np.trace(problem.C) / n)
        self.Cb = self.C.reshape(K, I, N)                                   # rows of block k
        self.Ckk = [np.ascontiguousarray(self.C[k * I:(k + 1) * I, k * I:(k + 1) * I]) for k in range(K)]
        self.T = [cholesky_factor(c) for c in self.Ckk]
        W = np.zeros((m, N))
        W[:, :n] = problem.W
        WT = np.matmul(W.reshape(m, K, I).transpose(1, 0, 2), np.stack(self.T))   # (K, m, I)
        self.whitened_W = WT.transpose(1, 0, 2).reshape(m, N)


class _Padded:
    """The problem for one ``(K, J)``: ``W`` and ``W C`` zero-padded to ``(L_r J) × (K I)`` and grouped by output
    group, with the shared :class:`_InputBlocks` of ``K``."""

    def __init__(self, problem: WeightedProblem, WC: np.ndarray, blocks: _InputBlocks, J: int):
        m, n = problem.W.shape
        K = blocks.K
        self.K, self.J, self.W_rows = K, J, m
        self.I, self.Lr = I, Lr = blocks.I, math.ceil(m / J)
        N = K * I
        self.blocks = blocks
        self.C, self.Cb, self.Ckk, self.T = blocks.C, blocks.Cb, blocks.Ckk, blocks.T
        self.Ckk_factor = [(t, True) for t in self.T]                        # cho_solve form
        WCp = np.zeros((Lr * J, N))
        WCp[:m, :n] = WC
        self.WCg = WCp.reshape(Lr, J, N).transpose(1, 0, 2)                # (J, Lr, N): group j's rows of W C

    def whitened_blocks(self) -> np.ndarray:
        """``B_{jk} T_k`` for all blocks, shape ``(J, K, L_r, I)``."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        padded = np.zeros((Lr * J, K * I))
        padded[:self.W_rows] = self.blocks.whitened_W
        return padded.reshape(Lr, J, K, I).transpose(1, 2, 0, 3)

    def start_error2(self, t: int) -> float:
        """``1 − Σ_blocks Σ_{i≤t} σ_i² / ‖W T‖²`` for the whitened blocks ``B_{jk} T_k``: the share of the output
        energy under the block-diagonal part of ``C`` that the start leaves (eigenvalues only, no vectors)."""
        J, K, Lr, I = self.J, self.K, self.Lr, self.I
        G = self.whitened_blocks().reshape(J * K, Lr, I)
        gram = np.matmul(G.transpose(0, 2, 1), G) if I <= Lr else np.matmul(G, G.transpose(0, 2, 1))
        eig = np.linalg.eigvalsh(gram)
        total = float(np.einsum("ij,ij->", self.blocks.whitened_W, self.blocks.whitened_W))
        kept = float(np.sum(np.clip(eig[:, eig.shape[1] - t:], 0.0, None)))
        return max(total - kept, 0.0) / total if total > 0 else 0.0

    def start(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """Each block's whitened truncated SVD under ``C_kk``: Monarch factors ``(R, L)``."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        G = self.whitened_blocks().reshape(J * K, Lr, I)
        if I <= Lr:
            w, V = _top_eigenpairs(np.matmul(G.transpose(0, 2, 1), G), t)  # right vectors, descending
            sigma = np.sqrt(np.clip(w, 0.0, None))
            left = np.matmul(G, V)                                           # U Σ
            right_w = V.transpose(0, 2, 1) * sigma[:, :, None]               # Σ Vᵀ (whitened)
        else:
            w, U = _top_eigenpairs(np.matmul(G, G.transpose(0, 2, 1)), t)
            sigma = np.sqrt(np.clip(w, 0.0, None))
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
        products ``S_j C`` of every group (``(J, K t, N)``), reused by the R-step. The products run as a few large
        batched GEMMs: ``S C`` for all groups at once (``K`` products of ``(J t × I)·(I × N)``), then the groups'
        Gram blocks and right-hand sides."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        SC = np.matmul(R, self.Cb).reshape(K, J, t, K * I).transpose(1, 0, 2, 3)   # (J, K, t, N): S_j C
        Rj = R.reshape(K, J, t, I).transpose(1, 0, 3, 2)                              # (J, K, I, t): S_jᵀ blocks
        gram = np.matmul(SC.reshape(J, K * t, K, I).transpose(0, 2, 1, 3), Rj)        # (J, K', K t, t)
        gram = gram.transpose(0, 2, 1, 3).reshape(J, K * t, K * t)                   # S_j C S_jᵀ
        rhs = np.matmul(self.WCg.reshape(J, Lr, K, I).transpose(0, 2, 1, 3), Rj)      # (J, K, Lr, t)
        rhs = rhs.transpose(0, 2, 1, 3).reshape(J, Lr, K * t)                        # W_j C S_jᵀ
        L = np.empty((J, Lr, K * t))
        for j in range(J):
            L[j] = _solve_spd((gram[j] + gram[j].T) / 2, rhs[j].T).T
        captured = float(np.einsum("jlk,jlk->", L, rhs))
        return L, captured, SC.reshape(J, K * t, K * I)

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
    if iterations is None:
        iterations = DEFAULT_ITERATIONS
    iterations = check_positive_int(iterations, "iterations", minimum=0)
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
        energy = float(np.einsum("ij,ij->", WC, W)) or 1.0            # tr(W C Wᵀ) of the steps' C

        @lru_cache(maxsize=2)
        def input_blocks(K):
            return _InputBlocks(problem, K)

        @lru_cache(maxsize=2)
        def padded(K, J):
            return _Padded(problem, WC, input_blocks(K), J)

        def start_score(K, J, t):  # the start's error under the block-diagonal part of C, relative to it
            P = padded(K, J)
            return P.start_error2(t)

        def score(K, J, t):  # the start followed by one exact L-step, under the full C
            P = padded(K, J)
            R, _ = P.start(t)
            _, captured, _ = P.l_step(R, t)
            return max(energy - captured, 0.0) / energy

        starts = search_pairs(others, start_score, exhaustive=False)
        shortlist = sorted(starts, key=lambda p: (starts[p], p))[:SHORTLIST]
        scores = {p: score(*p) for p in shortlist}
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
