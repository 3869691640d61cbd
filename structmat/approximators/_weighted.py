"""What the data-aware fits of Monarch, SSS and the hierarchical families share: the weighted problem.

With ``C`` the regularised (and rescaled) input second moment, ``C = L Lᵀ`` (:meth:`InputStatistics.whitening_factor`),
the output objective of ``M`` is ``tr((W − M) C (W − M)ᵀ) = ‖(W − M) L‖²_F`` (structmat's note ``data-aware.md``).
Its rows are independent: ``Σ_i (w_i − m_i) C (w_i − m_i)ᵀ``. So any block of ``M`` that is linear in a group of
parameters, with the other parameters fixed, is fitted by an exact weighted least-squares step, and a low-rank
block ``X`` on columns ``J`` of rows ``I`` has the closed form

.. math:: X^\\star = \\big[\\, P_{I,J}\\, T_J^{-\\top} \\big]_r\\, T_J^{-1}, \\qquad T_J T_J^\\top = C_{JJ},

where ``P = (W − M_{\\text{others}}) C`` and ``[·]_r`` is the rank-``r`` truncated SVD (a generalised
Eckart–Young: with ``Z = X T_J``, the objective is ``‖Z − P_{I,J} T_J^{-⊤}‖²`` plus a constant). For ``J`` the
whole input this is the whitened low-rank optimum (SVD-LLM, Wang et al., ICLR 2025, eq. (3)-(5)).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from structmat.approximators.data_aware import OutputObjective
from structmat.approximators.lowrank import truncated_svd
from structmat.statistics import DEFAULT_RIDGE, InputStatistics

__all__ = ["WeightedProblem", "lowrank_in_weighted_norm", "cholesky_factor", "worth_refining", "STEP_RIDGE",
           "REFINE_MARGIN"]

#: The weighted least-squares steps of the Monarch, SSS and hierarchical fits use ``C + λ' I`` with at least this
#: relative ridge (``λ' = STEP_RIDGE · tr(C) / n``): a step that inverts a diagonal block of ``C`` (``C_kk⁻¹``)
#: otherwise amplifies directions the inputs hardly visit. On the EfficientNet-Lite0 classifier, Monarch's
#: alternating fit at the default objective ridge 1e-6 returned weights up to 13 times larger than ``W`` (relative
#: Frobenius error 2.6 to 4.3); with 1e-3 they stay below ``W``'s largest entry, the training-row output error
#: moves by 0.0002-0.0005 and the held-out output error drops (0.1871 → 0.1842 at share 0.1, 0.0457 → 0.0444 at
#: 0.5). Candidates are still compared on the objective with the caller's ``ridge``.
STEP_RIDGE = 1e-3


#: A start is refined only if its relative output error is at most this multiple of the best candidate's so far:
#: the alternating least-squares refinements measured on the EfficientNet-Lite0 classifier lowered a start's
#: error by 15-45 %, so a start twice as far off cannot catch up, and refining it would cost time for nothing.
REFINE_MARGIN = 2.0


def worth_refining(start_error2: float, best_error2: float) -> bool:
    """Whether a start with squared error ``start_error2`` can plausibly beat ``best_error2`` after refinement."""
    return start_error2 <= REFINE_MARGIN ** 2 * best_error2


def cholesky_factor(C: np.ndarray) -> np.ndarray:
    """Lower-triangular ``T`` with ``T Tᵀ = C`` for a symmetric positive definite block of the regularised ``C``;
    a diagonal shift of ``1e-12 · mean diag`` is added if rounding made the block indefinite."""
    try:
        return scipy.linalg.cholesky(C, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        shift = 1e-12 * max(float(np.trace(C)) / max(C.shape[0], 1), np.finfo(float).tiny)
        return scipy.linalg.cholesky(C + shift * np.eye(C.shape[0]), lower=True, check_finite=False)


def lowrank_in_weighted_norm(G: np.ndarray, T: np.ndarray, rank: int, *, method: str = "svd"):
    """``(U, V)`` with ``U Vᵀ = [G]_r T⁻¹``: the best rank-``r`` block for the whitened target ``G = P T^{-⊤}``.

    ``U`` is ``U_r √Σ_r`` and ``V`` is ``T^{-⊤} V_r √Σ_r`` (balanced). Returns also the squared singular values
    of ``G`` that were computed (the gains of each rank, for allocations).
    """
    rank = int(min(rank, *G.shape))
    if rank <= 0:
        return np.zeros((G.shape[0], 0)), np.zeros((G.shape[1], 0)), np.zeros(0)
    U, s, Vt = truncated_svd(G, rank, method=method)
    root = np.sqrt(s[:rank])
    V = scipy.linalg.solve_triangular(T, Vt[:rank].T * root, lower=True, trans="T", check_finite=False)
    return U[:, :rank] * root, V, s * s


class WeightedProblem:
    """``W`` (float64), the regularised second moment ``C`` of its inputs and the objective that scores fits.

    Parameters
    ----------
    W : ndarray of shape (m, n)
    stats : InputStatistics
    ridge : float
        Relative regularisation, as in :meth:`InputStatistics.regularized_eigh`.

    Attributes
    ----------
    C : ndarray of shape (n, n)
        The second moment the fits' least-squares steps use: ``C / scale² + λ' I`` with the relative ridge
        ``max(ridge, step_ridge)`` (symmetric positive definite).
    energy : float
        ``tr(W (C / scale² + λ I) Wᵀ)`` with the caller's ``ridge``: squared errors are divided by it.
    """

    def __init__(self, W: np.ndarray, stats: InputStatistics, ridge: float = DEFAULT_RIDGE,
                 step_ridge: float = STEP_RIDGE) -> None:
        self.W = W
        self.stats = stats
        self.ridge = ridge
        self.objective = OutputObjective(W, stats, ridge)
        C = stats.regularized_second_moment(ridge)
        n = C.shape[0]
        trace = float(np.trace(stats.normalized_second_moment))
        if step_ridge > ridge and trace > 0:
            C[np.diag_indices(n)] += (step_ridge - ridge) * trace / n
        self.C = C
        self.energy = self.objective.energy

    def error2(self, M) -> float:
        """Relative squared output error of ``M`` (structured or dense) on the regularised objective."""
        return self.objective.error2(M)

    def best(self, candidates, scored=()):
        """The candidate with the smallest output error (the first one on ties) and its squared error.

        ``scored`` holds ``(error2, matrix)`` pairs already scored by :meth:`error2`; they are not densified again
        and rank after ``candidates`` on ties."""
        rows = [(self.error2(M), i, M) for i, M in enumerate(c for c in candidates if c is not None)]
        rows += [(float(e), len(rows) + i, M) for i, (e, M) in enumerate(scored)]
        error2, _, M = min(rows, key=lambda row: row[:2])
        return M, error2

    def permuted(self, col_order) -> tuple[np.ndarray, np.ndarray]:
        """``C`` with rows and columns in ``col_order`` (the input order of a reordered fit), and ``W`` likewise
        (columns only)."""
        if col_order is None:
            return self.W, self.C
        return self.W[:, col_order], self.C[np.ix_(col_order, col_order)]
