"""Fit a sequentially semiseparable (SSS) matrix to a dense W under a parameter budget.

``fit_sss`` chooses everything itself: an ordering of rows and columns (stored with the matrix), the number of
stages K, the stage boundaries and the state dims, then identifies the generators with the fast one-sweep
construction (:mod:`structmat.approximators._sss_identify`, cost ``O(m n d)`` instead of one SVD per Hankel block)
and optionally refines them by alternating least squares (:mod:`structmat.approximators._sss_refine`).

Search (every candidate's error comes free from the sweep's error identity, so nothing is rebuilt densely; candidates
are ranked with the fast Gram-matrix sweep, the winner is realized with the exact QR + SVD sweep):

1. **K**: a grid 1, 2, 3, 4, 6, 8, 12, … (powers of two and three times powers of two) plus ``max(m, n)`` is walked
   upward from the smallest K whose diagonal blocks fit, with proportional stage sizes and the largest uniform
   state dim whose exact capped count fits; the walk stops two grid points past the best.
2. **Ordering** (``ordering="auto"``, matrices of up to ``AUTO_ORDERING_MAX_ENTRIES`` = 2^21 entries): the
   spectral and bisection orderings of :mod:`structmat.approximators.ordering` are evaluated at the best K (and
   the winner also at the second best).
   Measured on the EfficientNet-Lite0 matrices at shares 0.1/0.25/0.5, a reordering won in 12 of 12 cases
   (docs/benchmarks/sss.md), so it is on by default; the permutation is stored with the matrix.
3. **State dims**: a greedy per-boundary allocation of causal and anticausal dims by singular value per parameter
   (:func:`~structmat.approximators._sss_identify.greedy_dims`) is tried against the uniform dim.
4. **Boundaries** (``boundaries="search"``): stage widths following two cosine profiles at the same K and budget;
   ``"refine"`` adds a local search moving single row or column cuts.
5. **Refinement**: ``refine_iterations`` of alternating least squares on all generators, kept only if it lowers
   the error (:func:`fit_sss_detailed` reports the error before and after).
6. **Low rank**: the truncated SVD (:func:`~structmat.approximators.lowrank.fit_lowrank`) realized as a two-stage
   SSS with the same count (:meth:`~structmat.matrices.sss.SSS.from_lowrank`: stage sizes ``(0, m)`` and
   ``(n, 0)``, no diagonal blocks) is the last candidate, so the fit is never worse than ``lowrank`` at the same
   budget. It wins on matrices with flat spectra (Gaussians, trained classifiers), where every diagonal block
   costs ``m_k n_k`` parameters for a small share of the energy.

With ``inputs`` the output error is fitted instead (:mod:`structmat.approximators._sss_weighted`).

References: Chandrasekaran, Dewilde, Gu et al., SIAM J. Matrix Anal. Appl. 27(2), 2005; Dewilde & van der Veen,
*Time-Varying Systems and Computations*, 1998; structmat's SSS implementation note, §1.4-1.6.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators._sss_identify import causal_sweep, greedy_dims, max_uniform_dim, uniform_dims
from structmat.approximators._sss_refine import refine_causal
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.lowrank import fit_lowrank, lowrank_error2
from structmat.approximators.ordering import ORDERINGS, order_rows_and_columns
from structmat.matrices.permutation import permute
from structmat.matrices.sss import SSS, sss_nparams
from structmat.matrices.sss import stage_sizes as proportional_sizes
from structmat.statistics import DEFAULT_RIDGE

__all__ = ["fit_sss", "fit_sss_detailed", "SSSFitReport", "realize_sss", "stage_grid"]

logger = logging.getLogger(__name__)

_ALLOCATIONS = ("auto", "uniform", "greedy")
_BOUNDARIES = ("uniform", "search", "refine")
#: Orderings tried by ``ordering="auto"``: the best at the best K of the identity ordering is kept.
AUTO_ORDERINGS = ("none", "spectral", "bisection")
#: ``ordering="auto"`` reorders matrices of up to this many entries (as the hierarchical fits do); beyond, the
#: orderings' eigen-solvers cost about as much as the rest of the fit (a quarter of a 2048² fit) and the measured
#: gains were on trained layers below this size.
AUTO_ORDERING_MAX_ENTRIES = 2**21
#: Stage-width profiles tried by ``boundaries="search"``: (kind, amplitude).
_PROFILES = (("cosine", -0.25), ("cosine", 0.25))


@dataclass(frozen=True)
class SSSFitReport:
    """What :func:`fit_sss_detailed` chose and measured. Errors are relative Frobenius errors ``‖W−M‖/‖W‖``.

    ``sweep_error`` is the error of the one-sweep identification, ``refined_error`` after refinement (equal to
    it when refinement is off or did not help); ``candidates`` lists every (ordering, K, allocation, boundaries,
    nparams, estimated error) tried.
    """

    num_stages: int
    ordering: str
    allocation: str
    boundaries: str
    nparams: int
    budget: int
    sweep_error: float
    refined_error: float
    refined: bool
    refine_iterations: int
    seconds: float
    candidates: list = field(default_factory=list)


def stage_grid(max_stages: int) -> list[int]:
    """K values 1, 2, 3, 4, 6, 8, 12, 16, … (powers of two and three times powers of two) up to
    ``max_stages``, plus ``max_stages`` itself (the finest partition)."""
    grid, power = [1], 1
    while power <= max_stages:
        grid += [k for k in (2 * power, 3 * power) if k <= max_stages]
        power *= 2
    return sorted(set(grid + [max_stages]))


def _profile_sizes(total: int, num_stages: int, kind: str, amplitude: float) -> np.ndarray:
    x = (np.arange(num_stages) + 0.5) / num_stages
    weight = 1 + amplitude * (np.cos(2 * np.pi * x) if kind == "cosine" else 2 * x - 1)
    cuts = np.floor(np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum() * total + 0.5).astype(np.int64)
    cuts[-1] = total
    return np.diff(cuts)


@dataclass
class _Candidate:
    ordering: str
    m_sizes: np.ndarray
    n_sizes: np.ndarray
    dims: tuple  # requested (causal, anticausal)
    allocation: str
    boundaries: str
    error2: float = np.inf
    spectra: tuple | None = None

    @property
    def num_stages(self) -> int:
        return int(self.m_sizes.shape[0])

    def row(self, norm2: float) -> dict:
        return {"ordering": self.ordering, "num_stages": self.num_stages, "allocation": self.allocation,
                "boundaries": self.boundaries,
                "nparams": sss_nparams(self.m_sizes, self.n_sizes, *self.dims),
                "error": float(np.sqrt(self.error2 / norm2)) if norm2 > 0 else 0.0}


class _Search:
    """The budget search on one reordered matrix: evaluates candidates with the fast (Gram) sweep."""

    def __init__(self, W: np.ndarray, budget: int, ordering: str):
        self.W, self.WT = W, np.ascontiguousarray(W.T)
        self.budget, self.ordering = budget, ordering
        self.tried: list[_Candidate] = []

    def evaluate(self, cand: _Candidate, keep_spectra: bool = False) -> _Candidate:
        causal = causal_sweep(self.W, cand.m_sizes, cand.n_sizes, cand.dims[0], exact=False, keep_spectra=keep_spectra)
        anti = causal_sweep(self.WT, cand.n_sizes, cand.m_sizes, cand.dims[1], exact=False, keep_spectra=keep_spectra)
        cand.error2 = causal.error2 + anti.error2
        cand.dims = (causal.dims, anti.dims)
        if keep_spectra:
            cand.spectra = (causal.spectra, anti.spectra)
        self.tried.append(cand)
        return cand

    def uniform(self, m_sizes, n_sizes, boundaries="uniform", keep_spectra=False) -> _Candidate | None:
        dim = max_uniform_dim(m_sizes, n_sizes, self.budget)
        if dim < 0:
            return None
        cand = _Candidate(self.ordering, m_sizes, n_sizes, uniform_dims(m_sizes, n_sizes, dim), "uniform", boundaries)
        return self.evaluate(cand, keep_spectra)

    def greedy(self, base: _Candidate) -> _Candidate:
        dims = greedy_dims(base.m_sizes, base.n_sizes, base.spectra[0], base.spectra[1], self.budget)
        return self.evaluate(_Candidate(self.ordering, base.m_sizes, base.n_sizes, dims, "greedy", base.boundaries))

    def walk_stages(self, grid: list[int]) -> list[_Candidate]:
        """Uniform candidates along the K grid, stopping two grid points past the best."""
        m, n = self.W.shape
        found, worse = [], 0
        for K in grid:
            if K == 1:
                continue
            cand = self.uniform(proportional_sizes(m, K), proportional_sizes(n, K), keep_spectra=True)
            if cand is None:
                continue
            best = min(c.error2 for c in found) if found else np.inf
            found.append(cand)
            worse = worse + 1 if cand.error2 > best else 0
            if worse >= 2 or cand.error2 == 0.0:
                break
        return found


def _smallest_budget(shape, grid) -> tuple[int, int]:
    m, n = shape
    best = min((int(np.sum(proportional_sizes(m, K) * proportional_sizes(n, K))), K) for K in grid)
    return best


def realize_sss(W: np.ndarray, m_sizes, n_sizes, causal_dims, anticausal_dims, *, row_order=None, col_order=None,
                refine_iterations: int = 0) -> tuple[SSS, float, float, int]:
    """Identify an SSS matrix with the given partition and (maximal) state dims from the *reordered* ``W``
    (``W[row_order][:, col_order]``, float64), by the exact sweep, then optionally refine it.

    Returns ``(matrix, sweep_error2, final_error2, iterations_kept)`` with squared absolute errors.
    """
    WT = np.ascontiguousarray(W.T)
    scale = float(np.linalg.norm(W))
    causal = causal_sweep(W, m_sizes, n_sizes, causal_dims, exact=True, scale=scale)
    anti = causal_sweep(WT, n_sizes, m_sizes, anticausal_dims, exact=True, scale=scale)
    parts = [(causal.A, causal.B, causal.C), (anti.A, anti.B, anti.C)]
    sweep_error2 = causal.error2 + anti.error2
    final_error2, kept = sweep_error2, 0
    if refine_iterations > 0 and sweep_error2 > 0.0:
        refined, errors = [], [causal.error2, anti.error2]
        for side, (mat, ms, ns) in enumerate(((W, m_sizes, n_sizes), (WT, n_sizes, m_sizes))):
            A, B, C, history = refine_causal(mat, ms, ns, *parts[side], iterations=refine_iterations)
            if history and history[-1] < errors[side]:
                refined.append((A, B, C))
                errors[side] = history[-1]
                kept = max(kept, len(history))
            else:
                refined.append(parts[side])
        parts, final_error2 = refined, errors[0] + errors[1]
    (A, B, C), (A2, B2, C2) = parts
    r = np.concatenate([[0], np.cumsum(m_sizes)])
    c = np.concatenate([[0], np.cumsum(n_sizes)])
    D = [W[r[k]:r[k + 1], c[k]:c[k + 1]] for k in range(len(m_sizes))]
    matrix = SSS(A, B, C, D, [x.T for x in A2], [x.T for x in C2], [x.T for x in B2],
                 row_order=row_order, col_order=col_order)
    return matrix, sweep_error2, final_error2, kept


def fit_sss_detailed(W, budget, **options) -> tuple[SSS, SSSFitReport]:
    """:func:`fit_sss` (same arguments, without ``inputs``), also returning an :class:`SSSFitReport` of what was
    chosen and both errors. BLAS runs on one thread: the fit is many small factorizations, for which threads cost
    more than they give (and oversubscribe a shared machine). ``lowrank_candidate=False`` leaves out the two-stage
    realization of the truncated SVD (the best genuinely staged fit is returned)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit(W, budget, **options)


