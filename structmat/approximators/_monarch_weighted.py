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
``REFINED_PAIRS`` of those are refined; the steps' state of the best scored start is kept and refined, not
recomputed. The plain Frobenius fit and the whitened low-rank optimum (``K = J = 1``) are candidates too, so the
result is never worse than either on the fitting inputs; the latter is built only when its error, known from the
eigenvalues of the whitened weight's Gram matrix, could beat the best of the others.

Speed: the whitened weight ``W · blockdiag(T_k)`` of every ``K`` the search visits is formed once; the start scores
of the coarse-to-fine search are float32 eigenvalues (they rank pairs whose scores differ by far more than float32
rounding); every step that builds a candidate, and the final scoring, is float64.
"""

from __future__ import annotations

import logging
import math

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
#: The whitened low-rank candidate (``K = J = 1``) is built only if its error, known from the eigenvalues of the
#: whitened weight's Gram matrix, is within this relative margin of the best candidate's (rounding of the
#: eigenvalues is about ``1e-13`` of the energy, far below it): otherwise it cannot win.
LOWRANK_BOUND_SLACK = 1e-6
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
    """What every ``J`` shares for one ``K``: the diagonal blocks ``C_kk`` of ``C`` zero-padded to ``K I`` inputs
    (padded inputs get the weight ``mean diag C`` and no coupling, so their parameters stay exactly zero), their
    Cholesky factors ``T_k`` and ``W · blockdiag(T_k)``. The padded ``C`` itself, which only the steps need, is formed
    on first use (a view of ``C`` when ``K`` divides ``n``)."""

    def __init__(self, problem: WeightedProblem, K: int):
        m, n = problem.W.shape
        self.problem = problem
        self.K, self.I = K, I = K, math.ceil(n / K)
        self.N = N = K * I
        pad_weight = np.trace(problem.C) / n
        self.Ckk = []
        for k in range(K):
            lo, hi = k * I, min((k + 1) * I, n)
            if hi - lo == I:
                self.Ckk.append(np.ascontiguousarray(problem.C[lo:hi, lo:hi]))
            else:
                block = np.eye(I) * pad_weight
                block[:hi - lo, :hi - lo] = problem.C[lo:hi, lo:hi]
                self.Ckk.append(block)
        self.T = [cholesky_factor(c) for c in self.Ckk]
        self.whitened_W = np.zeros((m, N))                                   # W blockdiag(T_k), block by block
        for k in range(K):
            lo, hi = k * I, min((k + 1) * I, n)
            if hi > lo:
                np.matmul(problem.W[:, lo:hi], self.T[k][:hi - lo], out=self.whitened_W[:, lo:lo + I])
        self.whitened_energy = float(np.einsum("ij,ij->", self.whitened_W, self.whitened_W))
        self._C = None
        self._search_W = None

    @property
    def C(self) -> np.ndarray:
        """``C`` zero-padded to ``N × N`` (padded inputs weighted ``mean diag C``)."""
        if self._C is None:
            n = self.problem.C.shape[0]
            if self.N == n:
                self._C = self.problem.C
            else:
                self._C = np.zeros((self.N, self.N))
                self._C[:n, :n] = self.problem.C
                self._C[n:, n:] = np.eye(self.N - n) * (np.trace(self.problem.C) / n)
        return self._C

    @property
    def Cb(self) -> np.ndarray:
        """The rows of ``C`` by input block, shape ``(K, I, N)``."""
        return self.C.reshape(self.K, self.I, self.N)

    def start_error2(self, J: int, t: int) -> float:
        """``1 − Σ_blocks Σ_{i≤t} σ_i² / ‖W T‖²`` for the whitened blocks ``B_{jk} T_k`` with ``J`` output groups:
        the share of the output energy under the block-diagonal part of ``C`` that the start leaves. Eigenvalues
        only, in float32 (a search step: the pairs it ranks differ by far more than float32 rounding)."""
        m = self.whitened_W.shape[0]
        K, I, Lr = self.K, self.I, math.ceil(m / J)
        if self._search_W is None:
            self._search_W = self.whitened_W.astype(np.float32)
        G = self._search_W
        if Lr * J > m:
            G = np.zeros((Lr * J, self.N), dtype=np.float32)
            G[:m] = self._search_W
        G = np.ascontiguousarray(G.reshape(Lr, J, K, I).transpose(1, 2, 0, 3)).reshape(J * K, Lr, I)
        gram = np.matmul(G.transpose(0, 2, 1), G) if I <= Lr else np.matmul(G, G.transpose(0, 2, 1))
        eig = np.linalg.eigvalsh(gram)
        total = self.whitened_energy
        kept = float(np.sum(np.clip(eig[:, eig.shape[1] - t:], 0.0, None), dtype=np.float64))
        return max(total - kept, 0.0) / total if total > 0 else 0.0


    def release_search_copy(self) -> None:
        """Free the float32 copy :meth:`start_error2` keeps."""
        self._search_W = None


class _Padded:
    """The problem for one ``(K, J)``: ``W C`` zero-padded to ``(L_r J) × (K I)`` and grouped by output group, with
    the shared :class:`_InputBlocks` of ``K``."""

    def __init__(self, problem: WeightedProblem, WC: np.ndarray, blocks: _InputBlocks, J: int):
        m, n = problem.W.shape
        K = blocks.K
        self.K, self.J, self.W_rows = K, J, m
        self.I, self.Lr = I, Lr = blocks.I, math.ceil(m / J)
        N = K * I
        self.blocks = blocks
        self.C, self.Cb, self.Ckk, self.T = blocks.C, blocks.Cb, blocks.Ckk, blocks.T
        self.Ckk_factor = [(t, True) for t in self.T]                        # cho_solve form
        if Lr * J == m and N == n:
            WCp = WC
        else:
            WCp = np.zeros((Lr * J, N))
            WCp[:m, :n] = WC
        self.WCg = WCp.reshape(Lr, J, N).transpose(1, 0, 2)                # (J, Lr, N): group j's rows of W C

    def whitened_blocks(self) -> np.ndarray:
        """``B_{jk} T_k`` for all blocks, shape ``(J, K, L_r, I)``."""
        K, J, I, Lr = self.K, self.J, self.I, self.Lr
        if Lr * J == self.W_rows:
            padded = self.blocks.whitened_W
        else:
            padded = np.zeros((Lr * J, K * I))
            padded[:self.W_rows] = self.blocks.whitened_W
        return padded.reshape(Lr, J, K, I).transpose(1, 2, 0, 3)

    def start_error2(self, t: int) -> float:
        """:meth:`_InputBlocks.start_error2` for this ``J``."""
        return self.blocks.start_error2(self.J, t)

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
                if k < K - 1:  # the group's last block: P is formed afresh for the next group
                    P -= Ljk @ ((new - old) @ self.Cb[k])
                R[k, j * t:(j + 1) * t, :] = new


def _whitened_lowrank_error2(problem: WeightedProblem, rank: int) -> float:
    """The objective's relative squared error of the whitened low-rank optimum ``[W L]_r L⁻¹`` (the ``K = J = 1``
    candidate), ``Σ_{i>r} σ_i(W L)² / ‖W L‖²``, from the eigenvalues of ``(W L)(W L)ᵀ`` on the smaller side,
    without its vectors."""
    WL = problem.objective.WL
    gram = WL @ WL.T if WL.shape[0] <= WL.shape[1] else WL.T @ WL
    eig = np.linalg.eigvalsh(gram)
    energy = problem.energy
    if energy == 0.0:
        return 0.0
    kept = float(np.sum(np.clip(eig[max(eig.shape[0] - rank, 0):], 0.0, None)))
    return max(energy - kept, 0.0) / energy


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
    others = [p for p in pairs if p[:2] != (1, 1)]
    if others:
        WC = W @ problem.C
        energy = float(np.einsum("ij,ij->", WC, W)) or 1.0            # tr(W C Wᵀ) of the steps' C

        blocks_of = {}

        def input_blocks(K):  # every K the search visits; a few per side, each about the size of W
            if K not in blocks_of:
                blocks_of[K] = _InputBlocks(problem, K)
            return blocks_of[K]

        def start_score(K, J, t):  # the start's error under the block-diagonal part of C, relative to it
            return input_blocks(K).start_error2(J, t)

        def score(K, J, t):  # the start followed by one exact L-step, under the full C
            P = _Padded(problem, WC, input_blocks(K), J)
            R, _ = P.start(t)
            L, captured, SC = P.l_step(R, t)
            return max(energy - captured, 0.0) / energy, (P, R, L, SC)

        starts = search_pairs(others, start_score, exhaustive=False)
        shortlist = sorted(starts, key=lambda p: (starts[p], p))[:SHORTLIST]
        blocks_of = {K: blocks_of[K] for K in sorted({p[0] for p in shortlist})}   # free the others
        for blocks in blocks_of.values():
            blocks.release_search_copy()
        scores, states = {}, {}
        for p in shortlist:  # keep the steps' state of the best REFINED_PAIRS only
            scores[p], state = score(*p)
            states[p] = state
            kept = sorted(states, key=lambda q: (scores[q], q))[:REFINED_PAIRS]
            states = {q: states[q] for q in kept}
        ranked = sorted(scores, key=lambda p: (scores[p], p))
        for K, J, t in ranked[:REFINED_PAIRS]:
            P, R, L, SC = states.pop((K, J, t))
            history = [scores[(K, J, t)]]
            for _ in range(iterations if K > 1 else 0):  # with K = 1 the start is already optimal
                P.r_step(R, L, SC, t)
                L, captured, SC = P.l_step(R, t)
                history.append(max(energy - captured, 0.0) / energy)
                if history[-2] - history[-1] <= TOLERANCE * history[-2]:
                    break
            logger.debug("fit_monarch (inputs): K=%d J=%d t=%d output error %s", K, J, t,
                         " -> ".join(f"{math.sqrt(e):.5f}" for e in history))
            candidates.append(Monarch(R, L, shape=(m, n)))
    scored = [(problem.error2(M), M) for M in candidates]
    if lowrank_pair is not None:
        rank = lowrank_pair[2]
        best_error2 = min(e for e, _ in scored) if scored else math.inf
        if _whitened_lowrank_error2(problem, rank) <= best_error2 * (1 + LOWRANK_BOUND_SLACK):
            whitened = fit_lowrank(W, rank * (m + n), inputs=stats, ridge=ridge)
            scored.insert(1, (problem.error2(whitened), Monarch.from_lowrank(whitened)))
    best, error2 = problem.best((), scored=scored)
    logger.debug("fit_monarch (inputs): %r, output error %.5f", best, math.sqrt(error2))
    return best
