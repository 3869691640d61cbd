"""SSS fitted to a layer's outputs: a whitened realization, then alternating weighted least squares on the generators.

The output objective ``tr((W − M) C (W − M)ᵀ)`` (``C`` the regularised input second moment) is a sum over rows, and
every SSS generator enters ``M`` linearly when the others are fixed (notation of :mod:`structmat.matrices.sss`;
``O_k``/``R_k`` the causal observability and reachability matrices, ``Õ_k``/``Q̃_k`` the anticausal ones):

- row block ``i`` is ``[C_i  D_i  G_i] S_i`` with ``S_i = [R_i | I | Q̃_i]`` on the columns before, of, and after
  stage ``i``: one weighted least-squares problem per row block,
  ``Z_i ← Z_i + P_i S_iᵀ (S_i C S_iᵀ)⁻¹`` with ``P = (W − M) C``;
- ``B_j`` enters the rows after stage ``j`` as ``O_{j+1} B_j`` on the columns of stage ``j``:
  ``B_j ← B_j + (OᵀO)⁻¹ Oᵀ P_{rows, J} C_JJ⁻¹``; ``F_j`` likewise with ``Õ_j`` on the rows before stage ``j``;
- ``A_k`` enters as ``O_{k+1} A_k R_k`` (rows after ``k``, columns before ``k``):
  ``A_k ← A_k + (OᵀO)⁻¹ Oᵀ P_{rows, <} R_kᵀ (R_k C_{<<} R_kᵀ)⁻¹``; ``E_k`` likewise with ``Õ_k E_k Q̃_k``.

Each update is the exact minimiser over its generator (a Kronecker-separable normal equation), and ``P`` is updated
by its rank-limited change, so the objective never increases (alternating least squares; the unweighted version is
:mod:`structmat.approximators._sss_refine`; Bertsekas, *Nonlinear Programming*, 1999, §2.7). The start is the
plain fit's structure identified on ``W · blockdiag(T_k)`` (``T_k T_kᵀ = C_kk``, the stages' column blocks) with
``B_k, D_k, F_k`` un-whitened, which serves the block-diagonal part of ``C`` as the sweep serves the Frobenius norm
(structmat's note ``data-aware.md``). The structure is that of the best staged Frobenius fit (not its
low-rank realization). Candidates: the plain fit, the start and (unless it starts too far behind,
:func:`~structmat.approximators._weighted.worth_refining`) its refinement, and the whitened low-rank optimum as a
two-stage SSS (:meth:`~structmat.matrices.sss.SSS.from_lowrank`).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg

from structmat._validation import check_positive_int
from structmat.approximators._weighted import WeightedProblem, cholesky_factor, worth_refining
from structmat.approximators.lowrank import fit_lowrank, lowrank_error2
from structmat.matrices.permutation import permute
from structmat.matrices.sss import SSS

__all__ = ["fit_sss_to_inputs", "refine_sss_on_outputs", "whitened_realization", "DEFAULT_ITERATIONS"]

logger = logging.getLogger(__name__)

#: Alternating weighted least-squares iterations on the generators.
DEFAULT_ITERATIONS = 3


def _pinv_solve(G: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``G⁺ B`` for a symmetric positive semi-definite ``G`` (Cholesky when well conditioned)."""
    if G.size == 0:
        return np.zeros((G.shape[1], B.shape[1]))
    try:
        factor = scipy.linalg.cho_factor(G, check_finite=False)
        if np.min(np.abs(np.diag(factor[0]))) ** 2 > 1e-12 * max(float(np.max(np.diag(G))), 1e-300):
            return scipy.linalg.cho_solve(factor, B, check_finite=False)
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(G, B, rcond=None)[0]


