"""Rank allocation for a fixed hierarchical partition: a multiple-choice knapsack over the leaves.

Leaves are disjoint and each leaf's truncated SVD is optimal for it (Eckart–Young), so the squared Frobenius error
of the whole approximation is ``Σ_b e_b(r_b)`` with ``e_b(r) = ‖W_b‖² − Σ_{i≤r} σ_{b,i}²``. A rank-one term in
leaf ``b`` costs ``w_b = m_b + n_b`` numbers; storing the leaf densely costs ``m_b n_b`` and leaves no error.
Choosing one option per leaf under a total budget is a multiple-choice knapsack.

``rule="ratio"`` (the default) solves it greedily by error reduction per parameter:

1. For each leaf, take the lower convex hull of its options ``{(r w_b, e_b(r)) : r w_b < m_b n_b}`` and the dense
   point ``(m_b n_b, 0)``. The dense jump can be steeper than the rank steps before it, which breaks concavity;
   the hull restores it.
2. Take hull segments in order of decreasing slope ``Δe / Δcost`` while they fit; a leaf whose next segment does
   not fit stops there.
3. Fill pass: add single steps (one more rank, or the dense jump once the next rank would cost as much as dense)
   that still fit, best ratio first.

The greedy solves the LP relaxation, so its error exceeds the optimum by at most the gain of the first segment
that did not fit (the LP bound of the multiple-choice knapsack: Sinha & Zoltners, "The multiple-choice knapsack
problem", Operations Research 27(3), 1979, §2). Without dense options it is the greedy by ``σ²/(m_b + n_b)``,
which is optimal whenever it uses the budget exactly.

``rule="absolute"`` is the rule of structurednets' hierarchical approximator (``find_best_leaf_approximation``,
MatthiasKi/structurednets): repeatedly add one rank to the leaf whose unsquared error ``√e_b`` drops most, with
no dense option and ranks up to ``min(m_b, n_b)``. It ignores that rank-one terms cost ``m_b + n_b``, which
differs by a factor ``2^ℓ`` across HODLR levels; it is kept for comparison.

Spectra may be *partial*: leaf ``b`` knows its top ``k_b`` squared singular values and its exact ``‖W_b‖²``. The
allocator never goes beyond ``k_b`` for such a leaf and reports the leaves that want more (:attr:`Allocation.short`),
so the caller can extend their spectra and allocate again.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LeafSpectrum", "Allocation", "allocate_ranks", "RULES"]

RULES = ("ratio", "absolute")


@dataclass
class LeafSpectrum:
    """What the allocator needs to know about one leaf.

    Attributes
    ----------
    rows, cols : int
        ``m_b`` and ``n_b``.
    norm2 : float
        ``‖W_b‖_F²``.
    sigma2 : ndarray of shape (k_b,)
        The leading squared singular values, non-increasing.
    complete : bool
        True when ``sigma2`` holds every singular value the leaf could use (up to the dense cut-off or the budget).
    """

    rows: int
    cols: int
    norm2: float
    sigma2: np.ndarray
    complete: bool
    _errors: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def weight(self) -> int:
        return self.rows + self.cols

    @property
    def dense_cost(self) -> int:
        return self.rows * self.cols

    @property
    def cheaper_rank(self) -> int:
        """The largest rank cheaper than dense, ``max{r : r (m_b + n_b) < m_b n_b}``."""
        return (self.dense_cost - 1) // self.weight

    def max_rank(self) -> int:
        """``cheaper_rank`` capped by the number of known singular values."""
        return int(min(self.cheaper_rank, len(self.sigma2)))

    def errors(self) -> np.ndarray:
        """``e_b(r)`` for ``r = 0..max_rank()``, clipped at 0 against rounding (computed once; do not modify)."""
        if self._errors is None:
            kept = np.concatenate([[0.0], np.cumsum(self.sigma2[: self.max_rank()])])
            self._errors = np.maximum(self.norm2 - kept, 0.0)
        return self._errors


@dataclass(frozen=True)
class Allocation:
    """The result: per-leaf ranks (``-1`` = dense), the parameters used, the squared error ``Σ_b e_b(r_b)``, and
    ``short``, the indices of leaves with a partial spectrum that the allocation would like to extend."""

    ranks: np.ndarray
    nparams: int
    error2: float
    short: tuple[int, ...]


def _hull_end(errors: np.ndarray, weight: int, dense_cost: int | None) -> int:
    """How many rank steps lie on the lower convex hull before the dense point.

    ``errors`` is convex (its decrements ``σ_i²`` do not increase), so every rank point is on the hull of the rank
    points alone, and the dense point ``(D, 0)`` removes a suffix of them: point ``i`` stays iff it lies strictly
    below the chord from point ``i − 1`` to the dense point, ``e_i (D − c_{i−1}) < e_{i−1} (D − c_i)``. (That is
    ``σ_i²/w > ρ_i`` with ``ρ_i = e_i/(D − c_i)`` the dense jump's slope from ``i``; since ``ρ_{i−1}`` is a mediant of
    the two, once it fails it fails for every later ``i``.)
    """
    steps = len(errors) - 1
    if dense_cost is None or steps == 0:
        return steps
    costs = np.arange(steps + 1, dtype=np.float64) * weight
    below = errors[1:] * (dense_cost - costs[:-1]) < errors[:-1] * (dense_cost - costs[1:])
    return steps if below.all() else int(np.argmin(below))


_STEP, _JUMP, _OFF_HULL = 0, 1, 2


def _allocate_ratio(leaves: list[LeafSpectrum], budget: int):
    count = len(leaves)
    weights = np.array([leaf.weight for leaf in leaves], dtype=np.int64)
    dense_costs = np.array([leaf.dense_cost for leaf in leaves], dtype=np.int64)
    errors = [leaf.errors()[: budget // leaf.weight + 1] for leaf in leaves]
    limits = np.array([len(e) - 1 for e in errors], dtype=np.int64)  # affordable known rank steps
    affordable = dense_costs <= budget
    ends = np.array([_hull_end(e, w, d if a else None) for e, w, d, a in zip(errors, weights, dense_costs, affordable)],
                    dtype=np.int64)  # rank steps on the hull
    # Items: the hull's rank steps (kind _STEP), its dense jump (_JUMP), and the rank steps past the hull
    # (_OFF_HULL), which become available only if the leaf's dense jump did not fit.
    steps = limits
    leaf_of = np.repeat(np.arange(count), steps)
    rank_of = np.arange(len(leaf_of)) - np.repeat(np.cumsum(steps) - steps, steps) + 1  # the rank a step reaches
    gain = np.concatenate([-np.diff(e) for e in errors]) if count else np.zeros(0)
    kind = np.where(rank_of <= ends[leaf_of], _STEP, _OFF_HULL)
    jump_leaf = np.flatnonzero(affordable)
    jump_gain = np.array([errors[b][ends[b]] for b in jump_leaf], dtype=np.float64)
    leaf_of = np.concatenate([leaf_of, jump_leaf])
    rank_of = np.concatenate([rank_of, ends[jump_leaf]])
    kind = np.concatenate([kind, np.full(len(jump_leaf), _JUMP)])
    cost = np.concatenate([weights[leaf_of[: len(gain)]], dense_costs[jump_leaf] - ends[jump_leaf] * weights[jump_leaf]])
    gain = np.concatenate([gain, jump_gain])
    keep = gain > 0
    leaf_of, rank_of, kind, cost, gain = leaf_of[keep], rank_of[keep], kind[keep], cost[keep], gain[keep]
    # Hull slopes do not increase within a leaf and off-hull steps are no steeper than the jump they replace, so
    # one global sort (ties: leaf, then rank, jump after the step that reaches the same rank) is the greedy order.
    order = np.lexsort((kind == _JUMP, rank_of, leaf_of, -gain / cost))
    leaf_of, kind, cost = leaf_of[order], kind[order], cost[order]
    taken = np.zeros(len(order), dtype=bool)
    # Up to the first miss every hull item is taken and every off-hull step skipped (its leaf went dense).
    on_hull = kind != _OFF_HULL
    total = np.cumsum(np.where(on_hull, cost, 0))
    first_miss = int(np.searchsorted(total, budget, side="right"))
    taken[:first_miss] = on_hull[:first_miss]
    used = int(total[first_miss - 1]) if first_miss else 0
    if first_miss < len(order):
        _greedy_tail(leaf_of, kind, cost, taken, first_miss, count, budget - used)
        used = int(cost[taken].sum())
    ranks = np.zeros(count, dtype=np.int64)
    np.add.at(ranks, leaf_of[taken & (kind != _JUMP)], 1)
    is_dense = np.zeros(count, dtype=bool)
    is_dense[leaf_of[taken & (kind == _JUMP)]] = True
    used = _fill(leaves, errors, limits, weights, dense_costs, ranks, is_dense, budget, used)
    error2 = float(sum(0.0 if is_dense[b] else errors[b][ranks[b]] for b in range(count)))
    return np.where(is_dense, -1, ranks), used, error2


def _greedy_tail(leaf_of, kind, cost, taken, start: int, count: int, remaining: int) -> None:
    """Continue the greedy after its first miss: a leaf whose rank step does not fit stops; a leaf whose dense
    jump does not fit continues with its off-hull rank steps (the jump precedes them in the order, so by the time
    one comes up, the jump was either taken and the leaf is skipped, or missed). Marks ``taken`` in place.

    The remaining budget only shrinks, so an item costing more than ``remaining`` never fits; only the others
    (usually few) go through the Python loop."""
    tail = np.arange(start, len(kind))
    big = cost[tail] > remaining
    big_steps = tail[big & (kind[tail] != _JUMP)]
    freeze_at = np.full(count, len(kind))
    np.minimum.at(freeze_at, leaf_of[big_steps], big_steps)
    jumped = np.zeros(count, dtype=bool)  # the leaf took its dense jump before the first miss
    jumped[leaf_of[:start][taken[:start] & (kind[:start] == _JUMP)]] = True
    stopped = np.zeros(count, dtype=bool)
    for p in tail[~big].tolist():
        b = leaf_of[p]
        if stopped[b] or jumped[b] or p > freeze_at[b]:
            continue
        if cost[p] > remaining:
            if kind[p] != _JUMP:
                stopped[b] = True
            continue
        taken[p] = True
        remaining -= int(cost[p])
        if kind[p] == _JUMP:
            jumped[b] = True


def _fill(leaves, errors, limits, weights, dense_costs, ranks, is_dense, budget: int, used: int) -> int:
    """Fill pass: single steps that still fit (one more rank, or the dense jump once the next rank would cost as
    much as dense), best error reduction per parameter first. Updates ``ranks`` and ``is_dense`` in place."""

    def step(b):
        r = ranks[b]
        if r < limits[b]:
            return errors[b][r] - errors[b][r + 1], int(weights[b])
        if r == leaves[b].cheaper_rank and dense_costs[b] <= budget:
            return errors[b][r], int(dense_costs[b] - r * weights[b])
        return 0.0, 0

    remaining = budget - used
    reachable = ~is_dense & ((weights <= remaining) | (dense_costs - ranks * weights <= remaining))
    heap = []
    for b in np.flatnonzero(reachable).tolist():
        gain, cost = step(b)
        if gain > 0 and cost <= remaining:
            heap.append((-gain / cost, b))
    heapq.heapify(heap)
    while heap:
        _, b = heapq.heappop(heap)
        gain, cost = step(b)
        if used + cost > budget:
            continue
        used += cost
        if ranks[b] < limits[b]:
            ranks[b] += 1
        else:
            is_dense[b] = True
            continue
        gain, cost = step(b)
        if gain > 0 and used + cost <= budget:
            heapq.heappush(heap, (-gain / cost, b))
    return used


def _allocate_absolute(leaves: list[LeafSpectrum], budget: int):
    ranks = np.zeros(len(leaves), dtype=np.int64)
    errors = [_absolute_errors(leaf) for leaf in leaves]
    used = 0
    heap = []

    def push(b):
        r, e = ranks[b], errors[b]
        if r + 1 < len(e):
            drop = np.sqrt(e[r]) - np.sqrt(e[r + 1])
            if drop > 0:
                heapq.heappush(heap, (-drop, b))

    for b in range(len(leaves)):
        push(b)
    while heap:
        _, b = heapq.heappop(heap)
        if used + leaves[b].weight <= budget:
            used += leaves[b].weight
            ranks[b] += 1
            push(b)
    error2 = float(sum(errors[b][ranks[b]] for b in range(len(leaves))))
    return ranks, used, error2


def _absolute_errors(leaf: LeafSpectrum) -> np.ndarray:
    """``e_b(r)`` for ``r = 0..min(k_b, m_b, n_b)``: the reference rule lets ranks run past the dense cut-off."""
    kept = np.concatenate([[0.0], np.cumsum(leaf.sigma2[: min(leaf.rows, leaf.cols)])])
    return np.maximum(leaf.norm2 - kept, 0.0)


def allocate_ranks(leaves: list[LeafSpectrum], budget: int, rule: str = "ratio") -> Allocation:
    """Choose a rank or dense storage per leaf with ``Σ cost <= budget`` and a small ``Σ_b e_b(r_b)``.

    Parameters
    ----------
    leaves : list of LeafSpectrum
    budget : int
        Numbers available for all leaves together.
    rule : {"ratio", "absolute"}
        See the module docstring.

    Returns
    -------
    Allocation

    Examples
    --------
    Two leaves of the same rank-one-term cost 10: the greedy takes the three largest σ² overall.

    >>> a = LeafSpectrum(5, 5, 14.0, np.array([9.0, 4.0, 1.0]), True)
    >>> b = LeafSpectrum(5, 5, 7.0, np.array([5.0, 2.0]), True)
    >>> allocate_ranks([a, b], 30)
    Allocation(ranks=array([2, 1]), nparams=30, error2=3.0, short=())
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    if rule == "ratio":
        ranks, used, error2 = _allocate_ratio(leaves, budget)
    else:
        ranks, used, error2 = _allocate_absolute(leaves, budget)
    short = tuple(b for b, leaf in enumerate(leaves)
                  if not leaf.complete and (ranks[b] < 0 or ranks[b] >= len(leaf.sigma2)))
    return Allocation(ranks, int(used), error2, short)
