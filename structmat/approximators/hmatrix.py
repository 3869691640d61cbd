"""Fit hierarchical matrices (HODLR, HEDLR, η-admissible H) to a dense W under a parameter budget.

For a fixed partition the squared error is ``Σ_b Σ_{i>r_b} σ_{b,i}²`` (leaves are disjoint, and the truncated SVD
is optimal per leaf), so fitting is a rank allocation (:mod:`structmat.approximators.hmatrix_allocation`) over
singular values computed once per leaf: an exact SVD for small leaves, a randomized SVD (Halko, Martinsson &
Tropp, SIAM Review 53(2), 2011, Algorithms 4.4 and 5.1) of just the leading part for large ones. A randomized leaf
truncates ``QQᵀW_b``, so the allocator's error is still the exact error of the result. Leaves whose allocated
rank reaches the computed part get more singular values and the allocation is repeated.

Each ``fit_*`` searches a small grid of partitions (depth, or η and minimum block size) and optionally row and
column orderings (:mod:`structmat.approximators.ordering`), and returns the candidate with the smallest error.
Depth 0 is a single leaf, i.e. plain low rank (or dense), so the search never loses to low rank.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators._hmatrix_spectra import LeafSpectra
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.hmatrix_allocation import RULES, Allocation, allocate_ranks
from structmat.approximators.ordering import ORDERINGS, order_rows_and_columns
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.matrices.hmatrix_partition import blocks_for, check_eta, max_depth
from structmat.matrices.permutation import permute

__all__ = ["fit_hodlr", "fit_hedlr", "fit_hmatrix", "fit_partitions", "default_min_block", "DEFAULT_ETAS",
           "DEFAULT_MIN_BLOCKS"]

logger = logging.getLogger(__name__)

DEFAULT_ETAS = (0.5, 1.0)
#: Default smallest cluster: ``max(8, min(m, n) // 64)``, i.e. at most 64 clusters per side (depth <= 6). Finer
#: partitions store a 6-number table entry per leaf and pay per-leaf overhead in every product: a 4096×4096
#: Gaussian fitted down to 8×8 leaves (262 144 of them) ran its C product 4× slower than dense.
MIN_BLOCK_FLOOR = 8
MAX_CLUSTERS_PER_SIDE = 64
#: fit_hmatrix's default minimum block sizes, as multiples of the default smallest cluster.
DEFAULT_MIN_BLOCKS = (1, 2, 4)


def default_min_block(m: int, n: int) -> int:
    """``max(8, min(m, n) // 64)``: the smallest cluster the default searches go down to."""
    return max(MIN_BLOCK_FLOOR, min(m, n) // MAX_CLUSTERS_PER_SIDE)


DEFAULT_ORDERING = "auto"
#: ``ordering="auto"`` tries the natural order and spectral co-bisection up to this many entries, else natural only.
AUTO_ORDERING_MAX_ENTRIES = 2**21
AUTO_ORDERINGS = ("none", "bisection")
#: Polishing (exact SVDs for the best candidates' randomized leaves): how many, how close to the best, how costly.
POLISH_MAX_CANDIDATES = 2
POLISH_TOLERANCE = 0.02
POLISH_MAX_WORK = 2.5e9


@dataclass(frozen=True)
class _Candidate:
    """One partition (with one ordering) and its allocation."""

    ordering: str
    partition: dict
    boxes: np.ndarray
    allocation: Allocation


def _smallest_leaf_cost(boxes: np.ndarray) -> int:
    mb, nb = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    return int(np.minimum(mb + nb, mb * nb).min())


def _check_options(power_iterations, oversamples, allocation, ordering, size: int) -> tuple[str, ...]:
    check_positive_int(power_iterations, "power_iterations", minimum=0)
    check_positive_int(oversamples, "oversamples", minimum=0)
    if allocation not in RULES:
        raise ValueError(f"allocation must be one of {RULES}; got {allocation!r}")
    if isinstance(ordering, str) and ordering == "auto":
        return AUTO_ORDERINGS if size <= AUTO_ORDERING_MAX_ENTRIES else ("none",)
    orderings = (ordering,) if isinstance(ordering, str) else tuple(ordering)
    if not orderings or any(o not in ORDERINGS for o in orderings):
        raise ValueError(f"ordering must be 'auto', one of {ORDERINGS} or a sequence of them; got {ordering!r}")
    return tuple(dict.fromkeys(orderings))


def fit_partitions(W, budget, partitions, matrix_class, *, ordering=DEFAULT_ORDERING, allocation: str = "ratio",
                   power_iterations: int = 4, oversamples: int = 10, min_block: int = MIN_BLOCK_FLOOR,
                   seed=0, progress: bool = False, family_name: str = "hierarchical") -> HMatrix:
    """Fit ``W`` with each partition record in ``partitions`` (and each ordering) and return the best.

    This is the engine behind :func:`fit_hodlr`, :func:`fit_hedlr` and :func:`fit_hmatrix`; see them for the
    parameters. ``partitions`` is a sequence of records accepted by
    :func:`~structmat.matrices.hmatrix_partition.blocks_for`.
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    orderings = _check_options(power_iterations, oversamples, allocation, ordering, W.size)
    m, n = W.shape
    seed_base = int(np.random.default_rng(seed).integers(2**31))
    total2 = max(float(np.einsum("ij,ij->", W, W)), np.finfo(float).tiny)
    floor = None
    candidates: list[_Candidate] = []
    spectra: dict[str, LeafSpectra] = {}
    orders: dict[str, tuple] = {}
    jobs = [(o, p) for o in orderings for p in partitions]
    for ordering_name, partition in tqdm(jobs, desc=f"fit {family_name}", disable=not progress):
        boxes = blocks_for(m, n, partition)[:, :4]
        cost = _smallest_leaf_cost(boxes)
        floor = cost if floor is None else min(floor, cost)
        if cost > limit:
            logger.debug("%s %s: smallest leaf option costs %d > budget %d", family_name, partition, cost, limit)
            continue
        if len(boxes) == 1 and ordering_name != orderings[0]:
            continue  # one leaf (plain low rank): a permutation changes nothing, fit it once
        if ordering_name not in spectra:
            rows, cols = order_rows_and_columns(W, ordering_name, min_size=min_block, seed=seed)
            orders[ordering_name] = (rows, cols)
            spectra[ordering_name] = LeafSpectra(permute(W, rows, cols), limit, power_iterations=power_iterations,
                                              oversamples=oversamples, seed_base=seed_base)
        alloc = _allocate(spectra[ordering_name], boxes, limit, allocation)
        candidates.append(_Candidate(ordering_name, dict(partition), boxes, alloc))
        logger.debug("%s ordering=%s %s: leaves=%d nparams=%d relative error %.5f", family_name, ordering_name,
                     partition, len(boxes), alloc.nparams, math.sqrt(alloc.error2 / total2))
    if not candidates:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest {family_name} matrix for shape "
            f"({m}, {n}): {floor} parameters (one rank-one term or one dense block in the smallest leaf)"
        )
    candidates = _polish(candidates, spectra, limit, allocation)
    best = min(candidates, key=lambda c: (c.allocation.error2, c.allocation.nparams))
    logger.debug("%s: best %s ordering=%s; SVD time %.2f s", family_name, best.partition, best.ordering,
                 sum(s.svd_seconds for s in spectra.values()))
    return _build(matrix_class, W.shape, best, spectra[best.ordering], orders[best.ordering])


def _allocate(cache: LeafSpectra, boxes: np.ndarray, limit: int, rule: str) -> Allocation:
    """Allocate, extending the spectra of leaves that want more singular values than are known, until none do."""
    cache.prefetch(boxes)
    while True:
        alloc = allocate_ranks([cache.spectrum(box) for box in boxes], limit, rule)
        if not alloc.short:
            return alloc
        for b in alloc.short:
            cache.extend(boxes[b])


def _polish(candidates: list[_Candidate], spectra: dict, limit: int, rule: str) -> list[_Candidate]:
    """Redo the best few candidates with exact SVDs of their randomized leaves, when that is affordable.

    The randomized SVD loses a little on the flat spectra of trained weights (0.3% relative error on
    EfficientNet-Lite0's classifier at 4 power iterations), which would let low rank's exact SVD beat the search's
    own depth-0 candidate. Candidates within ``POLISH_TOLERANCE`` of the best squared error are recomputed, as long as
    their leaves' exact SVDs cost at most ``POLISH_MAX_WORK`` (``Σ m_b n_b min(m_b, n_b)``) in total.
    """
    best = min(c.allocation.error2 for c in candidates)
    ranked = sorted(candidates, key=lambda c: c.allocation.error2)[:POLISH_MAX_CANDIDATES]
    out = [c for c in candidates if c not in ranked]
    for c in ranked:
        cache = spectra[c.ordering]
        rough = [box for box in c.boxes.tolist() if not cache.leaf(box).exact]
        work = sum((r1 - r0) * (c1 - c0) * min(r1 - r0, c1 - c0) for r0, r1, c0, c1 in rough)
        if rough and c.allocation.error2 <= best * (1 + POLISH_TOLERANCE) and work <= POLISH_MAX_WORK:
            for box in rough:
                cache.make_exact(box)
            c = _Candidate(c.ordering, c.partition, c.boxes, _allocate(cache, c.boxes, limit, rule))
        out.append(c)
    return out


def _build(matrix_class, shape, candidate: _Candidate, cache: LeafSpectra, order) -> HMatrix:
    blocks = []
    for box, rank in zip(candidate.boxes.tolist(), candidate.allocation.ranks.tolist()):
        r0, r1, c0, c1 = box
        if rank < 0:
            blocks.append((box, cache.W[r0:r1, c0:c1]))
        else:
            svd = cache.leaf(box)
            root = np.sqrt(svd.s[:rank])
            blocks.append((box, (svd.U[:, :rank] * root, svd.Vt[:rank].T * root)))
    rows, cols = order
    return matrix_class.from_blocks(shape, blocks, row_order=rows, col_order=cols, partition=candidate.partition,
                                    dtype=np.float64)


def _depths(depth, m: int, n: int, min_block: int) -> list[int]:
    limit = max_depth(m, n, 1)
    if depth is None:
        return list(range(max_depth(m, n, min_block) + 1))
    values = [depth] if not isinstance(depth, (list, tuple, range, np.ndarray)) else list(depth)
    out = []
    for d in values:
        d = check_positive_int(d, "depth", minimum=0)
        if d > limit:
            raise ValueError(f"depth must be in [0, {limit}] for shape ({m}, {n}); got {d}")
        out.append(d)
    if not out:
        raise ValueError("depth must be None, an int or a non-empty sequence of ints")
    return out


_COMMON_DOC = """
    ordering : str or sequence of str
        Row/column orderings to try before laying the partition over ``W`` (``"none"``, ``"spectral"``,
        ``"bisection"``, ``"principal"``, ``"kmeans"``; see :mod:`structmat.approximators.ordering`); the result
        stores the winning permutations. A sequence tries each and keeps the best. ``"auto"`` (default) tries
        ``"none"`` and ``"bisection"`` for matrices of up to ``AUTO_ORDERING_MAX_ENTRIES`` (2^21) entries and
        ``"none"`` alone beyond: on EfficientNet-Lite0's 1×1 convolutions co-bisection lowered the error at every
        share (0.632 to 0.608 for HODLR on the 320×1152 projection at 0.5), and it never lost.
    allocation : {"ratio", "absolute"}
        Rank allocation rule: error reduction per parameter with dense leaves (default), or the absolute-error
        rule of structurednets, kept for comparison (:mod:`structmat.approximators.hmatrix_allocation`).
    power_iterations, oversamples : int
        Randomized SVD settings for leaves larger than 96 on both sides (smaller ones get exact SVDs).
    seed : int or None
        Seeds the randomized SVDs and orderings (default 0): the same seed gives the same result, byte for byte;
        None draws fresh randomness on every call.
    progress : bool
        Show a progress bar over the candidate partitions.
"""

_RAISES_DOC = """    Raises
    ------
    ValueError
        when the budget is below the smallest candidate (one rank-one term or one dense block in the cheapest leaf;
        the message names it), or for bad ``W``, budgets or options.
"""


@guarded_fit
def fit_hodlr(W, budget, *, depth=None, min_block=None, ordering=DEFAULT_ORDERING,
              allocation: str = "ratio", power_iterations: int = 4, oversamples: int = 10, seed=0,
              progress: bool = False) -> HODLRMatrix:
    """Best HODLR (hierarchically off-diagonal low-rank) approximation with at most ``budget`` parameters.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``.
    depth : int, sequence of int, or None
        Depths to try; None tries ``0 .. max_depth(m, n, min_block)`` (depth 0 is plain low rank).
    min_block : int or None
        With ``depth=None``, the smallest cluster size of the deepest partition tried (None:
        :func:`default_min_block`, ``max(8, min(m, n) // 64)``).
    {common}
    Returns
    -------
    HODLRMatrix
    {raises}
    Notes
    -----
    Leaves of depth L: ``2^L`` diagonal blocks and ``2^ℓ`` off-diagonal blocks at each level ``ℓ = 1..L``. With a
    dense diagonal and rank ``r`` off the diagonal, ``nparams = mn/2^L + r L (m + n)``. Every leaf may be dense or
    low rank, as the allocation decides.

    References
    ----------
    Hackbusch, Khoromskij & Kriemann, "Hierarchical matrices based on a weak admissibility criterion",
    Computing 73(3), 2004.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> M = fit_hodlr(W, 0.75, seed=0)
    >>> M.nparams <= 36
    True
    """
    W = check_weight(W)
    min_block = default_min_block(*W.shape) if min_block is None else check_positive_int(min_block, "min_block")
    partitions = [{"kind": "hodlr", "depth": d} for d in _depths(depth, *W.shape, min_block)]
    return fit_partitions(W, budget, partitions, HODLRMatrix, ordering=ordering, allocation=allocation,
                          power_iterations=power_iterations, oversamples=oversamples, min_block=min_block,
                          seed=seed, progress=progress, family_name="HODLR")


@guarded_fit
def fit_hedlr(W, budget, *, depth=None, min_block=None, ordering=DEFAULT_ORDERING,
              allocation: str = "ratio", power_iterations: int = 4, oversamples: int = 10, seed=0,
              progress: bool = False) -> HEDLRMatrix:
    """Best HEDLR (uniform ``2^L × 2^L`` grid of low-rank blocks, i.e. block low rank) approximation.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
    budget : int >= 1 or float in (0, 1]
    depth : int, sequence of int, or None
        Grid depths to try; None tries ``0 .. max_depth(m, n, min_block)``.
    min_block : int or None
        With ``depth=None``, the smallest cluster size of the finest grid tried (None: :func:`default_min_block`).
    {common}
    Returns
    -------
    HEDLRMatrix
    {raises}
    Notes
    -----
    With uniform rank r, ``nparams = 2^L r (m + n)``. When all leaves have the same shape, every rank-one term
    costs the same and the greedy allocation is exactly optimal.

    References
    ----------
    Amestoy et al., "Improving multifrontal methods by means of block low-rank representations", SIAM J. Sci.
    Comput. 37(3), 2015.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> fit_hedlr(W, 0.75, seed=0).nparams <= 36
    True
    """
    W = check_weight(W)
    min_block = default_min_block(*W.shape) if min_block is None else check_positive_int(min_block, "min_block")
    partitions = [{"kind": "hedlr", "depth": d} for d in _depths(depth, *W.shape, min_block)]
    return fit_partitions(W, budget, partitions, HEDLRMatrix, ordering=ordering, allocation=allocation,
                          power_iterations=power_iterations, oversamples=oversamples, min_block=min_block,
                          seed=seed, progress=progress, family_name="HEDLR")


@guarded_fit
def fit_hmatrix(W, budget, *, eta=None, min_block=None, ordering=DEFAULT_ORDERING, allocation: str = "ratio",
                power_iterations: int = 4, oversamples: int = 10, seed=0, progress: bool = False) -> HMatrix:
    """Best H-matrix approximation on the η-admissible partition, searching η and the minimum block size.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
    budget : int >= 1 or float in (0, 1]
    eta : float, sequence of float, or None
        Admissibility parameters to try (None: ``DEFAULT_ETAS`` = 0.5, 1). Every η >= 1 gives the same partition.
    min_block : int, sequence of int, or None
        Minimum block sizes to try (None: 1, 2 and 4 times :func:`default_min_block` — 8, 16, 32 up to
        1024×1024 — and the whole matrix as one leaf, so that low rank is a candidate too).
    {common}
    Returns
    -------
    HMatrix
    {raises}
    Notes
    -----
    A block (τ, σ) is admissible iff ``min(diam X_τ, diam Y_σ) <= η · dist(X_τ, Y_σ)`` in normalized coordinates
    (:mod:`structmat.matrices.hmatrix_partition`); inadmissible blocks are split while both sides exceed
    ``min_block``. Admissible leaves are meant to be low rank and small inadmissible ones dense, but the
    allocation decides each leaf.

    References
    ----------
    W. Hackbusch, "Hierarchical Matrices: Algorithms and Analysis", Springer 2015, §5.2 (admissibility) and §6.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((40, 30))
    >>> fit_hmatrix(W, 0.5, seed=0).nparams <= 600
    True
    """
    W = check_weight(W)
    m, n = W.shape
    etas = DEFAULT_ETAS if eta is None else ((eta,) if not isinstance(eta, (list, tuple, np.ndarray)) else eta)
    etas = [check_eta(e) for e in etas]
    if min_block is None:
        sizes = [factor * default_min_block(m, n) for factor in DEFAULT_MIN_BLOCKS] + [max(m, n)]
    else:
        sizes = [min_block] if not isinstance(min_block, (list, tuple, range, np.ndarray)) else list(min_block)
        sizes = [check_positive_int(b, "min_block") for b in sizes]
    partitions, seen = [], set()
    for b in sizes:
        for e in etas:
            boxes = blocks_for(m, n, {"kind": "eta", "eta": e, "min_block": b})
            key = boxes.tobytes()
            if key not in seen:  # distinct (η, min_block) pairs often give the same leaves; fit each once
                seen.add(key)
                partitions.append({"kind": "eta", "eta": e, "min_block": b})
    return fit_partitions(W, budget, partitions, HMatrix, ordering=ordering, allocation=allocation,
                          power_iterations=power_iterations, oversamples=oversamples, min_block=min(sizes),
                          seed=seed, progress=progress, family_name="H-matrix")


for _fit in (fit_hodlr, fit_hedlr, fit_hmatrix):
    _fit.__doc__ = (_fit.__doc__.replace("    {common}\n", _COMMON_DOC.lstrip("\n"))
                    .replace("    {raises}", "\n" + _RAISES_DOC))
del _fit