class _Generators:
    """Mutable copies of an SSS core's stage matrices with the bookkeeping of the updates."""

    def __init__(self, M: SSS, W: np.ndarray, C: np.ndarray):
        self.M, self.W, self.C = M, W, C
        self.K = M.num_stages
        self.ms, self.ns = M.m_sizes, M.n_sizes
        self.r = np.concatenate([[0], np.cumsum(self.ms)]).astype(int)
        self.c = np.concatenate([[0], np.cumsum(self.ns)]).astype(int)
        self.g = {kind: [x.copy() for x in M.stages(kind)] for kind in "ABCDEFG"}
        self.P = (W - M.core_dense()) @ C
        self.blocks = [cholesky_factor(C[a:b, a:b]) if b > a else np.zeros((0, 0))
                       for a, b in zip(self.c[:-1], self.c[1:])]

    # --------------------------------------------------------------- the chains
    def observability(self) -> list:
        """O[k]: rows r_k.. by d_k, O[k] = [C_k; O[k+1] A_k]."""
        A, Cg, K = self.g["A"], self.g["C"], self.K
        O = [None] * (K + 1)
        O[K] = np.zeros((0, 0))
        for k in range(K - 1, -1, -1):
            O[k] = np.concatenate([Cg[k], O[k + 1] @ A[k]], axis=0)
        return O

    def reachability(self) -> list:
        """R[k]: d_k by c_k, R[k+1] = [A_k R[k], B_k]."""
        A, B, K = self.g["A"], self.g["B"], self.K
        R = [np.zeros((0, 0))]
        for k in range(K):
            R.append(np.concatenate([A[k] @ R[k], B[k]], axis=1))
        return R

    def anti_observability(self) -> list:
        """Õ[j]: rows ..r_j by e_j, Õ[j+1] = [Õ[j] E_j; G_j]."""
        E, G, K = self.g["E"], self.g["G"], self.K
        O = [np.zeros((0, 0))]
        for j in range(K):
            O.append(np.concatenate([O[j] @ E[j], G[j]], axis=0))
        return O

    def anti_reachability(self) -> list:
        """Q̃[i]: e_{i+1} by the columns after stage i, Q̃[i] = [F_{i+1}, E_{i+1} Q̃[i+1]]."""
        E, F, K = self.g["E"], self.g["F"], self.K
        Q = [None] * K
        Q[K - 1] = np.zeros((0, 0))
        for i in range(K - 2, -1, -1):
            Q[i] = np.concatenate([F[i + 1], E[i + 1] @ Q[i + 1]], axis=1)
        return Q

    # --------------------------------------------------------------- the updates
    def _cols(self, k):
        return slice(self.c[k], self.c[k + 1])

    def update_inputs(self, kind: str, observe: list, rows_of) -> None:
        """B_j (causal, rows after j) or F_j (anticausal, rows before j): ``X ← X + (OᵀO)⁻¹ Oᵀ P_{rows,J} C_JJ⁻¹``."""
        for j in range(self.K):
            X = self.g[kind][j]
            O = observe(j)
            if X.size == 0 or O.size == 0:
                continue
            rows, J = rows_of(j), self._cols(j)
            step = _pinv_solve(O.T @ O, O.T @ self.P[rows, J])
            delta = scipy.linalg.cho_solve((self.blocks[j], True), step.T, check_finite=False).T
            self.g[kind][j] = X + delta
            self.P[rows] -= O @ (delta @ self.C[J])

    def update_transitions(self) -> None:
        """A_k for k = 1..K-2 in order (R updated as it goes), then E_k likewise."""
        O, R = self.observability(), self.reachability()
        for k in range(1, self.K - 1):
            A = self.g["A"][k]
            if A.size:
                rows, before = slice(self.r[k + 1], None), slice(0, self.c[k])
                V = R[k] @ self.C[before]                                   # R_k C_{<,:}
                H = V[:, before] @ R[k].T
                step = _pinv_solve(O[k + 1].T @ O[k + 1], O[k + 1].T @ (self.P[rows, before] @ R[k].T))
                delta = _pinv_solve(H, step.T).T
                self.g["A"][k] = A + delta
                self.P[rows] -= O[k + 1] @ (delta @ V)
            R[k + 1] = np.concatenate([self.g["A"][k] @ R[k], self.g["B"][k]], axis=1)
        Ou, Qu = self.anti_observability(), self.anti_reachability()
        for k in range(1, self.K - 1):
            E = self.g["E"][k]
            if E.size:
                rows, after = slice(0, self.r[k]), slice(self.c[k + 1], None)
                V = Qu[k] @ self.C[after]
                H = V[:, after] @ Qu[k].T
                step = _pinv_solve(Ou[k].T @ Ou[k], Ou[k].T @ (self.P[rows, after] @ Qu[k].T))
                delta = _pinv_solve(H, step.T).T
                self.g["E"][k] = E + delta
                self.P[rows] -= Ou[k] @ (delta @ V)
            Ou[k + 1] = np.concatenate([Ou[k] @ self.g["E"][k], self.g["G"][k]], axis=0)

    def update_rows(self) -> None:
        """[C_i D_i G_i] for every stage: one weighted least-squares problem per row block."""
        R, Qu = self.reachability(), self.anti_reachability()
        for i in range(self.K):
            if self.ms[i] == 0:
                continue
            d, e, ni = self.g["C"][i].shape[1], self.g["G"][i].shape[1], int(self.ns[i])
            if d + ni + e == 0:
                continue
            before, own, after = slice(0, self.c[i]), self._cols(i), slice(self.c[i + 1], None)
            SC = np.concatenate([R[i] @ self.C[before], self.C[own], Qu[i] @ self.C[after]], axis=0)   # S_i C
            gram = np.concatenate([SC[:, before] @ R[i].T, SC[:, own], SC[:, after] @ Qu[i].T], axis=1)
            rows = slice(self.r[i], self.r[i + 1])
            Pr = self.P[rows]
            rhs = np.concatenate([Pr[:, before] @ R[i].T, Pr[:, own], Pr[:, after] @ Qu[i].T], axis=1)
            delta = _pinv_solve((gram + gram.T) / 2, rhs.T).T                 # (m_i, d + n_i + e)
            self.g["C"][i] = self.g["C"][i] + delta[:, :d]
            self.g["D"][i] = self.g["D"][i] + delta[:, d:d + ni]
            self.g["G"][i] = self.g["G"][i] + delta[:, d + ni:]
            self.P[rows] -= delta @ SC

    def matrix(self) -> SSS:
        g = self.g
        return SSS(g["A"], g["B"], g["C"], g["D"], g["E"], g["F"], g["G"], row_order=self.M.row_order,
                   col_order=self.M.col_order)


