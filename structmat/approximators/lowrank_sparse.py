"""Low rank plus sparse under a parameter (or byte) budget: alternating projections with the split searched.

For a rank ``r`` and a number of non-zeros ``k`` the fit alternates the two projections of GoDec (Zhou & Tao,
ICML 2011, Algorithm 1) and OATS (Zhang & Papyan, ICLR 2025, Algorithm 1):

.. math::

    L_{t+1} = \\operatorname{rank}_r(W - S_t), \\qquad S_{t+1} = \\operatorname{top}_k(W - L_{t+1}),

where ``top_k`` keeps the ``k`` largest entries in magnitude. It starts from ``S_0 = 0``, so its first ``L`` is
the truncated SVD of ``W`` and its first iterate is never worse than the best rank-``r`` matrix. The rank step
is one warm-started subspace iteration (the column space of ``(W − S) V_t``, Halko, Martinsson & Tropp 2011,
Algorithm 4.4 with one power step), which costs three products with ``W`` instead of an SVD and still never
increases the error: the best matrix with that column space is at least as good as ``(W − S) V_t V_tᵀ``, which is
at least as good as ``L_t``. Both steps are exact projections given the other part, so the error never rises.

The split of the budget between ``r (m + n)`` low-rank numbers and ``k`` non-zeros is searched: every rank when
there are few, else a geometric grid of ranks with a short alternation (ranks whose first iterate is far behind
get none), a refinement around the best, and a full alternation for the two best. Rank 0 (plain magnitude sparsity)
and the largest rank (low rank plus what is left) are always candidates, so the result is never worse than
``fit_sparse`` or ``fit_lowrank`` at the same parameter count.

**Work limit.** A step at rank r costs about ``m n (3 r + SELECTION_COST)`` multiply-add equivalents (three
products with ``W`` and the passes over the ``m n`` residual entries that select the ``k`` largest), so on large
matrices the alternation, not the SVD, dominates: a 4096×4096 fit took 3–14 CPU minutes running every candidate to
``tol``. ``max_work`` caps the steps' total (default ``DEFAULT_MAX_WORK``: with the SVD, a 4096×4096 fit at share
0.25 then takes under 30 CPU seconds on one busy core of the development machine): the search may spend
``SEARCH_WORK_SHARE`` of it, the continuation of the two best splits the rest. Up to 1024×1024 it changes no
result measured (Gaussian and power-law spectra at share 0.25 give the same errors to the last digit, though the
power-law search is trimmed by two candidates' steps); larger matrices take fewer steps in the search and in the
continuation (the error change is measured in the fit-quality benchmarks). The limit is counted from the sizes,
never measured, so the result stays deterministic: no random numbers, no clocks.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight
from structmat.approximators._selection import top_k_mask
from structmat.approximators.budget_units import limit_description, resolve_limit
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.lowrank import truncated_svd
from structmat.matrices.lowrank_sparse import LowRankSparse
from structmat.approximators.sparse_least_squares import LEAST_SQUARES_RIDGE

__all__ = ["fit_lowrank_sparse", "split_for_rank"]

logger = logging.getLogger(__name__)

#: Every rank is a candidate up to this many; beyond, a geometric grid (0 and ``r_max / 2^j``, ``j < GRID_HALVINGS``)
#: and a refinement between the best grid rank's neighbours. Trained weights want small ranks (4-54 of up to 280 on
#: EfficientNet-Lite0's classifier), where the geometric grid is fine and the steps are cheap.
FULL_SCAN_RANKS = 24
GRID_HALVINGS = 8
#: A grid rank whose first iterate (truncated SVD plus the largest residual entries) is this much worse than the
#: best alternation so far gets no steps: steps gained at most 9 % on the classifier, and a step costs ``3 r m n``.
SKIP_RATIO = 1.25
#: Alternation steps for the candidates of the search, and at most for the chosen split.
SEARCH_ITERATIONS = 6
MAX_ITERATIONS = 100
#: The alternation stops when one step lowers the error by less than this share of it.
TOLERANCE = 1e-4
#: Cost of a step's selection and copies, per entry of W, in multiply-adds of the products (measured: a top-k
#: selection of a 4096×4096 residual with its copies takes as long as a product with 400 columns).
SELECTION_COST = 400
#: Default limit of the steps' total work (multiply-add equivalents, module docstring).
DEFAULT_MAX_WORK = 1.5e11
#: The share of ``max_work`` the split search may use; the continuation of the two best splits gets the rest.
SEARCH_WORK_SHARE = 0.5
#: With ``inputs``, the ranks tried besides 0 and the plain fit's: these shares of the largest rank the budget holds.
OUTPUT_RANK_SHARES = (1 / 16, 1 / 8, 1 / 4)


def split_for_rank(shape, limit: int, rank: int, unit: str = "params") -> int:
    """Non-zeros of ``S`` left by a rank-``rank`` part under ``limit`` (parameters, or 4-byte words with
    ``unit="bytes"``: each non-zero then costs a value and a column index, and ``S`` adds ``m + 1`` row
    pointers). Negative when the rank alone exceeds the limit; capped at ``m · n``."""
    m, n = shape
    left = limit - rank * (m + n)
    if unit == "bytes":
        left = (left - (m + 1)) // 2 if left > m + 1 else min(left, 0)
    return min(left, m * n)


class _Split:
    """The alternation at one (rank, k), kept so that a candidate can be continued later.

    The low-rank part is kept as factors ``L = Q B`` (``Q`` m × r, ``B`` r × n) and the sparse part as sorted flat
    indices and values; the dense ``m × n`` arrays of a step live in ``scratch``, two buffers that every split of
    one fit shares (splits run one at a time). Large fits are dominated by memory traffic, and on virtual machines
    that hand freed memory back to the host, by touching fresh pages: at 4096×4096 a fresh dense array per product
    cost more than the products.
    """

    def __init__(self, W, W_norm2, rank, k, start, scratch):
        self.W, self.W_norm2, self.rank, self.k = W, W_norm2, rank, k
        self.scratch = scratch
        self.iterations = 0
        self.errors = []
        if rank == 0:
            self.Q = self.B = self.V = None
            np.copyto(scratch[0], W)
            self._sparse_step()
            self.converged = True
            return
        U, s, Vt = start
        self.Q, self.B = U[:, :rank] * s[:rank], Vt[:rank]
        self.V = Vt[:rank].T
        self._residual(self.Q, self.B)
        self._sparse_step()
        self.converged = k == 0

    def _residual(self, Q, B) -> None:
        """``scratch[0] = W − Q B``."""
        R = self.scratch[0]
        np.matmul(Q, B, out=R)
        np.subtract(self.W, R, out=R)

    def _sparse_step(self):
        """``S = top_k(R)`` of the residual ``R`` in ``scratch[0]`` (flat indices sorted) and the error ``‖R − S‖``;
        overwrites both scratch buffers."""
        R, magnitude = self.scratch
        flat = R.ravel()
        if self.k <= 0:
            self.idx = np.zeros(0, dtype=np.int64)
        elif self.k >= flat.size:
            self.idx = np.arange(flat.size)
        else:
            self.idx = np.flatnonzero(top_k_mask(np.abs(flat, out=magnitude.ravel()), self.k))
        self.values = flat[self.idx]
        flat[self.idx] = 0.0  # the residual, computed directly: ‖R‖² − ‖S‖² cancels below ~1e-8
        self.errors.append(math.sqrt(float(np.vdot(flat, flat)) / self.W_norm2) if self.W_norm2 > 0 else 0.0)

    @property
    def error(self) -> float:
        return self.errors[-1]

    def run(self, iterations: int, tol: float) -> None:
        """Up to ``iterations`` more alternation steps; stops early once a step gains less than ``tol``."""
        for _ in range(iterations):
            if self.converged:
                return
            A = self.scratch[0]
            np.copyto(A, self.W)
            A.ravel()[self.idx] -= self.values
            Q, _ = scipy.linalg.qr(A @ self.V, mode="economic", check_finite=False)
            B = Q.T @ A
            V, _ = scipy.linalg.qr(B.T, mode="economic", check_finite=False)
            previous = self.error
            saved = (self.Q, self.B, self.V, self.idx, self.values)
            self.Q, self.B, self.V = Q, B, V
            self._residual(Q, B)
            self._sparse_step()
            self.iterations += 1
            if self.error > previous:  # rounding only: the step is a projection; keep the better state
                self.Q, self.B, self.V, self.idx, self.values = saved
                self.errors[-1] = previous
                self.converged = True
            elif previous - self.error <= tol * previous:
                self.converged = True

    def matrix(self) -> LowRankSparse:
        m, n = self.W.shape
        rows, cols = np.divmod(self.idx, n)
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
        if self.rank:
            U, s, Vt = scipy.linalg.svd(self.Q @ (self.B @ self.V), full_matrices=False)  # L = (L V) Vᵀ
            root = np.sqrt(s)
            Uf, Vf = U * root, (self.V @ Vt.T) * root
        else:
            Uf, Vf = np.zeros((m, 0)), np.zeros((n, 0))
        return LowRankSparse.from_csr(Uf, Vf, indptr, cols, self.values)


def _candidate_ranks(r_max: int) -> list[int]:
    if r_max + 1 <= FULL_SCAN_RANKS:
        return list(range(r_max + 1))
    return sorted({0} | {round(r_max / 2**j) for j in range(GRID_HALVINGS)})


@guarded_fit
def fit_lowrank_sparse(W, budget, *, inputs=None, ridge: float = LEAST_SQUARES_RIDGE, rank=None,
                       unit: str = "params", max_iter: int = MAX_ITERATIONS, tol: float = TOLERANCE,
                       max_work: float | None = DEFAULT_MAX_WORK, progress: bool = False) -> LowRankSparse:
    """Fit ``W ≈ U Vᵀ + S`` with at most ``budget`` parameters, choosing the rank/non-zero split.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameters (``r (m + n) + nnz``), or a share of ``m · n``. With ``unit="bytes"`` the budget limits
        ``nbytes / 4`` instead: an int counts bytes, a float is a share of the dense float32 bytes ``4 m n``.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the layer's outputs on these inputs, ``‖(W − M) Xᵀ‖_F``, instead of ``‖W − M‖_F``: whitened rank steps
        and data-aware sparse steps (sequential optimal-brain-surgeon pruning, least-squares values; see
        :func:`~structmat.approximators._lowrank_sparse_outputs.fit_to_outputs`), the plain fit kept as a
        candidate, so the output error on these inputs is never worse than the plain fit's.
    ridge : float
        Relative regularisation of the inputs' second moment in the fit to outputs, ``λ = ridge · tr(C) / n``
        (default 1e-3, see :data:`~structmat.approximators.sparse_least_squares.LEAST_SQUARES_RIDGE`).
    rank : int >= 0, optional
        Fix the rank instead of searching the split.
    unit : {"params", "bytes"}
        What the budget counts (see ``budget``). Either way the result has ``nparams <= budget`` in parameters.
    max_iter : int
        Alternation steps at the chosen split (fewer when it converges).
    tol : float
        Stop when a step lowers the relative error by less than ``tol`` times itself.
    max_work : float > 0 or None
        Limit of the alternation steps' total work in multiply-add equivalents (module docstring; default
        ``DEFAULT_MAX_WORK``, which binds above about 1024×1024); None runs every step ``max_iter`` and ``tol``
        allow (minutes at 4096×4096).
    progress : bool
        Show a tqdm bar over the alternation steps (a fit of a 4096×4096 matrix takes minutes).

    Returns
    -------
    LowRankSparse
        float64, the singular values of ``U Vᵀ`` split evenly between ``U`` and ``V``.

    Raises
    ------
    ValueError
        bad ``W`` or budget, a ``rank`` the budget cannot hold, or a byte budget below one stored value.

    Notes
    -----
    The alternation is GoDec's (Zhou & Tao 2011, Algorithm 1) with a warm-started subspace iteration as its
    rank step; OATS (Zhang & Papyan 2025, Algorithm 1) runs the same loop on weights scaled by the inputs.
    Each step costs about ``3 r m n`` multiply-adds plus a selection of ``k`` of the ``m n`` residual entries.

    References
    ----------
    T. Zhou, D. Tao, "GoDec: Randomized low-rank & sparse matrix decomposition in noisy case", ICML 2011.
    S. Zhang, V. Papyan, "OATS: Outlier-aware pruning through sparse and low rank decomposition", ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> from structmat.matrices.lowrank_sparse import LowRankSparse
    >>> M = LowRankSparse.random((16, 12), rank=2, density=0.05, seed=0)
    >>> fitted = fit_lowrank_sparse(M.to_dense(), M.nparams)
    >>> fitted.rank, fitted.nnz, bool(np.allclose(fitted.to_dense(), M.to_dense()))
    (2, 10, True)
    """
    W = check_weight(W)
    m, n = W.shape
    limit = resolve_limit(budget, W.shape, unit)
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a float >= 0; got {tol!r}")
    if max_work is not None and (isinstance(max_work, bool) or not isinstance(max_work, (int, float))
                                 or not max_work > 0):
        raise ValueError(f"max_work must be a number > 0 or None; got {max_work!r}")
    r_max = min(limit // (m + n), m, n)
    if rank is not None:
        rank = check_positive_int(rank, "rank", minimum=0)
        if rank > min(m, n) or split_for_rank(W.shape, limit, rank, unit) < (0 if rank else 1):
            raise ValueError(f"budget={budget} ({limit_description(limit, unit)}) cannot hold rank {rank} for shape "
                             f"({m}, {n}): the rank part alone needs {rank * (m + n)} parameters and the rank is at "
                             f"most {min(m, n)}")
        ranks = [rank]
    else:
        ranks = [r for r in _candidate_ranks(r_max) if split_for_rank(W.shape, limit, r, unit) >= (0 if r else 1)]
    if not ranks:
        raise ValueError(
            f"budget={budget} allows {limit_description(limit, unit)}, below the smallest low-rank plus sparse "
            f"matrix for shape ({m}, {n}): " + ("1 parameter" if unit == "params" else
                                                 f"{limit_description(m + 3, unit)} (one value, its column index "
                                                 f"and {m + 1} row pointers)"))
    with tqdm(desc="fit_lowrank_sparse", unit="step", disable=not progress) as bar:
        plain = _fit_plain(W, limit, unit, ranks, search=rank is None and r_max + 1 > FULL_SCAN_RANKS,
                           max_iter=max_iter, tol=tol, max_work=max_work, bar=bar)
    if inputs is None:
        return plain
    from structmat.approximators._lowrank_sparse_outputs import fit_to_outputs

    stats = as_statistics(inputs, n)
    aware_ranks = ranks if rank is not None else sorted({0, plain.rank} | {
        round(r_max * f) for f in OUTPUT_RANK_SHARES if split_for_rank(W.shape, limit, round(r_max * f), unit) >= 1})
    return fit_to_outputs(W, limit, unit, stats, ridge, aware_ranks, plain)


def _fit_plain(W, limit, unit, ranks, *, search, max_iter, tol, max_work, bar) -> LowRankSparse:
    """The plain fit over candidate ``ranks``: all of them, or (``search``) a grid refined around its best; the
    steps stop at ``max_work`` (module docstring)."""
    W_norm2 = float(np.vdot(W, W))
    top = max(ranks)
    start = truncated_svd(W, top, method="auto", seed=0) if top else None
    splits = {}
    scratch = (np.empty_like(W), np.empty_like(W))
    budget = {"used": 0.0, "limit": np.inf if max_work is None else SEARCH_WORK_SHARE * max_work}

    def step_work(r):
        return W.size * (3.0 * r + SELECTION_COST)

    def evaluate(r, iterations, required=True):
        if r not in splits:  # a first iterate costs one product and a selection
            if not required and budget["used"] + W.size * (r + SELECTION_COST) > budget["limit"]:
                return np.inf  # a refinement candidate the search's work cannot afford
            splits[r] = _Split(W, W_norm2, r, split_for_rank(W.shape, limit, r, unit), start,
                               scratch)
            budget["used"] += W.size * (r + SELECTION_COST)
        done = splits[r].iterations
        affordable = max(int((budget["limit"] - budget["used"]) // step_work(r)), 0) if budget["limit"] < np.inf \
            else iterations
        splits[r].run(min(iterations - done, affordable), tol)
        budget["used"] += step_work(r) * (splits[r].iterations - done)
        bar.update(splits[r].iterations - done)
        bar.set_postfix(rank=r, error=f"{splits[r].error:.4g}", refresh=False)
        return splits[r].error

    short = min(SEARCH_ITERATIONS, max_iter)
    if search:
        errors = []
        for r in ranks:  # increasing: the cheap ranks set the bar for the costly ones
            first = evaluate(r, 0)
            best_so_far = min(errors, default=np.inf)
            errors.append(first if first > SKIP_RATIO * best_so_far else evaluate(r, short))
        best = int(np.argmin(errors))
        lo, hi = ranks[max(best - 1, 0)], ranks[min(best + 1, len(ranks) - 1)]
        while hi - lo > 2:  # ternary search for the best rank between the grid neighbours
            a, b = lo + (hi - lo) // 3, hi - (hi - lo) // 3
            error_a, error_b = evaluate(a, short, required=False), evaluate(b, short, required=False)
            if error_a == error_b == np.inf:
                break
            if error_a <= error_b:
                hi = b
            else:
                lo = a
        for r in range(lo, hi + 1):
            evaluate(r, short, required=False)
    else:
        for r in ranks:
            evaluate(r, short)
    order = sorted(splits, key=lambda r: (splits[r].error, r))
    # continue the most promising splits: the short alternation may rank close candidates wrongly. Under a work
    # limit each gets half of what the search left (the second also what the first did not use)
    for i, r in enumerate(order[:2]):
        if max_work is not None:
            budget["limit"] = budget["used"] + max(max_work - budget["used"], 0.0) / (len(order[:2]) - i)
        evaluate(r, max_iter)
    best = min(splits.values(), key=lambda s: (s.error, s.rank))
    logger.debug("fit_lowrank_sparse: shape=%s limit=%d unit=%s rank=%d nnz=%d error=%.6g after %d steps "
                 "(work %.3g of %s); candidates %s", W.shape, limit, unit, best.rank, best.k, best.error,
                 best.iterations, budget["used"], max_work, {r: round(s.error, 6) for r, s in sorted(splits.items())})
    return best.matrix()
