import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from structmat.compress.allocation import AllocationError, allocate_global


def brute_force(costs, losses, budget):
    best = None
    for choice in itertools.product(*[range(len(c)) for c in costs]):
        cost = sum(c[i] for c, i in zip(costs, choice))
        loss = sum(l[i] for l, i in zip(losses, choice))
        if cost <= budget and (best is None or loss < best):
            best = loss
    return best


@given(st.integers(0, 10_000), st.integers(2, 4), st.floats(0.2, 0.9))
def test_global_allocation_fits_the_budget_and_is_near_the_exact_optimum(seed, layers, share):
    rng = np.random.default_rng(seed)
    costs, losses = [], []
    for _ in range(layers):
        cost = np.sort(rng.integers(1, 100, size=4)) + np.arange(4)
        loss = np.sort(rng.random(4))[::-1] * rng.uniform(0.5, 2)
        costs.append(np.append(cost, 120))
        losses.append(np.append(loss, 0.0))
    budget = share * sum(c.max() for c in costs)
    if budget < sum(c.min() for c in costs):
        with pytest.raises(AllocationError, match="below the cheapest choice"):
            allocate_global(costs, losses, budget)
        return
    choice = allocate_global(costs, losses, budget)
    assert sum(c[i] for c, i in zip(costs, choice)) <= budget
    found = sum(l[i] for l, i in zip(losses, choice))
    optimum = brute_force(costs, losses, budget)
    # the Lagrangian choice plus the greedy fill is within one layer's largest loss step of the optimum
    assert found <= optimum + max(float(l.max()) for l in losses) + 1e-12


def test_allocation_prefers_the_layer_where_parameters_pay():
    # layer 0 gains a lot from its second point, layer 1 little: with room for one upgrade, layer 0 gets it
    costs = [np.array([10, 20]), np.array([10, 20])]
    losses = [np.array([1.0, 0.1]), np.array([1.0, 0.9])]
    assert allocate_global(costs, losses, 30) == [1, 0]
    assert allocate_global(costs, losses, 40) == [1, 1]