def refine_sss_on_outputs(M: SSS, W: np.ndarray, C: np.ndarray, *, iterations: int = DEFAULT_ITERATIONS) -> SSS:
    """``iterations`` sweeps of alternating weighted least squares over all generators of ``M`` (structure kept).

    ``W`` and ``C`` are the weight and the regularised second moment in ``M``'s own order (``W[row_order][:,
    col_order]``, ``C[col_order][:, col_order]``). The objective ``tr((W − S) C (W − S)ᵀ)`` of the core ``S`` never
    increases.
    """
    state = _Generators(M, W, C)
    for _ in range(iterations):
        O = state.observability()
        state.update_inputs("B", lambda j: O[j + 1], lambda j: slice(state.r[j + 1], None))
        Ou = state.anti_observability()
        state.update_inputs("F", lambda j: Ou[j], lambda j: slice(0, state.r[j]))
        state.update_transitions()
        state.update_rows()
    return state.matrix()


def whitened_realization(M: SSS, W: np.ndarray, C: np.ndarray) -> SSS:
    """The structure of ``M`` (partition, realized dims, ordering) identified on ``W · blockdiag(T_k)`` and
    un-whitened (``B_k, D_k, F_k ← · T_k⁻¹``). ``W`` and ``C`` in ``M``'s order."""
    from structmat.approximators.sss import realize_sss

    c = np.concatenate([[0], np.cumsum(M.n_sizes)]).astype(int)
    factors = [cholesky_factor(C[a:b, a:b]) if b > a else np.zeros((0, 0)) for a, b in zip(c[:-1], c[1:])]
    WT = np.empty_like(W)
    for (a, b), T in zip(zip(c[:-1], c[1:]), factors):
        WT[:, a:b] = W[:, a:b] @ T
    S, *_ = realize_sss(WT, M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims)

    def unwhiten(kind):  # the generators acting on stage k's inputs: X ← X T_k⁻¹
        return [np.array(x) if x.size == 0 else
                scipy.linalg.solve_triangular(T, x.T, lower=True, trans="T", check_finite=False).T
                for x, T in zip(S.stages(kind), factors)]

    g = {kind: [np.array(x) for x in S.stages(kind)] for kind in "ACEG"}
    return SSS(g["A"], unwhiten("B"), g["C"], unwhiten("D"), g["E"], unwhiten("F"), g["G"],
               row_order=M.row_order, col_order=M.col_order)


def fit_sss_to_inputs(W: np.ndarray, budget, stats, *, ridge: float, iterations=None, plain_options: dict) -> SSS:
    """The data-aware SSS fit behind ``fit_sss(..., inputs=...)`` (see the module docstring)."""
    from structmat._validation import resolve_budget
    from structmat.approximators.sss import fit_sss_detailed

    if iterations is None:
        iterations = DEFAULT_ITERATIONS
    iterations = check_positive_int(iterations, "weighted_iterations", minimum=0)
    m, n = W.shape
    limit = resolve_budget(budget, W.shape)
    problem = WeightedProblem(W, stats, ridge)
    staged, report = fit_sss_detailed(W, budget, lowrank_candidate=False, **plain_options)
    candidates = [staged]
    free = plain_options.get("num_stages") is None and plain_options.get("stage_sizes") is None
    if free and limit >= m + n:
        lowrank = fit_lowrank(W, limit, seed=plain_options.get("seed"))
        norm2 = float(np.einsum("ij,ij->", W, W))
        if lowrank_error2(W, lowrank, norm2) < report.refined_error ** 2 * norm2:  # the plain fit is low rank
            candidates = [SSS.from_lowrank(lowrank)]
        candidates.append(SSS.from_lowrank(fit_lowrank(W, limit, inputs=stats, ridge=ridge)))
    scored = [(problem.error2(M), M) for M in candidates]
    if staged.num_stages > 1:
        Wp, Cp = problem.permuted(staged.col_order)
        Wp = permute(Wp, staged.row_order, None)
        start = whitened_realization(_with_order(staged, None), Wp, Cp)
        scored.append((problem.error2(_with_order(start, staged)), _with_order(start, staged)))
        if worth_refining(scored[-1][0], min(e for e, _ in scored)):
            refined = _with_order(refine_sss_on_outputs(start, Wp, Cp, iterations=iterations), staged)
            scored.append((problem.error2(refined), refined))
    best, error2 = problem.best([], scored)
    logger.debug("fit_sss (inputs): %r, output error %.5f", best, math.sqrt(error2))
    return best


def _with_order(S: SSS, like: SSS | None) -> SSS:
    """``S``'s core with the row and column orders of ``like`` (None: no orders)."""
    return SSS.from_flat(S.m_sizes, S.n_sizes, S.causal_dims, S.anticausal_dims,
                         **{kind: S.flat(kind) for kind in "ABCDEFG"},
                         row_order=None if like is None else like.row_order,
                         col_order=None if like is None else like.col_order)
