"""fit_ldr: the Toeplitz-like and low-rank candidates, learned operators that never make it worse, the data-aware fit,
monotone in the budget, determinism, time bounds."""

import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import structmat
from structmat.approximators.ldr import fit_ldr
from structmat.approximators.toeplitz_like import fit_toeplitz_like_rank
from structmat.matrices.ldr import LDR
from structmat.metrics import relative_error


def start_error(W, rank):
    fit = fit_toeplitz_like_rank(W, rank)
    return min(e for e in (fit.closed_form_error, fit.refined_error) if e is not None)


def test_learned_operators_improve_on_a_perturbed_ldr_matrix():
    W = LDR.random((48, 48), rank=3, operator_noise=0.05, seed=1).to_dense()
    budget = 2 * 3 * 48 + 6 * 48
    M = fit_ldr(W, budget, max_seconds=None)  # no wall-clock limit: the same steps on a slow or busy machine
    assert M.nparams <= budget and M.rank == 3
    assert relative_error(W, M) < 0.9 * start_error(W, 3)
    assert not np.allclose(M.A[1], 0.0)  # the diagonals moved away from the shift operators


@pytest.mark.parametrize("shape, budget, probes", [((40, 64), 0.3, None), ((64, 40), 0.3, 4), ((50, 50), 0.9, None)])
def test_never_worse_than_the_toeplitz_like_start(shape, budget, probes):
    W = np.random.default_rng(2).standard_normal(shape)
    M = fit_ldr(W, budget, probes=probes, max_iterations=30)
    rank = M.rank
    assert M.nparams <= int(budget * W.size)
    assert relative_error(W, M) <= start_error(W, rank) + 1e-12


def test_deterministic_given_a_seed():
    W = LDR.random((30, 20), rank=2, operator_noise=0.05, seed=3).to_dense()
    first = fit_ldr(W, 400, probes=4, max_iterations=20, seed=5)
    second = fit_ldr(W, 400, probes=4, max_iterations=20, seed=5)
    for name in "ABGH":
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_exact_toeplitz_like_input_is_recovered_without_refinement():
    from structmat.matrices.toeplitz_like import ToeplitzLike

    W = ToeplitzLike.random((30, 45), rank=2, seed=4).to_dense()
    M = fit_ldr(W, 2 * 2 * 45 + 6 * 45)
    assert relative_error(W, M) < 1e-10


def test_budget_error_names_the_smallest_ldr():
    with pytest.raises(ValueError, match=r"smallest LDR matrix for shape \(20, 30\): 240 parameters"):
        structmat.approximate(np.ones((20, 30)), "ldr", 239)


@pytest.mark.slow
def test_1024_fits_within_120_seconds_on_one_core():
    from structmat.weights import load_weight

    W = load_weight("powerlaw:1024x1024")
    start = time.perf_counter()
    M = fit_ldr(W, 0.25)
    assert time.perf_counter() - start < 120
    assert relative_error(W, M) <= start_error(W, M.rank) + 1e-12


# ------------------------------------------------------------------------------------------------ data-aware, quality
def test_never_worse_than_the_low_rank_it_contains():
    """With A = 0 an LDR matrix is G Hᵀ: the truncated SVD at rank r is a candidate of the plain fit."""
    W = np.random.default_rng(6).standard_normal((40, 48)) @ np.diag(np.geomspace(1, 1e-2, 48))
    M = fit_ldr(W, 2 * 5 * 48 + 6 * 48, max_iterations=10)
    lowrank = structmat.approximate(W, "lowrank", 5 * (40 + 48))
    assert M.rank == 5 and relative_error(W, M) <= relative_error(W, lowrank) + 1e-12


def test_output_fit_is_never_worse_than_its_candidates():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((36, 40))
    X = rng.standard_normal((120, 40)) * np.geomspace(0.05, 5, 40)
    budget = 2 * 4 * 40 + 6 * 40
    aware, plain = fit_ldr(W, budget, inputs=X, max_iterations=10), fit_ldr(W, budget, max_iterations=10)
    whitened = structmat.approximate(W, "lowrank", 4 * (36 + 40), inputs=X)
    error = structmat.output_error(W, aware, X)
    assert aware.nparams <= budget
    assert error <= structmat.output_error(W, plain, X) + 1e-9
    assert error <= structmat.output_error(W, whitened, X) + 1e-9
    assert error < 0.9 * structmat.output_error(W, plain, X)


@settings(max_examples=4)
@given(m=st.integers(2, 10), n=st.integers(2, 10), seed=st.integers(0, 2**16), aware=st.booleans())
def test_error_never_increases_with_the_budget(m, n, seed, aware):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    X = rng.standard_normal((3 * n, n)) * np.geomspace(0.1, 10, n) if aware else None
    N = max(m, n)
    errors = []
    for rank in range(1, min(N, 3) + 1):
        M = fit_ldr(W, 2 * rank * N + 6 * N, inputs=X, max_iterations=20)
        errors.append(relative_error(W, M) if X is None else structmat.output_error(W, M, X))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:])), errors


def test_warm_start_is_never_beaten_by_the_larger_fit():
    W = np.random.default_rng(8).standard_normal((40, 36))
    small = fit_ldr(W, 2 * 2 * 40 + 6 * 40, max_iterations=10)
    large = fit_ldr(W, 2 * 3 * 40 + 6 * 40, init=small, max_iterations=0)
    assert relative_error(W, large) <= relative_error(W, small) + 1e-12
    with pytest.raises(ValueError, match="init must be an LDR matrix"):
        fit_ldr(W, 2 * 1 * 40 + 6 * 40, init=small)
