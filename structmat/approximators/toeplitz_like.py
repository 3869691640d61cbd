"""Fit a Toeplitz-like matrix to a weight ``W`` (Frobenius) or to the layer's outputs on given inputs.

A Toeplitz-like matrix of displacement rank r is ``M = ½ 𝒜(G Vᵀ)[:m, :n]`` (``V = J H``,
:mod:`structmat.matrices.toeplitz_like`); the least-squares machinery is in
:mod:`structmat.approximators._toeplitz_like_als`.

**Plain fit** (``‖W − M‖_F``). Candidates, the best of which is returned:

* the closed form: the displacement ``∇(W) = Z_1 W − W Z_{-1}`` of the zero-padded weight truncated to rank r by
  the SVD and mapped back (Pan 2001, Sec. 4.4). It minimises ``‖∇(W − M)‖``, not ``‖W − M‖``, and ``∇⁻¹``
  amplifies the discarded tail by up to ``cot(π/2N) ≈ 2N/π``, so on matrices without displacement structure it can
  be worse than the zero matrix (implementation note ldr-sparse-monarch.md §1.5); its best multiple
  ``α = <W, M>/‖M‖²`` is never worse than zero;
* the truncated SVD of ``W`` at rank ``⌊r/2⌋``, which is Toeplitz-like of displacement rank at most r
  (:meth:`~structmat.matrices.toeplitz_like.ToeplitzLike.from_lowrank`): the simplest member of the family that
  equals a simpler one;
* a warm start (``init``, e.g. the fit at a smaller budget), zero-padded to rank r;
* alternating least squares (ALS) on the generators: ``M`` is linear in ``G`` for fixed ``V`` and in ``V`` for
  fixed ``G``, so every half-step is a least-squares problem and the error never increases. It starts from the
  singular vectors of the displacement rows (columns) the block determines — so an exactly Toeplitz-like block is
  recovered by one half-step — and after that half-step continues from the best of the candidates above.

**Data-aware fit** (``inputs``: rows or :class:`~structmat.InputStatistics`): the objective is the layer's output
error ``‖(W − M) Xᵀ‖_F = ‖(W − M) L‖_F`` with ``L Lᵀ = C + λI`` (structmat's note data-aware.md). Candidates:
the plain fit (so the result is never worse than it on the fitting rows), the output-optimal low rank at rank
``⌊r/2⌋`` (the whitened truncated SVD, :func:`~structmat.approximators.lowrank.fit_lowrank`; SVD-LLM, Wang et al.
2025) embedded exactly, and the warm start; then ALS in the output norm from the best of them. Its half-steps are
``C``-weighted least squares, solved by conjugate gradients preconditioned with the unweighted solve (the weight
breaks the frequency decoupling; see the engine's module docstring). Every candidate is scored by the output
objective.

**Monotone in the budget.** The budget only sets the rank ``r = budget // (2 max(m, n))``. For ``max(m, n) <=
CHAIN_MAX_SIDE`` the fit at rank r is computed as a chain over the ranks 1, 2, …, r, each rank warm-started from the
previous one's answer (padded), so a larger budget never gives a larger error. Larger matrices fit each rank
independently (a chain would multiply the cost by r); pass the smaller budget's answer as ``init`` to get the same
guarantee.

**Stopping.** Each ALS stops on ``tol`` (a sweep lowering the error by less than ``tol`` times itself), on its
sweep count, or when the next half-step would take its work past ``max_work`` (the output-norm ALS: past 1.5 times
the plain ALS's work, ``OUTPUT_WORK_FACTOR``, so that a data-aware fit costs about three plain ones). Work is counted in *model seconds*
(:meth:`~structmat.approximators._toeplitz_like_als.ToeplitzLikeProblem.half_step_work`, a cost model from the
sizes alone), never measured, so the result is the same on every machine and under any load. A wall-clock limit
(``max_seconds``) is available but off by default.

References
----------
V. Sindhwani, T. Sainath, S. Kumar, "Structured transforms for small-footprint deep learning", NeurIPS 2015 (the
displacement inversion); V. Pan, "Structured Matrices and Polynomials", Birkhäuser 2001, Sec. 4.4 (truncating the
displacement); X. Wang et al., "SVD-LLM: truncation-aware singular value decomposition for large language model
compression", ICLR 2025, Sec. 3.1 (whitening); implementation note ldr-sparse-monarch.md §1.5 (the block-circulant
normal equations, checked against ``lstsq``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators._toeplitz_like_als import EXACT, ToeplitzLikeProblem, balance, leading_svd
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.lowrank import fit_lowrank
from structmat.matrices.lowrank import LowRank
from structmat.matrices.toeplitz_like import ToeplitzLike
from structmat.statistics import DEFAULT_RIDGE
from structmat.threads import limit_threads

__all__ = ["fit_toeplitz_like", "ToeplitzLikeFit", "fit_toeplitz_like_rank", "fit_toeplitz_like_pair", "check_limit",
           "output_weight", "DEFAULT_MAX_WORK", "CHAIN_MAX_SIDE"]

logger = logging.getLogger(__name__)

#: Default work limit of each ALS run, in model seconds. The cost model undercounts the memory-bound passes of large
#: fits: at 4096×4096 and share 0.25 (rank 512), 20 model seconds took 34.6 CPU s on a quiet core (relative error
#: 0.872) and 14 take 25.3 s (0.883); 1024×1024 and the EfficientNet-Lite0 classifier (1000×1280) stop on
#: ``tol`` or ``max_iterations`` before either limit and are unchanged.
DEFAULT_MAX_WORK = 14.0
#: The output-norm ALS gets at most this times the plain ALS's work (but at least ``OUTPUT_MIN_WORK`` model
#: seconds), so that a data-aware fit costs about three plain ones at any rank: its weighted steps cost an
#: ``m n²`` product each, whatever the rank, while the plain fit's cost grows with the rank.
OUTPUT_WORK_FACTOR = 1.5
OUTPUT_MIN_WORK = 1.0
#: Up to this ``max(m, n)`` the fit at rank r chains the ranks 1..r (monotone in the budget by construction).
CHAIN_MAX_SIDE = 32


@dataclass(frozen=True)
class ToeplitzLikeFit:
    """The outcome of a Toeplitz-like fit: the matrix kept, its error, and those of the candidates.

    Errors are relative, in the fit's ``objective``: ``"frobenius"`` (``‖W − M‖ / ‖W‖``) or ``"output"``
    (``‖(W − M) L‖ / ‖W L‖``, the regularised output error). ``closed_form_error`` is the truncated displacement's
    (None in an output fit, whose candidates start from the plain fit), ``refined_error`` the best of the other
    candidates (None when the refinement did not run), ``candidates`` maps every candidate tried to its error, ``sweeps`` counts ALS sweeps, ``work`` their model seconds.
    """

    matrix: ToeplitzLike
    error: float
    objective: str
    closed_form_error: float | None
    refined_error: float | None
    candidates: dict
    sweeps: int
    work: float
    seconds: float


@guarded_fit
def fit_toeplitz_like(W, budget, *, inputs=None, ridge: float = DEFAULT_RIDGE, refine: bool = True,
                      max_iterations: int = 16, tol: float = 1e-3, cg_iterations: int = 3, output_sweeps: int = 4,
                      output_cg_iterations: int = 12, max_work: float | None = DEFAULT_MAX_WORK,
                      max_seconds: float | None = None, init: ToeplitzLike | None = None, seed=0,
                      progress: bool = False) -> ToeplitzLike:
    """Toeplitz-like approximation of ``W`` with ``2 r max(m, n) <= budget`` parameters.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``. The displacement rank is ``r = budget // (2 max(m, n))``,
        capped at ``max(m, n)`` (which already represents every matrix).
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the layer's outputs on these inputs (module docstring) instead of ``W`` itself.
    ridge : float
        Relative regularisation of the inputs' second moment (:class:`~structmat.InputStatistics`).
    refine : bool
        ``False`` returns the closed form alone (a sweep variant ``toeplitz_like[refine=False]`` records its error
        beside the refined one); ignored with ``inputs``.
    max_iterations : int
        ALS sweeps at most of the plain fit (one sweep = a G-step and an H-step).
    tol : float
        Stop an ALS when a sweep lowers the error by less than ``tol`` times itself.
    cg_iterations : int
        Preconditioned conjugate-gradient steps per half-step of the plain fit where it is not solved exactly
        (rectangular ``W`` with ``max(m, n)·r > 2048``, or ranks above 160).
    output_sweeps, output_cg_iterations : int
        ALS sweeps, and conjugate-gradient steps per half-step, of the refinement in the output norm (``inputs``).
    max_work : float or None
        Work limit of each ALS run in model seconds (module docstring; None: no limit); the output-norm ALS also
        stops at 1.5 times the plain ALS's work. Deterministic.
    max_seconds : float or None
        Opt-in wall-clock limit of each ALS run: no half-step is started that would end past this many seconds
        since the start of the fit (default None). Only this limit makes the result depend on the machine.
    init : ToeplitzLike, optional
        A warm start of the same shape and at most the fitted rank, e.g. the fit at a smaller budget: it is a
        candidate (zero-padded), so the result is never worse than it.
    seed : int or None
        Seeds the randomized SVDs used for large matrices (``max(m, n) > 2048``); the fit is otherwise
        deterministic.
    progress : bool
        Show tqdm bars over the sweeps.

    Runs with the thread limit of :mod:`structmat.threads` (one BLAS thread by default), fits ``W`` divided by a
    power of two and scales the result back (:mod:`structmat.approximators.fit_guard`; ``init`` is scaled with it).

    Returns
    -------
    ToeplitzLike
        float64; the best candidate (module docstring). Its errors and the candidates' are logged at INFO
        (:func:`fit_toeplitz_like_rank` returns them).

    Raises
    ------
    ValueError
        if ``budget < 2 max(m, n)`` (displacement rank 1), for bad ``W``, ``inputs`` or ``init``.

    Examples
    --------
    >>> import numpy as np
    >>> T = np.array([[float(i - j) for j in range(6)] for i in range(8)])  # a Toeplitz matrix
    >>> M = fit_toeplitz_like(T, 2 * 2 * 8)
    >>> M.rank, bool(np.allclose(M.to_dense(), T))
    (2, True)
    >>> X = np.random.default_rng(0).standard_normal((40, 6))
    >>> W = np.random.default_rng(1).standard_normal((8, 6))
    >>> import structmat
    >>> aware, plain = fit_toeplitz_like(W, 16, inputs=X), fit_toeplitz_like(W, 16)
    >>> bool(structmat.output_error(W, aware, X) <= structmat.output_error(W, plain, X))
    True
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    m, n = W.shape
    N = max(m, n)
    rank = min(limit // (2 * N), N)
    if rank < 1:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest Toeplitz-like matrix for shape "
            f"({m}, {n}): {2 * N} parameters (displacement rank 1, 2·max(m, n))"
        )
    fit = fit_toeplitz_like_rank(W, rank, inputs=inputs, ridge=ridge, refine=refine, max_iterations=max_iterations,
                                 tol=tol, cg_iterations=cg_iterations, output_sweeps=output_sweeps,
                                 output_cg_iterations=output_cg_iterations, max_work=max_work,
                                 max_seconds=max_seconds, init=init, seed=seed, progress=progress)
    return fit.matrix


