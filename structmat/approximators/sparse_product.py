"""Products of sparse factors under a non-zero budget.

``fit_sparse`` (magnitude and output-aware pruning) lives in :mod:`structmat.approximators.sparse`.

``fit_sparse_product(W, budget)`` fits ``W ≈ S_1 S_2`` (or more factors) with ``Σ nnz(S_j) <= budget`` and returns
the best of these candidates:

- magnitude pruning (one factor);
- the best low-rank matrix the budget allows as the product ``U · Vᵀ`` (:mod:`._factored_lowrank`), computed only
  when the spectrum shows it can win and returned at once when it is exact;
- the *budget-split continuation* of PALM4MSA (Le Magoarou & Gribonval 2016, Algorithm 2), written for this library:
  it starts from magnitude pruning written as a product, ``W ≈ I · top_k(W)`` (a "mixing" factor equal to the
  identity, the other factor the pruned ``W``), then moves non-zeros from the pruned factor to the mixing factor a
  few at a time, one PALM4MSA sweep per step, while the error falls (:mod:`._continuation`). It keeps the best state
  met, goes back to it when the error has clearly risen past its minimum, and polishes it at that split, so the
  split of the budget between the factors is chosen by the path itself. How slowly it moves and how long it polishes
  follows the cost of a sweep, ``m·n·d`` multiply-adds (:func:`continuation_effort`): small matrices get a slow ramp
  and a tight stopping rule, large ones the fast settings, and from about 1625×1625 on a capped number of sweeps
  (a fixed ramp-then-polish schedule when only a few are affordable), so that a 4096×4096 fit takes about 25 s;
- for matrices up to about 800×800 (:func:`polish_rounds`), the *alternating polish* (:mod:`._alternating`: exact
  least squares on the supports between PALM4MSA sweeps) of the continuation's result and of a start like FAµST's.

With ``inputs`` the candidates are scored by the output error (:mod:`.sparse_product_outputs`). ``method="palm4msa"``
instead runs PALM4MSA from FAµST's start for each split of a grid (the peer library's linear split shares) and keeps
the best; ``method="hierarchical"`` runs the hierarchical variant (Algorithm 3) with a geometric residual schedule.

Everything is deterministic: the only random numbers (the sketch bounding the low-rank candidate's error) have a
fixed seed, and every effort rule depends on the shape only.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators._alternating import alternating_polish
from structmat.approximators._continuation import (FrobeniusMixing, follow_budget_path, follow_budget_schedule,
                                                   start_step)
from structmat.approximators._factored_lowrank import lowrank_product
from structmat.approximators._output_norm import OutputNorm
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.palm4msa import Constraint, _default_init, _palm, blas_threads_for, hierarchical
from structmat.approximators.sparse import fit_sparse, magnitude_prune
from structmat.approximators.sparse_product_outputs import fit_product_to_outputs
from structmat.matrices.sparse_product import SparseProduct
from structmat.statistics import DEFAULT_RIDGE

__all__ = ["fit_sparse", "fit_sparse_product", "magnitude_prune", "continuation_effort", "METHODS"]

logger = logging.getLogger(__name__)

METHODS = ("continuation", "palm4msa", "hierarchical")
#: Share of the budget moved from the pruned factor to the mixing factor per sweep of the continuation, and its
#: stopping tolerance, for matrices whose sweeps are expensive (``m·n·d >= FAST_WORK``).
RAMP_RATE, TOL = 0.015, 2e-3
#: The same for cheap sweeps (``m·n·d <= THOROUGH_WORK``): four times as many ramp sweeps and a polish to a 1e-4
#: relative gain. On a Gaussian 256×256 matrix (m·n·d = 2^24) this lowered the error at share 0.5 from 0.206 to
#: 0.185 (pyfaust's best split: 0.196) for 0.5 s of CPU instead of 0.15 s; on EfficientNet-Lite0's 1000×1280
#: classifier (1.3·10^9) it would cost 15 s instead of 3 s for 0.426 against 0.464, so large matrices keep the fast
#: settings.
THOROUGH_RAMP_RATE, THOROUGH_TOL = 0.004, 1e-4
#: Sweep costs (multiply-adds ``m·n·d``) at or below which the continuation is thorough and at or above which it is
#: fast; in between, the ramp rate and tolerance are interpolated geometrically in the cost.
THOROUGH_WORK, FAST_WORK = 2**24, 2**26
#: Sweeps allowed by default at the fast ramp rate; slower ramps get proportionally more.
MAX_SWEEPS = 150
#: Sweeps costing more than ``LARGE_WORK`` multiply-adds (``m·n·d``; a 1625×1625 matrix) are capped in number:
#: ``LARGE_SWEEPS · (LARGE_WORK / work)^LARGE_SWEEPS_EXPONENT``, at least ``MIN_SWEEPS`` (25 for 2048×2048, 6 for
#: 4096×4096), and the ramp is sped up so that ``ramp_rate · max_iter >= RAMP_SWEEPS``. The error change against
#: more sweeps is on the fit-quality benchmarks page.
LARGE_WORK, LARGE_SWEEPS, LARGE_SWEEPS_EXPONENT, MIN_SWEEPS, RAMP_SWEEPS = 2**32, 40, 0.7, 4, 0.55
#: With at most this many sweeps the default follows a fixed schedule instead of the adaptive path (no room to
#: turn back and polish): half the sweeps move ``SCHEDULE_TARGET_SHARE`` of the budget to the mixing factor, the
#: rest polish.
SCHEDULE_MAX_SWEEPS, SCHEDULE_TARGET_SHARE = 12, 0.22
#: Power iterations of the spectral norms (at most, relative tolerance) for sweeps above ``LARGE_WORK``.
LARGE_POWER_ITERATIONS = (4, 1e-3)
#: The continuation's sweeps run in float32 for matrices with at least this many entries (about twice as fast;
#: the errors that steer it are ~0.1-1, far above float32 rounding). The scale and the result are float64.
FLOAT32_MIN_SIZE = 2**16
#: The alternating polish (exact least squares on the supports between PALM4MSA sweeps) of the continuation's result
#: and of a start like FAµST's (half the budget per factor, ``FAUST_START_SWEEPS`` PALM4MSA sweeps): rounds afforded
#: by ``POLISH_WORK`` multiply-adds (:func:`polish_rounds`), up to ``POLISH_ROUNDS``; matrices that afford fewer than
#: ``MIN_POLISH_ROUNDS`` skip it (from about 800×800 on).
POLISH_WORK, POLISH_ROUNDS, MIN_POLISH_ROUNDS, FAUST_START_SWEEPS = 2.0**34, 40, 4, 30
#: The polish of FAµST's start gives up (after a few rounds) once its trend cannot reach the best other candidate.
GIVE_UP_FACTOR = 1.0
#: From this many entries on, the continuation's own (float32) error ranks it among the candidates.
KNOWN_ERROR_MIN_SIZE = 2**22
#: A low-rank candidate this close to W (relatively) is returned at once: W is exactly low rank.
EXACT_ERROR = 1e-12
#: Split shares of the first factor tried by ``method="palm4msa"`` (the peer tries linspace(0.1, 0.9, 17)).
PALM_SPLITS = tuple(np.round(np.linspace(0.1, 0.9, 9), 2))


def _mixing_sides(shape) -> list[str]:
    """Where to try the square mixing factor: rows (``"left"``) for nearly square shapes; both sides, the cheaper
    (smaller) first, when one side is at least twice the other. Measured on EfficientNet-Lite0's matrices at a
    quarter of the weights: the larger side won for 1280×320 and 320×1152, the smaller for 1152×192, rows for the
    1000×1280 classifier; a continuation on the smaller side costs at most half of one on the larger."""
    m, n = shape
    if max(m, n) < 2 * min(m, n):
        return ["left"]
    return ["left", "right"] if m < n else ["right", "left"]


def continuation_effort(shape, d: int) -> tuple[float, float, int]:
    """The continuation's default ``(ramp_rate, tol, max_iter)`` for a matrix of ``shape`` with a ``d × d`` mixing
    factor, from the cost of one sweep, ``w = m·n·d`` multiply-adds (each sweep multiplies the factors with
    ``m × n`` matrices a few times).

    ``w <= THOROUGH_WORK`` (2^24, a 256×256 matrix) gives ``(0.004, 1e-4)``; ``w >= FAST_WORK`` (2^26) gives
    ``(0.015, 2e-3)``; in between both are interpolated geometrically in ``w``. ``max_iter`` is
    ``MAX_SWEEPS · 0.015 / ramp_rate``, so a slower ramp is not cut short. Above ``w = LARGE_WORK`` (2^32) the
    sweeps are capped at ``40 · (2^32 / w)^0.7`` (at least 4) and the ramp sped up to ``0.55 / max_iter``, so that
    fit times grow about as ``(m n)^1.1`` instead of ``(m n)^1.5``; with at most ``SCHEDULE_MAX_SWEEPS`` sweeps the
    default continuation follows a fixed ramp-then-polish schedule. The rule depends on the shape only, so fits stay
    deterministic; it spends about half a second of CPU on a 256×256 matrix, 2-5 s on EfficientNet-Lite0's largest
    matrices and about 25 s on a 4096×4096 matrix.

    Examples
    --------
    >>> continuation_effort((256, 256), 256)
    (0.004, 0.0001, 562)
    >>> continuation_effort((1000, 1280), 1000)
    (0.015, 0.002, 150)
    >>> continuation_effort((4096, 4096), 4096)
    (0.0917, 0.002, 6)
    """
    m, n = shape
    work = float(m) * float(n) * float(d)
    t = min(1.0, max(0.0, math.log(work / THOROUGH_WORK) / math.log(FAST_WORK / THOROUGH_WORK)))
    ramp_rate = THOROUGH_RAMP_RATE * (RAMP_RATE / THOROUGH_RAMP_RATE) ** t
    tol = THOROUGH_TOL * (TOL / THOROUGH_TOL) ** t
    max_iter = int(MAX_SWEEPS * RAMP_RATE / ramp_rate)
    if work > LARGE_WORK:
        max_iter = max(MIN_SWEEPS, round(LARGE_SWEEPS * (LARGE_WORK / work) ** LARGE_SWEEPS_EXPONENT))
        ramp_rate = max(ramp_rate, RAMP_SWEEPS / max_iter)
    return float(f"{ramp_rate:.3g}"), float(f"{tol:.3g}"), max_iter


def _power_iterations(shape, d: int) -> tuple[int, float]:
    """Warm-started power iterations per spectral norm (at most, relative tolerance): fewer for large sweeps."""
    m, n = shape
    return LARGE_POWER_ITERATIONS if float(m) * float(n) * float(d) > LARGE_WORK else (10, 1e-4)


def _continuation(W, limit, side, *, ramp_rate, max_iter, tol, progress) -> tuple[SparseProduct, list]:
    """The budget-split continuation (module docstring) for two factors; returns the matrix and errors. ``None``
    options take their value from :func:`continuation_effort`."""
    m, n = W.shape
    d = m if side == "left" else n
    auto_ramp, auto_tol, auto_iter = continuation_effort((m, n), d)
    # few affordable sweeps (large matrices, default effort): a fixed ramp-then-polish schedule
    scheduled = ramp_rate is None and max_iter is None and auto_iter <= SCHEDULE_MAX_SWEEPS
    ramp_rate = auto_ramp if ramp_rate is None else ramp_rate
    tol = auto_tol if tol is None else tol
    max_iter = auto_iter if max_iter is None else max_iter
    dtype = np.float32 if W.size >= FLOAT32_MIN_SIZE else np.float64
    W_fit = W.astype(dtype)
    pruned = magnitude_prune(W_fit, limit - d)
    scale = float(np.linalg.norm(pruned))
    factors = [np.eye(d, dtype=dtype) / math.sqrt(d), pruned / scale]
    if side == "right":
        factors.reverse()
    state = FrobeniusMixing(W_fit, factors, scale * math.sqrt(d), limit, side, full=pruned / (scale * math.sqrt(d)),
                            power_iterations=_power_iterations((m, n), d))
    if scheduled:
        k_target = min(d * d, limit - 1, d + int(SCHEDULE_TARGET_SHARE * limit))
        best, errors = follow_budget_schedule(state, d, k_target, max(1, max_iter // 2), max_iter, progress=progress)
    else:
        best, errors = follow_budget_path(state, d, min(d * d, limit - 1), start_step(ramp_rate, limit, W.size),
                                          max_iter=max_iter, tol=tol, progress=progress)
    error, snapshot, k_mix = best
    logger.debug("continuation: side=%s d=%d k_mix=%d k_other=%d error=%.6g after %d sweeps (%s)",
                 side, d, k_mix, limit - k_mix, error, len(errors) - 1, np.dtype(dtype).name)
    return SparseProduct(FrobeniusMixing.product_factors(snapshot)), errors


def _palm_grid(W, limit, side, *, max_iter, tol, splits) -> SparseProduct:
    """PALM4MSA from FAµST's start for every split share of the first factor; the best product."""
    m, n = W.shape
    d = m if side == "left" else n
    shapes = [(m, d), (d, n)]
    best = None
    for share in splits:
        k_first = max(1, int(share * limit))
        if k_first >= limit:
            continue
        cons = [Constraint("topk", shapes[0], k_first), Constraint("topk", shapes[1], limit - k_first)]
        result = _palm(W, _default_init(cons), cons, 1.0, max_iter, tol, 0.0)
        logger.debug("palm4msa split %.2f: error %.6g after %d sweeps", share, result.errors[-1], len(result.errors))
        if best is None or result.errors[-1] < best.errors[-1]:
            best = result
    return best.to_matrix()