def _fit(W, budget, *, num_stages=None, stage_sizes=None, allocation: str = "auto", ordering: str = "auto",
         boundaries: str = "search", refine_iterations: int = 2, seed=0, progress: bool = False,
         lowrank_candidate: bool = True) -> tuple[SSS, SSSFitReport]:
    start = time.perf_counter()
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    m, n = W.shape
    if allocation not in _ALLOCATIONS:
        raise ValueError(f"allocation must be one of {_ALLOCATIONS}; got {allocation!r}")
    if boundaries not in _BOUNDARIES:
        raise ValueError(f"boundaries must be one of {_BOUNDARIES}; got {boundaries!r}")
    if ordering != "auto" and ordering not in ORDERINGS:
        raise ValueError(f"ordering must be 'auto' or one of {ORDERINGS}; got {ordering!r}")
    refine_iterations = check_positive_int(refine_iterations, "refine_iterations", minimum=0)
    grid = stage_grid(max(m, n))
    if stage_sizes is not None:
        partitions = [_check_partition(stage_sizes, W.shape)]
        grid = [len(partitions[0][0])]
    elif num_stages is not None:
        K = check_positive_int(num_stages, "num_stages")
        if K > max(m, n):
            raise ValueError(f"num_stages must be <= max(m, n) = {max(m, n)} for shape {W.shape}; got {K}")
        partitions = [(proportional_sizes(m, K), proportional_sizes(n, K))]
        grid = [K]
    else:
        partitions = None
    norm2 = float(np.sum(W * W))
    if limit >= m * n and partitions is None:  # one stage: D = W, exact
        M = SSS([np.zeros((0, 0))], [np.zeros((0, n))], [np.zeros((m, 0))], [W], [np.zeros((0, 0))],
                [np.zeros((0, n))], [np.zeros((m, 0))])
        report = SSSFitReport(1, "none", "uniform", "uniform", M.nparams, limit, 0.0, 0.0, False, 0,
                              time.perf_counter() - start)
        return M, report
    smallest, smallest_K = _smallest_budget(W.shape, grid) if partitions is None else (
        int(np.sum(partitions[0][0] * partitions[0][1])), len(partitions[0][0]))
    if limit < smallest:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest SSS matrix for shape ({m}, {n})"
            + ("" if partitions is None else " with the given stages")
            + f": {smallest} parameters (num_stages={smallest_K}, state dims 0)"
        )
    orderings = list(AUTO_ORDERINGS) if ordering == "auto" else [ordering]
    if min(m, n) < 8 or (ordering == "auto" and m * n > AUTO_ORDERING_MAX_ENTRIES):  # a sliver, or too large
        orderings = ["none"]
    orders, searches = {}, {}

    def search_for(name):
        if name not in searches:
            rows, cols = order_rows_and_columns(W, name, seed=seed)
            orders[name] = (rows, cols)
            searches[name] = _Search(permute(W, rows, cols), limit, name)
        return searches[name]

    # 1. the partitions: the K walk (or the given partition) on the first ordering
    first = search_for(orderings[0])
    if partitions is None:
        ranked = sorted(first.walk_stages(grid), key=lambda c: c.error2)
    else:
        ranked = [c for c in (first.uniform(ms, ns, keep_spectra=True) for ms, ns in partitions) if c is not None]
    if not ranked:
        raise ValueError(f"budget={budget} ({limit} parameters) fits no SSS candidate for shape ({m}, {n})")
    best = ranked[0]
    # 2. the other orderings at the best partition; the second-best K on the winner too
    for name in orderings[1:]:
        cand = search_for(name).uniform(best.m_sizes, best.n_sizes, keep_spectra=True)
        if cand is not None and cand.error2 < best.error2:
            best = cand
    if best.ordering != orderings[0] and len(ranked) > 1:
        cand = searches[best.ordering].uniform(ranked[1].m_sizes, ranked[1].n_sizes, keep_spectra=True)
        if cand is not None and cand.error2 < best.error2:
            best = cand
    search = searches[best.ordering]
    # 3. state dims: greedy allocation from the best candidate's singular values
    if allocation != "uniform" and best.num_stages > 2:
        cand = search.greedy(best)
        if allocation == "greedy" or cand.error2 < best.error2:
            best = cand
    # 4. non-uniform stage boundaries at the same K and budget
    if boundaries in ("search", "refine") and partitions is None and best.num_stages > 2:
        for kind, amplitude in _PROFILES:
            ms, ns = (_profile_sizes(m, best.num_stages, kind, amplitude),
                      _profile_sizes(n, best.num_stages, kind, amplitude))
            cand = search.uniform(ms, ns, boundaries=f"{kind}{amplitude:+g}", keep_spectra=best.allocation == "greedy")
            if cand is not None and best.allocation == "greedy":
                cand = search.greedy(cand)
            if cand is not None and cand.error2 < best.error2:
                best = cand
    if boundaries == "refine" and best.num_stages > 1:
        best = _refine_cuts(search, best)
    rows, cols = orders[best.ordering]
    Wp = searches[best.ordering].W
    M, sweep2, final2, kept = realize_sss(Wp, best.m_sizes, best.n_sizes, *best.dims, row_order=rows,
                                          col_order=cols, refine_iterations=refine_iterations)
    if M.nparams > limit:  # cannot happen: realized dims never exceed the requested ones
        raise RuntimeError(f"fit_sss built {M.nparams} parameters for a budget of {limit}")
    if lowrank_candidate and partitions is None and limit >= m + n:  # low rank as a two-stage SSS
        L = fit_lowrank(W, limit, seed=seed)
        lowrank2 = lowrank_error2(W, L, norm2)
        logger.debug("fit_sss: low-rank realization (rank %d) error %.5f", L.rank,
                     math.sqrt(lowrank2 / norm2) if norm2 > 0 else 0.0)
        if lowrank2 < final2:
            M, sweep2, final2, kept = SSS.from_lowrank(L), lowrank2, lowrank2, 0
            best = _Candidate("none", np.array([0, m]), np.array([n, 0]), (M.causal_dims, M.anticausal_dims),
                              "lowrank", "lowrank", lowrank2)
    rel = (lambda e2: float(np.sqrt(max(e2, 0.0) / norm2)) if norm2 > 0 else 0.0)
    candidates = [c.row(norm2) for s in searches.values() for c in s.tried]
    for row in candidates:
        logger.debug("fit_sss candidate: %s", row)
    report = SSSFitReport(M.num_stages, best.ordering, best.allocation, best.boundaries, M.nparams, limit,
                          rel(sweep2), rel(final2), final2 < sweep2, kept, time.perf_counter() - start, candidates)
    logger.info("fit_sss: shape=%s budget=%d -> K=%d ordering=%s allocation=%s boundaries=%s nparams=%d "
                "sweep error %.5f, refined error %.5f (%d iterations), %.2f s", W.shape, limit, report.num_stages,
                report.ordering, report.allocation, report.boundaries, report.nparams, report.sweep_error,
                report.refined_error, kept, report.seconds)
    return M, report