def fit_toeplitz_like_rank(W, rank: int, *, inputs=None, ridge: float = DEFAULT_RIDGE, refine: bool = True,
                           max_iterations: int = 16, tol: float = 1e-3, cg_iterations: int = 3,
                           output_sweeps: int = 4, output_cg_iterations: int = 12,
                           max_work: float | None = DEFAULT_MAX_WORK, max_seconds: float | None = None,
                           init: ToeplitzLike | None = None, seed=0, progress: bool = False) -> ToeplitzLikeFit:
    """The fit of :func:`fit_toeplitz_like` at a given displacement rank, with its errors and candidates."""
    plain, output = fit_toeplitz_like_pair(
        W, rank, inputs=inputs, ridge=ridge, refine=refine, max_iterations=max_iterations, tol=tol,
        cg_iterations=cg_iterations, output_sweeps=output_sweeps, output_cg_iterations=output_cg_iterations,
        max_work=max_work, max_seconds=max_seconds, init=init, seed=seed, progress=progress)
    return plain if output is None else output


def fit_toeplitz_like_pair(W, rank: int, *, inputs=None, ridge: float = DEFAULT_RIDGE, refine: bool = True,
                           max_iterations: int = 16, tol: float = 1e-3, cg_iterations: int = 3,
                           output_sweeps: int = 4, output_cg_iterations: int = 12,
                           max_work: float | None = DEFAULT_MAX_WORK, max_seconds: float | None = None,
                           init: ToeplitzLike | None = None, chain: bool = True, seed=0,
                           progress: bool = False) -> tuple[ToeplitzLikeFit, ToeplitzLikeFit | None]:
    """Both fits of :func:`fit_toeplitz_like_rank` at once: ``(plain, output)``, ``output`` None without
    ``inputs`` (the output fit computes the plain one anyway, as its first candidate). ``chain=False`` fits the
    rank alone even for small matrices (for a caller that chains the ranks itself through ``init``)."""
    W = check_weight(W)
    rank = min(check_positive_int(rank, "rank"), max(W.shape))
    settings = _Settings(
        refine=bool(refine) or inputs is not None,
        max_iterations=check_positive_int(max_iterations, "max_iterations", minimum=0),
        tol=float(tol), cg_iterations=check_positive_int(cg_iterations, "cg_iterations"),
        output_sweeps=check_positive_int(output_sweeps, "output_sweeps", minimum=0),
        output_cg_iterations=check_positive_int(output_cg_iterations, "output_cg_iterations"),
        max_work=check_limit(max_work, "max_work"), max_seconds=check_limit(max_seconds, "max_seconds"),
        seed=seed, progress=progress)
    stats = None if inputs is None else as_statistics(inputs, W.shape[1])
    init = _check_init(init, W.shape, rank)
    with limit_threads():
        return _fit(W, rank, stats, ridge, init, settings, chain)