def _hierarchical_geometric(W, limit, num_factors, *, max_iter, tol) -> SparseProduct:
    """Hierarchical PALM4MSA (Algorithm 3) with inner dimensions ``max(m, n)`` (as the peer library) and a
    geometric split: factor ``j`` gets a share of the budget proportional to ``2^j`` (the last factor the most,
    the peer's exponential distribution), and residual ``ℓ`` the budget of the factors it becomes."""
    m, n = W.shape
    d = max(m, n)
    dims = [m] + [d] * (num_factors - 1) + [n]
    weights = 2.0 ** np.arange(num_factors)
    ks = np.maximum(1, np.floor(limit * weights / weights.sum()).astype(int))
    cons = [Constraint("topk", (dims[j], dims[j + 1]), int(ks[j])) for j in range(num_factors - 1)]
    residual = [Constraint("topk", (dims[j + 1], n), int(ks[j + 1:].sum())) for j in range(num_factors - 1)]
    return hierarchical(W, cons, residual, max_iter=max_iter, tol=tol).to_matrix()


@guarded_fit
def fit_sparse_product(W, budget, *, inputs=None, ridge: float = DEFAULT_RIDGE, num_factors: int = 2,
                       method: str = "continuation", mixing_side: str = "auto", max_iter: int | None = None,
                       tol: float | None = None, ramp_rate: float | None = None,
                       progress: bool = False) -> SparseProduct:
    """Fit ``W ≈ S_1 ⋯ S_J`` with ``Σ_j nnz(S_j) <= budget``; the best of that, magnitude pruning and the best
    low-rank matrix written as two factors.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Total non-zeros (a share of ``m · n`` for a float).
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        When given, minimise the output error ``‖(W − M) Xᵀ‖_F`` instead: the best of the plain fit, the
        output-aware sparse fit, the continuation in the output norm and the whitened low rank
        (:mod:`structmat.approximators.sparse_product_outputs`).
    ridge : float
        Relative regularisation of the inputs' second moment (with ``inputs`` only).
    num_factors : int
        ``J``. 1 is magnitude pruning; 2 uses ``method``; 3 or more use the hierarchical variant.
    method : {"continuation", "palm4msa", "hierarchical"}
        See the module docstring. For two factors.
    mixing_side : {"auto", "left", "right"}
        Where the square mixing factor sits: ``"left"`` fits ``W ≈ S_1 S_2`` with ``S_1`` of shape ``(m, m)``,
        ``"right"`` with ``S_2`` of shape ``(n, n)``; ``"auto"`` takes rows for nearly square shapes and tries both
        sides when one is at least twice the other.
    max_iter : int, optional
        At most this many PALM4MSA sweeps (per split for ``"palm4msa"``, per run for ``"hierarchical"``). Default:
        from :func:`continuation_effort` for the continuation (150 at the fast ramp rate, more for slower ones),
        150 for the other methods.
    tol : float, optional
        Stopping rule: after the split is chosen, stop once a sweep lowers the relative error by less than
        ``tol`` times its value (``"palm4msa"``/``"hierarchical"``: the PALM4MSA rule, see :func:`palm4msa`).
        Default: from :func:`continuation_effort` (1e-4 for small matrices up to 2e-3 for large ones), 2e-3 for
        the other methods.
    ramp_rate : float in (0, 1], optional
        Share of the budget (of ``m·n/4`` for larger budgets) moved to the mixing factor per sweep of the
        continuation: smaller is slower and usually a little better. Default: from :func:`continuation_effort`,
        0.004 for matrices up to 256×256-sized sweeps, 0.015 from four times that cost.
    progress : bool
        Show a progress bar over the sweeps.

    Returns
    -------
    SparseProduct
        Float64, ``λ`` folded into the first factor, with ``nparams <= budget``. A one-factor product (pruning)
        when no product was better.

    Raises
    ------
    ValueError
        for bad ``W``, ``budget`` or options.

    Notes
    -----
    The continuation is deterministic and costs about four products of the factors with an ``m × n`` matrix per
    sweep; its default effort depends on the shape only (:func:`continuation_effort`). On EfficientNet-Lite0's
    classifier and its largest 1×1 convolutions at a quarter of the weights it lowers the error of magnitude pruning
    from about 0.52 to 0.43–0.48 in 1.5–4 s of CPU; with the alternating polish of matrices up to about 800×800 it is
    below pyfaust's hierarchical factorization on Gaussian and power-law matrices at shares 0.1, 0.25 and 0.5
    (docs/benchmarks/fit-quality-sparse.md).

    References
    ----------
    L. Le Magoarou, R. Gribonval, "Flexible multilayer sparse approximations of matrices and applications",
    IEEE JSTSP 10(4):688–700, 2016, Algorithms 2 and 3.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((40, 40))
    >>> M = fit_sparse_product(W, 0.25)
    >>> M.nparams <= 400
    True
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    num_factors = check_positive_int(num_factors, "num_factors")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if mixing_side not in ("auto", "left", "right"):
        raise ValueError(f"mixing_side must be 'auto', 'left' or 'right'; got {mixing_side!r}")
    if max_iter is not None:
        max_iter = check_positive_int(max_iter, "max_iter")
    if ramp_rate is not None and not (0 < ramp_rate <= 1):
        raise ValueError(f"ramp_rate must be a float in (0, 1] or None; got {ramp_rate!r}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol must be a float >= 0 or None; got {tol!r}")
    if inputs is not None:
        stats = as_statistics(inputs, W.shape[1])
        plain = fit_sparse_product(W, limit, num_factors=num_factors, method=method, mixing_side=mixing_side,
                                   max_iter=max_iter, tol=tol, ramp_rate=ramp_rate, progress=progress)
        if plain.nparams == np.count_nonzero(W) and plain.num_factors == 1:
            return plain  # W itself fits in the budget
        sides = _mixing_sides(W.shape) if mixing_side == "auto" else [mixing_side]
        with blas_threads_for(W):
            return fit_product_to_outputs(OutputNorm(W, stats, ridge), limit, plain, num_factors=num_factors,
                                          sides=sides, effort=continuation_effort, stats=stats, progress=progress)
    pruned = SparseProduct([magnitude_prune(W, limit)])
    if num_factors == 1 or pruned.nparams == np.count_nonzero(W):
        return pruned  # pruning is exact (or one factor was asked for)
    norm_w = float(np.linalg.norm(W))
    candidates, errors = [pruned], [float(np.linalg.norm(W - pruned.to_dense()))]
    with blas_threads_for(W):
        lowrank = lowrank_product(W, limit, error_to_beat=errors[0] / norm_w)
        if lowrank is not None:
            candidates.append(lowrank)
            errors.append(float(np.linalg.norm(W - lowrank.to_dense())))
            if errors[-1] <= EXACT_ERROR * norm_w:
                return lowrank  # W is low rank: nothing can do better
        for M, error in _candidates(W, limit, num_factors, method, mixing_side, max_iter, tol, ramp_rate, progress,
                                    error_to_beat=min(errors) / norm_w):
            candidates.append(M)
            errors.append(float(np.linalg.norm(W - M.to_dense())) if error is None else error * norm_w)
    logger.debug("fit_sparse_product: errors %s (pruning, low rank if it could win, then the products)", errors)
    return candidates[int(np.argmin(errors))]


def polish_rounds(shape, d: int) -> int:
    """Rounds of :func:`~structmat.approximators._alternating.alternating_polish` the default fit affords for a
    matrix of ``shape`` with inner dimension ``d``: ``POLISH_WORK / (7 m n d)`` (a round costs about seven products
    of the factors with an ``m × n`` matrix), at most ``POLISH_ROUNDS``, none below ``MIN_POLISH_ROUNDS``.

    Examples
    --------
    >>> polish_rounds((256, 256), 256), polish_rounds((512, 512), 512), polish_rounds((1000, 1280), 1000)
    (40, 18, 0)
    """
    m, n = shape
    rounds = min(POLISH_ROUNDS, int(POLISH_WORK / (7.0 * m * n * d)))
    return rounds if rounds >= MIN_POLISH_ROUNDS else 0


def _faust_start_polished(W, limit, side, rounds, *, give_up_above=np.inf) -> tuple[SparseProduct, float]:
    """PALM4MSA from FAµST's start with half the budget in each factor (``FAUST_START_SWEEPS`` sweeps), then
    ``rounds`` rounds of the alternating polish; the product and its relative error."""
    m, n = W.shape
    d = m if side == "left" else n
    k_second = limit // 2
    cons = [Constraint("topk", (m, d), limit - k_second), Constraint("topk", (d, n), k_second)]
    start = _palm(W, _default_init(cons), cons, 1.0, FAUST_START_SWEEPS, 0.0, 0.0)
    factors, error = alternating_polish(W, [start.lam * start.factors[0], start.factors[1]],
                                        (limit - k_second, k_second), rounds=rounds,
                                        give_up_above=GIVE_UP_FACTOR * give_up_above)
    return SparseProduct(factors), error


def _candidates(W, limit, num_factors, method, mixing_side, max_iter, tol, ramp_rate, progress,
                error_to_beat=np.inf) -> list:
    """The products ``fit_sparse_product`` compares with pruning, as ``(matrix, relative error or None)``: the
    continuation's own error is reused for matrices of at least ``KNOWN_ERROR_MIN_SIZE`` entries (its float32
    sweeps measure it to about 1e-7), whose dense product would cost seconds."""
    candidates = []
    polished_faust_start = False
    if method != "continuation" or num_factors >= 3:
        max_iter = MAX_SWEEPS if max_iter is None else max_iter
        tol = TOL if tol is None else tol
    if num_factors >= 3 or method == "hierarchical":
        candidates.append((_hierarchical_geometric(W, limit, max(num_factors, 2), max_iter=max_iter, tol=tol), None))
    for side in (_mixing_sides(W.shape) if mixing_side == "auto" else [mixing_side]):
        if num_factors >= 3 or method == "hierarchical" or limit <= (W.shape[0] if side == "left" else W.shape[1]):
            continue  # no room for a mixing factor beyond the identity
        if method == "palm4msa":
            candidates.append((_palm_grid(W, limit, side, max_iter=max_iter, tol=tol, splits=PALM_SPLITS), None))
            continue
        M, errors = _continuation(W, limit, side, ramp_rate=ramp_rate, max_iter=max_iter, tol=tol, progress=progress)
        error = min(errors) if W.size >= KNOWN_ERROR_MIN_SIZE else None
        candidates.append((M, error))
        rounds = polish_rounds(W.shape, W.shape[0] if side == "left" else W.shape[1])
        if rounds and M.num_factors == 2:
            factors, error = alternating_polish(W, [f.toarray() for f in M.factors()], tuple(M.factor_nnz),
                                                rounds=rounds)
            candidates.append((SparseProduct(factors), error))
            if not polished_faust_start:
                candidates.append(_faust_start_polished(W, limit, side, rounds,
                                                        give_up_above=min(error_to_beat, error)))
                polished_faust_start = True
    return candidates