def _refine_cuts(search: _Search, best: _Candidate) -> _Candidate:
    """Local search on the stage boundaries: move one row cut or one column cut at a time by ``step`` (half the
    median stage first, halved whenever no move helps, down to 1), keep a move when the sweep error at the same
    budget (largest uniform dim, or the greedy allocation if that was chosen) drops. Costs up to
    ``4 (K − 1)`` candidate sweeps per step size."""
    greedy = best.allocation == "greedy"
    steps = [max(1, int(np.median(best.m_sizes)) // 2), max(1, int(np.median(best.n_sizes)) // 2)]
    while True:
        improved = False
        for b in range(1, best.num_stages):
            for side, sign in ((0, 1), (0, -1), (1, 1), (1, -1)):
                sizes = [best.m_sizes.copy(), best.n_sizes.copy()]
                move = sign * steps[side]
                move = max(-int(sizes[side][b - 1]), min(move, int(sizes[side][b])))  # cuts stay ordered
                if move == 0:
                    continue
                sizes[side][b - 1] += move
                sizes[side][b] -= move
                cand = search.uniform(sizes[0], sizes[1], boundaries="refined", keep_spectra=greedy)
                if cand is not None and greedy:
                    cand = search.greedy(cand)
                if cand is not None and cand.error2 < best.error2:
                    best, improved = cand, True
        if not improved:
            if steps == [1, 1]:
                return best
            steps = [max(1, steps[0] // 2), max(1, steps[1] // 2)]


def _check_partition(sizes, shape):
    try:
        ms, ns = (np.asarray(s) for s in sizes)
    except (TypeError, ValueError):
        raise TypeError(f"stage_sizes must be a pair (m_sizes, n_sizes) of integer sequences; got {sizes!r}") from None
    if ms.dtype.kind not in "iu" or ns.dtype.kind not in "iu" or ms.ndim != 1 or ms.shape != ns.shape or ms.size < 1:
        raise ValueError(f"stage_sizes must be two 1-D integer sequences of equal length K >= 1; got {sizes!r}")
    if ms.min() < 0 or ns.min() < 0 or int(ms.sum()) != shape[0] or int(ns.sum()) != shape[1]:
        raise ValueError(f"stage_sizes must be >= 0 and sum to W's shape {shape}; got sums ({ms.sum()}, {ns.sum()})")
    return ms.astype(np.int64), ns.astype(np.int64)


@guarded_fit
def fit_sss(W, budget, *, num_stages=None, stage_sizes=None, allocation: str = "auto", ordering: str = "auto",
            boundaries: str = "search", refine_iterations: int = 2, seed=0, progress: bool = False, inputs=None,
            ridge: float = DEFAULT_RIDGE, weighted_iterations=None) -> SSS:
    """Fit a sequentially semiseparable matrix with ``nparams <= budget`` and the smallest error found.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``.
    num_stages : int, optional
        Fix K (proportional stage sizes) instead of searching the grid 2, 3, 4, 6, 8, 12, ….
    stage_sizes : pair (m_sizes, n_sizes) of int sequences, optional
        Fix the partition (rows and columns per stage; zeros allowed) instead of searching.
    allocation : {"auto", "uniform", "greedy"}
        State dims: the largest uniform dim that fits, the greedy allocation by singular value per parameter,
        or both (keep the better).
    ordering : {"auto", "none", "spectral", "bisection", "principal", "kmeans"}
        Reorder rows and columns first (:mod:`structmat.approximators.ordering`); the permutation is stored with
        the matrix and applied in products. ``"auto"`` tries none, spectral and bisection and keeps the best.
    boundaries : {"search", "uniform", "refine"}
        ``"search"`` also tries non-uniform stage boundaries (stage widths following cosine profiles) at the
        chosen K and keeps them when they lower the error at the same budget; ``"refine"`` then also moves
        single row or column cuts (a local search with halving steps; up to ``4(K−1)`` sweeps per step size,
        so several times slower).
    refine_iterations : int >= 0
        Alternating least-squares iterations on all stage matrices after the sweep (0: off); kept only if they
        lower the error. Both errors are logged and returned by :func:`fit_sss_detailed`.
    seed : int or None
        Seeds the orderings' randomized eigen-solvers (default 0: the same W gives the same fit).
    progress : bool
        Unused (the fit takes seconds); accepted for a uniform approximator signature.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the output error ``‖(W − M) Xᵀ‖_F`` on these inputs instead of ``‖W − M‖_F``: the plain fit's
        structure re-identified on block-whitened columns, then alternating weighted least squares on all
        generators (:mod:`structmat.approximators._sss_weighted`); never worse on these inputs than the plain fit
        or the whitened low-rank optimum (as a two-stage SSS) at the same budget.
    ridge : float
        Relative regularisation of the inputs' second moment (with ``inputs``).
    weighted_iterations : int, optional
        Alternating weighted least-squares iterations with ``inputs`` (None: the default, 3).

    Returns
    -------
    SSS
        float64, with ``row_order``/``col_order`` when a reordering won.

    Raises
    ------
    ValueError
        if the budget is below the smallest SSS matrix for the shape (the message names it), or for bad inputs.

    Notes
    -----
    The candidates include low rank as a two-stage SSS (stage sizes ``(0, m)``, ``(n, 0)``, state dim ``r``:
    ``r (m + n)`` parameters), so the fit is never worse than ``lowrank`` at the same budget. The sweep's error is
    exact: ``‖W − M‖² = Σ_b Σ_{i>d_b} s_i(M_b)² + (the same for the anticausal part)``.
    Cost ``O(m n d)`` per candidate (structmat's SSS implementation note, §1.4-1.6).

    References
    ----------
    S. Chandrasekaran, P. Dewilde, M. Gu et al., "Some fast algorithms for sequentially semiseparable
    representations", SIAM J. Matrix Anal. Appl. 27(2), 2005; P. Dewilde and A.-J. van der Veen,
    *Time-Varying Systems and Computations*, Kluwer, 1998.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> M = fit_sss(W, 0.8)
    >>> M.nparams <= 0.8 * 48
    True
    """
    options = dict(num_stages=num_stages, stage_sizes=stage_sizes, allocation=allocation, ordering=ordering,
                   boundaries=boundaries, refine_iterations=refine_iterations, seed=seed, progress=progress)
    if inputs is not None:
        from threadpoolctl import threadpool_limits

        from structmat.approximators._sss_weighted import fit_sss_to_inputs

        W = check_weight(W)
        stats = as_statistics(inputs, W.shape[1])
        with threadpool_limits(limits=1):
            return fit_sss_to_inputs(W, budget, stats, ridge=ridge, iterations=weighted_iterations,
                                     plain_options=options)
    return fit_sss_detailed(W, budget, **options)[0]
