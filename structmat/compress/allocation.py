"""One budget across layers and families: pick one point per layer so that the summed weighted error is smallest.

Each layer ``l`` offers points ``p`` (a family at a budget, or the dense layer) with a cost ``c_lp`` (parameters or
bytes) and a loss ``w_l e_lp²`` (the squared relative output error ``e`` weighted by ``w_l``). The global
allocation solves the multiple-choice knapsack

.. math::

    \\min_{p_l} \\sum_l w_l e_{l p_l}^2 \\quad \\text{subject to} \\quad \\sum_l c_{l p_l} \\le B

by its Lagrangian relaxation — for a multiplier ``λ`` every layer independently takes
``argmin_p w_l e_lp² + λ c_lp``, and a bisection finds the smallest ``λ`` whose choice fits ``B`` (Everett,
"Generalized Lagrange multiplier method", Operations Research 11(3), 1963; the same rate-distortion allocation as
Shoham & Gersho, IEEE Trans. ASSP 36(9), 1988) — then spends what is left greedily, one upgrade at a time, the one
with the largest loss decrease per added cost that still fits. The relaxation's choice is optimal for the budget
it uses; the greedy pass closes most of the gap to ``B``.

The uniform allocation, the baseline, gives every layer the same family at the same share.
"""

from __future__ import annotations

import numpy as np

__all__ = ["allocate_global", "AllocationError"]


class AllocationError(ValueError):
    """The budget is below the cheapest choice of every layer."""


def _choose(costs, losses, lam: float) -> list[int]:
    return [int(np.lexsort((c, l + lam * c))[0]) for c, l in zip(costs, losses)]


def _total(costs, choice) -> float:
    return float(sum(c[i] for c, i in zip(costs, choice)))


def allocate_global(costs: list, losses: list, budget: float, *, iterations: int = 200) -> list[int]:
    """Indices of the chosen point per layer (see the module docstring).

    Parameters
    ----------
    costs, losses : list of 1-D arrays, one per layer
        Each layer's points: cost and weighted loss.
    budget : float
        The total cost allowed.

    Raises
    ------
    AllocationError
        if even the cheapest point of every layer exceeds ``budget`` (the message gives that minimum).
    """
    costs = [np.asarray(c, dtype=np.float64) for c in costs]
    losses = [np.asarray(l, dtype=np.float64) for l in losses]
    cheapest = sum(float(c.min()) for c in costs)
    if cheapest > budget:
        raise AllocationError(f"the budget {budget:.6g} is below the cheapest choice of every layer "
                              f"({cheapest:.6g}: each layer at its smallest fitted point)")
    choice = _choose(costs, losses, 0.0)
    if _total(costs, choice) > budget:
        low, high = 0.0, 1e-12
        while _total(costs, _choose(costs, losses, high)) > budget and high < 1e300:
            high *= 4.0
        for _ in range(iterations):
            mid = 0.5 * (low + high)
            if _total(costs, _choose(costs, losses, mid)) > budget:
                low = mid
            else:
                high = mid
            if high - low <= 1e-12 * high:
                break
        choice = _choose(costs, losses, high)
        if _total(costs, choice) > budget:  # degenerate ties: fall back on the cheapest points
            choice = [int(np.lexsort((l, c))[0]) for c, l in zip(costs, losses)]
    return _spend_rest(costs, losses, choice, budget)


def _spend_rest(costs, losses, choice: list[int], budget: float) -> list[int]:
    """Greedy upgrades with the best loss decrease per added cost while the total stays within ``budget``."""
    choice = list(choice)
    left = budget - _total(costs, choice)
    while True:
        best = None
        for layer, (c, l) in enumerate(zip(costs, losses)):
            current = choice[layer]
            added = c - c[current]
            gain = l[current] - l
            ok = (gain > 0) & (added <= left)
            if not ok.any():
                continue
            ratio = np.where(ok, gain / np.maximum(added, 1e-300), -np.inf)
            index = int(np.argmax(ratio))
            if best is None or ratio[index] > best[0]:
                best = (float(ratio[index]), layer, index)
        if best is None:
            return choice
        _, layer, index = best
        left -= float(costs[layer][index] - costs[layer][choice[layer]])
        choice[layer] = index