def check_limit(value, name: str) -> float | None:
    """A work or time limit: None, or a real number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0 or None; got {value!r}")
    return float(value)


def output_weight(stats, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
    """``C / scale² + λ I`` (n × n, symmetric positive definite): the weight of the output objective, the same
    regularisation as :class:`~structmat.approximators.data_aware.OutputObjective`."""
    mu, V = stats.regularized_eigh(ridge)
    C = (V * mu) @ V.T
    return (C + C.T) / 2.0


@dataclass(frozen=True)
class _Settings:
    refine: bool
    max_iterations: int
    tol: float
    cg_iterations: int
    output_sweeps: int
    output_cg_iterations: int
    max_work: float | None
    max_seconds: float | None
    seed: object
    progress: bool


def _check_init(init, shape, rank):
    if init is None:
        return None
    if not isinstance(init, ToeplitzLike):
        raise TypeError(f"init must be a ToeplitzLike matrix (e.g. the fit at a smaller budget); got "
                        f"{type(init).__name__}")
    if init.shape != tuple(shape) or init.rank > rank:
        raise ValueError(f"init must have shape {tuple(shape)} and rank <= {rank} (the fitted rank); got shape "
                         f"{init.shape} and rank {init.rank}")
    return init


def _fit(W, rank, stats, ridge, init, settings, chain):
    start = time.perf_counter()
    plain_problem = ToeplitzLikeProblem(W)
    output_problem = None
    if stats is not None:
        output_problem = ToeplitzLikeProblem(W, weight=output_weight(stats, ridge),
                                             weight_eigh=stats.regularized_eigh(ridge))
    chain = chain and settings.refine and plain_problem.N <= CHAIN_MAX_SIDE
    plain = output = None
    for k in (range(1, rank + 1) if chain else [rank]):
        warm = [f.matrix for f in (plain,) if f is not None]
        if init is not None and init.rank <= k:
            warm.append(init)
        plain = _fit_plain(plain_problem, k, warm, settings, start)
        if output_problem is not None:
            warm = [] if output is None else [output.matrix]
            if init is not None and init.rank <= k:
                warm.append(init)
            output = _fit_output(output_problem, k, plain, stats, ridge, warm, settings, start)
    seconds = time.perf_counter() - start
    return replace(plain, seconds=seconds), (None if output is None else replace(output, seconds=seconds))


def _generators(T: ToeplitzLike):
    return np.array(T.G, dtype=np.float64), np.array(T.H[::-1], dtype=np.float64)


def _lowrank_start(W, rank, seed, inputs=None, ridge=DEFAULT_RIDGE):
    """The (plain or whitened) low rank at ``⌊rank/2⌋`` as Toeplitz-like generators of rank ``rank``, or None."""
    k = rank // 2
    if k < 1:
        return None
    m, n = W.shape
    if inputs is None:
        U, s, Vt = leading_svd(W, k, seed)
        lowrank = LowRank(U * s, Vt.T)
    else:
        lowrank = fit_lowrank(W, k * (m + n), inputs=inputs, ridge=ridge, seed=seed)
    return _generators(ToeplitzLike.from_lowrank(lowrank, rank))


def _pack(problem, rank, candidates, closed_name, sweeps, work, objective, start) -> ToeplitzLikeFit:
    """The best candidate, balanced, as a ToeplitzLikeFit; ``candidates`` maps names to ``(G, V, error)``."""
    scale = max(problem.norm, np.finfo(float).tiny)
    name, (G, V, error) = min(candidates.items(), key=lambda item: item[1][2])
    errors = {key: value[2] / scale for key, value in candidates.items()}
    others = [e for key, e in errors.items() if key != closed_name]
    G, V = balance(G, V)
    matrix = ToeplitzLike(G, V[::-1], shape=problem.W.shape)
    logger.info("fit_toeplitz_like (%s): shape=%s rank=%d kept %r, error %.4g; candidates %s; %d ALS sweeps",
                objective, problem.W.shape, rank, name, error / scale,
                ", ".join(f"{key} {value:.4g}" for key, value in errors.items()), sweeps)
    return ToeplitzLikeFit(matrix, error / scale, objective, errors.get(closed_name),
                           min(others) if others else None, errors, sweeps, work, time.perf_counter() - start)


def _fit_plain(problem, rank, warm, settings, start) -> ToeplitzLikeFit:
    """The Frobenius fit at ``rank`` (module docstring)."""
    G, V, known = problem.closed_form(rank, settings.seed)
    candidates = {"closed form": (G, V, problem.error(G, V))}
    if not settings.refine or settings.max_iterations == 0 or candidates["closed form"][2] <= EXACT * problem.norm:
        return _pack(problem, rank, candidates, "closed form", 0, 0.0, "frobenius", start)
    alpha_G, error = problem.rescaled(G, V)
    candidates["rescaled closed form"] = (alpha_G, V, error)
    lowrank = _lowrank_start(problem.W, rank, settings.seed)
    if lowrank is not None:
        candidates["low rank"] = (*lowrank, problem.error(*lowrank))
    for i, T in enumerate(warm):
        G_warm, V_warm = _generators(T.padded(rank))
        candidates[f"warm start {i}"] = (G_warm, V_warm, problem.error(G_warm, V_warm))
    # one half-step from the displacement's start: exact on an exactly Toeplitz-like block
    side, basis = known
    zeros = np.zeros_like(basis)
    G0, V0, order = (zeros, basis, ("G", "V")) if side == "V" else (basis, zeros, ("V", "G"))
    work = problem.half_step_work(rank, settings.cg_iterations, first_sweep=True)
    G1, V1, error1, _ = problem.half_step(order[0], G0, V0, settings.cg_iterations, first_sweep=True)
    candidates["ALS"] = (G1, V1, error1)
    sweeps = 0
    if error1 > EXACT * problem.norm:
        # continue from the best candidate so far (the ALS never increases the error)
        name = min(candidates, key=lambda key: candidates[key][2])
        G_start, V_start, _ = candidates[name]
        next_order = (order[1], order[0]) if name == "ALS" else ("G", "V")
        remaining = None if settings.max_work is None else max(settings.max_work - work, 1e-300)
        G2, V2, error2, sweeps, more = problem.refine(
            G_start, V_start, next_order, max_iterations=settings.max_iterations, tol=settings.tol,
            cg_iterations=settings.cg_iterations, max_work=remaining, max_seconds=settings.max_seconds,
            start=start, progress=settings.progress)
        work += more
        if error2 < candidates["ALS"][2]:
            candidates["ALS"] = (G2, V2, error2)
    return _pack(problem, rank, candidates, "closed form", sweeps, work, "frobenius", start)


def _output_work(max_work, plain_work: float) -> float | None:
    """The output ALS's work limit: ``OUTPUT_WORK_FACTOR`` times the plain ALS's work (at least
    ``OUTPUT_MIN_WORK``), within ``max_work``."""
    limit = max(OUTPUT_MIN_WORK, OUTPUT_WORK_FACTOR * plain_work)
    return limit if max_work is None else min(max_work, limit)


def _fit_output(problem, rank, plain, stats, ridge, warm, settings, start) -> ToeplitzLikeFit:
    """The output-norm fit at ``rank``: candidates scored by the output objective, then weighted ALS."""
    G, V = _generators(plain.matrix)
    candidates = {"plain fit": (G, V, problem.error(G, V))}
    lowrank = _lowrank_start(problem.W, rank, settings.seed, inputs=stats, ridge=ridge)
    if lowrank is not None:
        candidates["whitened low rank"] = (*lowrank, problem.error(*lowrank))
    for i, T in enumerate(warm):
        G_warm, V_warm = _generators(T.padded(rank))
        candidates[f"warm start {i}"] = (G_warm, V_warm, problem.error(G_warm, V_warm))
    name = min(candidates, key=lambda key: candidates[key][2])
    G_start, V_start, error_start = candidates[name]
    sweeps, work = 0, 0.0
    if settings.output_sweeps > 0 and error_start > EXACT * problem.norm:
        G2, V2, error2, sweeps, work = problem.refine(
            G_start, V_start, ("G", "V"), max_iterations=settings.output_sweeps, tol=settings.tol,
            cg_iterations=settings.output_cg_iterations, max_work=_output_work(settings.max_work, plain.work),
            max_seconds=settings.max_seconds, start=start, progress=settings.progress,
            label="fit_toeplitz_like output ALS")
        candidates["output ALS"] = (G2, V2, error2)
    return _pack(problem, rank, candidates, "closed form", sweeps, work, "output", start)
