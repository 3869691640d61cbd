"""Rank allocation for a fixed partition: the greedy against an exact dynamic program on small cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from structmat.approximators.hmatrix_allocation import LeafSpectrum, allocate_ranks
from structmat.matrices.hmatrix_partition import eta_blocks, hodlr_blocks


def leaf_from_block(A):
    s = np.linalg.svd(A, compute_uv=False)
    return LeafSpectrum(A.shape[0], A.shape[1], float((A * A).sum()), s**2, True)


def options(leaf):
    """Every storage option of a leaf: (cost, error, rank) with rank -1 for dense."""
    errors = leaf.errors()
    out = [(r * leaf.weight, errors[r], r) for r in range(len(errors))]
    return out + [(leaf.dense_cost, 0.0, -1)]


def optimal(leaves, budget):
    """Exact multiple-choice knapsack by dynamic programming over the budget: (error, ranks)."""
    best = {0: (0.0, ())}
    for leaf in leaves:
        new = {}
        for used, (err, ranks) in best.items():
            for cost, e, r in options(leaf):
                total = used + cost
                if total <= budget and (total not in new or err + e < new[total][0]):
                    new[total] = (err + e, ranks + (r,))
        best = new
    return min(best.values())


def check_consistent(leaves, budget, alloc):
    cost = sum(leaf.dense_cost if r < 0 else r * leaf.weight for leaf, r in zip(leaves, alloc.ranks))
    error = sum(0.0 if r < 0 else leaf.errors()[r] for leaf, r in zip(leaves, alloc.ranks))
    assert cost == alloc.nparams <= budget
    assert alloc.error2 == pytest.approx(error, rel=1e-12, abs=1e-12)


def random_leaves(rng, count, max_side=6, decay=None):
    leaves = []
    for _ in range(count):
        m, n = rng.integers(1, max_side + 1, size=2)
        A = rng.standard_normal((m, n))
        if decay is not None:
            U, s, Vt = np.linalg.svd(A, full_matrices=False)
            A = (U * (s * decay ** np.arange(len(s)))) @ Vt
        leaves.append(leaf_from_block(A))
    return leaves


def test_equal_weights_without_dense_options_are_optimal():
    """Leaves of equal shape and budgets below any dense leaf: every rank-one term costs the same, so the greedy
    by σ² is exactly optimal."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        leaves = [leaf_from_block(rng.standard_normal((12, 10)) * rng.uniform(0.2, 2)) for _ in range(4)]
        budget = int(rng.integers(0, 120))
        alloc = allocate_ranks(leaves, budget)
        check_consistent(leaves, budget, alloc)
        assert alloc.error2 == pytest.approx(optimal(leaves, budget)[0], rel=1e-9, abs=1e-12)


@settings(max_examples=60)
@given(seed=st.integers(0, 2**16), count=st.integers(1, 4), budget=st.integers(0, 120),
       decay=st.sampled_from([None, 0.5, 0.8]))
def test_greedy_is_within_the_lp_bound_of_the_optimum(seed, count, budget, decay):
    """err ≤ err_opt + the largest single option gain (a loose form of the multiple-choice knapsack LP bound)."""
    rng = np.random.default_rng(seed)
    leaves = random_leaves(rng, count, decay=decay)
    alloc = allocate_ranks(leaves, budget)
    check_consistent(leaves, budget, alloc)
    best, _ = optimal(leaves, budget)
    assert alloc.error2 >= best - 1e-9
    slack = max(leaf.norm2 for leaf in leaves)
    assert alloc.error2 <= best + slack + 1e-9


def test_greedy_is_optimal_or_close_on_real_partitions():
    """HODLR and η partitions of 32×32 matrices (smooth kernel, Gaussian, power-law spectrum) at random budgets:
    the greedy hits the exact optimum in most cases and never misses by more than 0.5% of ‖W‖²."""
    rng = np.random.default_rng(3)
    x = np.linspace(0, 1, 32)
    exact, worst, trials = 0, 0.0, 30
    for trial in range(trials):
        if trial % 3 == 0:
            W = 1 / (1 + 30 * np.abs(x[:, None] - x[None, :]))
        elif trial % 3 == 1:
            W = rng.standard_normal((32, 32))
        else:
            U, _ = np.linalg.qr(rng.standard_normal((32, 32)))
            V, _ = np.linalg.qr(rng.standard_normal((32, 32)))
            W = (U * np.arange(1, 33) ** -0.7) @ V.T
        W = W + 0.01 * rng.standard_normal((32, 32))
        blocks = hodlr_blocks(32, 32, int(rng.integers(1, 4))) if trial % 2 == 0 else eta_blocks(32, 32, 1.0, 8)
        leaves = [leaf_from_block(W[a:b, c:d]) for a, b, c, d, _ in blocks]
        budget = int(rng.integers(64, 700))
        alloc = allocate_ranks(leaves, budget)
        check_consistent(leaves, budget, alloc)
        best, _ = optimal(leaves, budget)
        assert alloc.error2 >= best - 1e-9
        exact += alloc.error2 <= best + 1e-9
        worst = max(worst, (alloc.error2 - best) / (W * W).sum())
    assert exact >= 0.75 * trials
    assert worst < 0.005


def test_dense_option_used_when_cheaper():
    """A flat spectrum: the dense jump beats rank steps per parameter once the budget allows it."""
    leaf = leaf_from_block(np.eye(4))  # σ² = 1,1,1,1; a rank step costs 8, dense 16
    alloc = allocate_ranks([leaf], 16)
    assert alloc.ranks.tolist() == [-1] and alloc.error2 == 0.0 and alloc.nparams == 16
    alloc = allocate_ranks([leaf], 15)
    assert alloc.ranks.tolist() == [1] and alloc.error2 == pytest.approx(3.0)


def test_ratio_beats_absolute_rule_on_hodlr_levels():
    """Leaves of different sizes: per-parameter gain matters, absolute drops waste budget on large blocks."""
    rng = np.random.default_rng(2)
    big = leaf_from_block(rng.standard_normal((32, 32)))
    small = [leaf_from_block(rng.standard_normal((8, 8)) * 1.2) for _ in range(8)]
    leaves = [big] + small
    budget = 300
    ratio, absolute = allocate_ranks(leaves, budget, "ratio"), allocate_ranks(leaves, budget, "absolute")
    check_consistent(leaves, budget, ratio)
    assert absolute.nparams <= budget
    assert ratio.error2 < absolute.error2


def test_partial_spectra_are_reported_short():
    s = np.array([5.0, 4.0])
    partial = LeafSpectrum(50, 50, 100.0, s, complete=False)
    alloc = allocate_ranks([partial], 1000)
    assert alloc.ranks.tolist() == [2] and alloc.short == (0,)
    complete = LeafSpectrum(50, 50, 41.0, s, complete=True)
    assert allocate_ranks([complete], 1000).short == ()


def test_unknown_rule():
    with pytest.raises(ValueError, match="rule must be one of"):
        allocate_ranks([], 10, "largest")
