"""Products of sparse factors under a non-zero budget, and plain magnitude sparsity.

``fit_sparse(W, budget)`` keeps the ``budget`` largest entries: the best ``k``-sparse approximation.

``fit_sparse_product(W, budget)`` fits ``W ≈ S_1 S_2`` (or more factors) with ``Σ nnz(S_j) <= budget``. Its default
method is a *budget-split continuation* of PALM4MSA (Le Magoarou & Gribonval 2016, Algorithm 2), written for this
library: it starts from magnitude pruning written as a product, ``W ≈ I · top_k(W)`` (a "mixing" factor equal to the
identity on the larger side, the other factor the pruned ``W``), then moves non-zeros from the pruned factor to the
mixing factor a few at a time, one PALM4MSA sweep per step, while the error falls. It keeps the best state met, goes
back to it when the error has clearly risen past its minimum, and polishes it with PALM4MSA at that split. The
split of the budget between the factors is thereby chosen by the path itself, and the result is never worse than
pruning to ``budget − d`` entries (the start). How slowly it moves and how long it polishes (its *effort*) follows
the cost of a sweep, about ``m·n·d`` multiply-adds: small matrices, whose sweeps take milliseconds, get a slow ramp
and a tight stopping rule, large ones the fast settings (:func:`continuation_effort`). ``method="palm4msa"``
instead runs PALM4MSA from FAµST's start for each split of a grid (the peer library's linear split shares) and keeps
the best; ``method="hierarchical"`` runs the hierarchical variant (Algorithm 3) with a geometric residual schedule.

All three are deterministic: they use no random numbers.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.palm4msa import (Constraint, _default_init, _palm, _PalmState, blas_threads_for,
                                              hierarchical)
from structmat.matrices.sparse_product import Sparse, SparseProduct

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
#: The continuation turns back once the error is this much (relatively) above the best seen.
RISE_TOLERANCE = 0.002
#: The continuation's sweeps run in float32 for matrices with at least this many entries (about twice as fast;
#: the errors that steer it are ~0.1-1, far above float32 rounding). The scale and the result are float64.
FLOAT32_MIN_SIZE = 2**16
#: While the best state is still the start (pruning), the error may first rise as the mixing factor fills; the
#: continuation gives up only if it rises this much.
GIVE_UP_RISE = 0.05
#: Split shares of the first factor tried by ``method="palm4msa"`` (the peer tries linspace(0.1, 0.9, 17)).
PALM_SPLITS = tuple(np.round(np.linspace(0.1, 0.9, 9), 2))


def magnitude_prune(W: np.ndarray, k: int) -> np.ndarray:
    """``W`` with all but its ``k`` largest-magnitude entries set to zero (ties: earliest position first)."""
    if k >= W.size:
        return W.copy()
    return np.where(Constraint("topk", W.shape, k).mask(W), W, 0.0)


@guarded_fit
def fit_sparse(W, budget) -> Sparse:
    """Magnitude sparsity: the ``budget`` largest entries of ``W`` (the best approximation with that many
    non-zeros in Frobenius norm).

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Non-zeros kept (a share of ``m · n`` for a float).

    Returns
    -------
    Sparse
        ``nparams = min(budget, nnz(W))``; exact zeros of ``W`` are not stored.

    Examples
    --------
    >>> import numpy as np
    >>> fit_sparse(np.array([[3.0, -1.0], [0.5, -4.0]]), 2).to_dense()
    array([[ 3.,  0.],
           [ 0., -4.]])
    """
    W = check_weight(W)
    return Sparse(magnitude_prune(W, resolve_budget(budget, W.shape)))


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
    ``MAX_SWEEPS · 0.015 / ramp_rate``, so a slower ramp is not cut short. The rule depends on the shape only, so
    fits stay deterministic; it spends about half a second of CPU on a 256×256 matrix and leaves the 2-5 s fits of
    EfficientNet-Lite0's largest matrices as they were.

    Examples
    --------
    >>> continuation_effort((256, 256), 256)
    (0.004, 0.0001, 562)
    >>> continuation_effort((1000, 1280), 1000)
    (0.015, 0.002, 150)
    """
    m, n = shape
    work = float(m) * float(n) * float(d)
    t = min(1.0, max(0.0, math.log(work / THOROUGH_WORK) / math.log(FAST_WORK / THOROUGH_WORK)))
    ramp_rate = THOROUGH_RAMP_RATE * (RAMP_RATE / THOROUGH_RAMP_RATE) ** t
    tol = THOROUGH_TOL * (TOL / THOROUGH_TOL) ** t
    return float(f"{ramp_rate:.3g}"), float(f"{tol:.3g}"), int(MAX_SWEEPS * RAMP_RATE / ramp_rate)


def _continuation(W, limit, side, *, ramp_rate, max_iter, tol, progress) -> tuple[SparseProduct, list]:
    """The budget-split continuation (module docstring) for two factors; returns the matrix and errors. ``None``
    options take their value from :func:`continuation_effort`."""
    m, n = W.shape
    d = m if side == "left" else n
    auto_ramp, auto_tol, auto_iter = continuation_effort((m, n), d)
    ramp_rate = auto_ramp if ramp_rate is None else ramp_rate
    tol = auto_tol if tol is None else tol
    max_iter = auto_iter if max_iter is None else max_iter
    big_shape, mix_shape = (m, n), (d, d)

    def constraints(k_mix):
        mix, big = Constraint("topk", mix_shape, k_mix), Constraint("topk", big_shape, limit - k_mix)
        return [mix, big] if side == "left" else [big, mix]

    dtype = np.float32 if W.size >= FLOAT32_MIN_SIZE else np.float64
    W_fit = W.astype(dtype)
    pruned = magnitude_prune(W_fit, limit - d)
    scale = float(np.linalg.norm(pruned))
    factors = [np.eye(d, dtype=dtype) / math.sqrt(d), pruned / scale]
    if side == "right":
        factors.reverse()
    state = _PalmState(W_fit, factors, scale * math.sqrt(d))
    state.full = pruned / (scale * math.sqrt(d))
    # the step is a share of the budget, capped at its value for a quarter of the weights: larger steps made the
    # error climb too far before the mixing factor paid off (the classifier at share 0.5)
    k_mix, step = d, max(1, math.ceil(ramp_rate * min(limit, W.size // 4)))
    k_cap = min(d * d, limit - 1)
    best = (state.error(), list(state.factors), state.lam, k_mix)
    errors = [best[0]]
    ramping = True
    bar = tqdm(total=max_iter, desc="fit_sparse_product", disable=not progress)
    for sweep in range(max_iter):
        if ramping:
            k_mix = min(k_mix + step, k_cap)
        error = state.sweep(constraints(k_mix))
        errors.append(error)
        bar.update(1)
        if error < best[0]:
            improvement = best[0] - error
            best = (error, list(state.factors), state.lam, k_mix)  # factors are replaced, never modified
            if not ramping and improvement <= tol * errors[-2]:
                break
        elif ramping and (k_mix == k_cap or (best[3] > d and error > best[0] * (1 + RISE_TOLERANCE))
                          or (best[3] == d and error > best[0] * (1 + GIVE_UP_RISE))):
            ramping = False
            state = _PalmState(W_fit, list(best[1]), best[2])
            k_mix = best[3]
            logger.debug("continuation: turning back at sweep %d to k_mix=%d (error %.6g)", sweep, k_mix, best[0])
        elif not ramping:
            break
    bar.close()
    error, factors, lam, k_mix = best
    logger.debug("continuation: side=%s d=%d k_mix=%d k_other=%d error=%.6g after %d sweeps (%s)",
                 side, d, k_mix, limit - k_mix, error, len(errors) - 1, np.dtype(dtype).name)
    first, second = (f.astype(np.float64) for f in factors)
    product = first @ second
    norm = float(np.vdot(product, product))
    lam = float(np.vdot(W, product)) / norm if norm > 0 else 0.0  # the optimal scale, in float64
    return SparseProduct([lam * first, second]), errors


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
def fit_sparse_product(W, budget, *, num_factors: int = 2, method: str = "continuation", mixing_side: str = "auto",
                       max_iter: int | None = None, tol: float | None = None, ramp_rate: float | None = None,
                       progress: bool = False) -> SparseProduct:
    """Fit ``W ≈ S_1 ⋯ S_J`` with ``Σ_j nnz(S_j) <= budget``; the best of that and magnitude pruning.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Total non-zeros (a share of ``m · n`` for a float).
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
    from about 0.52 to 0.44–0.48 in 1.5–4 s of CPU; on a Gaussian 256×256 matrix it is below pyfaust's hierarchical
    factorization at shares 0.1, 0.25 and 0.5 (see README, issue 8).

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
    pruned = SparseProduct([magnitude_prune(W, limit)])
    if num_factors == 1 or pruned.nparams == np.count_nonzero(W):
        return pruned  # pruning is exact (or one factor was asked for)
    with blas_threads_for(W):
        candidates = [pruned] + _candidates(W, limit, num_factors, method, mixing_side, max_iter, tol, ramp_rate,
                                            progress)
    errors = [float(np.linalg.norm(W - M.to_dense())) for M in candidates]
    logger.debug("fit_sparse_product: errors %s (pruning first)", errors)
    return candidates[int(np.argmin(errors))]


def _candidates(W, limit, num_factors, method, mixing_side, max_iter, tol, ramp_rate, progress) -> list:
    """The products ``fit_sparse_product`` compares with pruning."""
    candidates = []
    if method != "continuation" or num_factors >= 3:
        max_iter = MAX_SWEEPS if max_iter is None else max_iter
        tol = TOL if tol is None else tol
    if num_factors >= 3 or method == "hierarchical":
        candidates.append(_hierarchical_geometric(W, limit, max(num_factors, 2), max_iter=max_iter, tol=tol))
    for side in (_mixing_sides(W.shape) if mixing_side == "auto" else [mixing_side]):
        if num_factors >= 3 or method == "hierarchical" or limit <= (W.shape[0] if side == "left" else W.shape[1]):
            continue  # no room for a mixing factor beyond the identity
        if method == "palm4msa":
            candidates.append(_palm_grid(W, limit, side, max_iter=max_iter, tol=tol, splits=PALM_SPLITS))
        else:
            candidates.append(_continuation(W, limit, side, ramp_rate=ramp_rate, max_iter=max_iter, tol=tol,
                                            progress=progress)[0])
    return candidates
