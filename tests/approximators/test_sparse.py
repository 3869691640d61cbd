"""Sparsity fitted to a layer's outputs: exact values on a mask, OBS pruning, never worse than magnitude pruning."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import structmat
from structmat import InputStatistics, output_error
from structmat.approximators._output_norm import OutputNorm
from structmat.approximators.sparse import fit_sparse, magnitude_prune, obs_prune, refit_on_mask


def _correlated_inputs(rng, rows, n):
    """Inputs with correlated features of very different scales, like a trained layer's."""
    return rng.standard_normal((rows, n)) @ rng.standard_normal((n, n)) * np.geomspace(0.05, 5, n)


def test_values_on_a_mask_are_the_least_squares_optimum(rng):
    W, X = rng.standard_normal((6, 10)), _correlated_inputs(rng, 80, 10)
    mask = rng.random(W.shape) < 0.5
    mask[0] = False                  # an empty row
    mask[1] = True                   # a full row
    mask[2, :8] = True               # more kept than pruned: the OBS removal branch
    norm = OutputNorm(W, InputStatistics.from_rows(X), ridge=0.0)
    values, error2 = refit_on_mask(norm, mask)
    for i in range(W.shape[0]):
        kept = np.flatnonzero(mask[i])
        expected = np.zeros(W.shape[1])
        if kept.size:
            expected[kept] = np.linalg.lstsq(X[:, kept], X @ W[i], rcond=None)[0]
        np.testing.assert_allclose(values[i], expected, atol=1e-9)
    assert error2 == pytest.approx(output_error(W, values, X) ** 2, rel=1e-8, abs=1e-14)


def test_with_white_inputs_obs_pruning_is_magnitude_pruning(rng):
    """With H = I the saliency is w² and there is nothing to compensate: the largest entries, unchanged."""
    W = rng.standard_normal((9, 300))       # three blocks of columns
    values, mask = obs_prune(W, np.eye(300), 700, block_size=128)
    np.testing.assert_array_equal(values, magnitude_prune(W, 700))
    assert mask.sum() == 700


def test_pruning_allocates_the_budget_across_rows(rng):
    """A row whose outputs matter more keeps more entries: the budget is global, not per row."""
    W = rng.standard_normal((4, 40)) * np.array([[10.0], [1.0], [1.0], [0.1]])
    X = _correlated_inputs(rng, 200, 40)
    kept = fit_sparse(W, 60, inputs=X).to_dense() != 0
    counts = kept.sum(axis=1)
    assert counts.sum() <= 60 and counts[0] > counts[1] > counts[3]


def test_tiny_case_is_close_to_the_brute_force_optimum(rng):
    """Every support of 3 entries in a 1×8 row, each with its least-squares values: the fit is the best or near it."""
    W, X = rng.standard_normal((1, 8)), _correlated_inputs(rng, 50, 8)
    best = np.inf
    for support in itertools.combinations(range(8), 3):
        M = np.zeros((1, 8))
        M[0, list(support)] = np.linalg.lstsq(X[:, list(support)], X @ W[0], rcond=None)[0]
        best = min(best, output_error(W, M, X))
    fitted = output_error(W, fit_sparse(W, 3, inputs=X, ridge=0.0), X)
    assert best <= fitted <= 1.25 * best
    assert fitted < output_error(W, fit_sparse(W, 3), X)


def test_an_exactly_sparse_matrix_is_recovered_with_inputs(rng):
    W = magnitude_prune(rng.standard_normal((12, 20)), 50)
    M = fit_sparse(W, 50, inputs=_correlated_inputs(rng, 100, 20))
    np.testing.assert_allclose(M.to_dense(), W, atol=1e-10)


@pytest.mark.parametrize("refit", ["exact", "cg", "none", "auto"])
def test_refits_respect_the_budget_and_improve_in_order(rng, refit):
    W, X = rng.standard_normal((15, 33)), _correlated_inputs(rng, 90, 33)
    errors = {r: output_error(W, fit_sparse(W, 0.3, inputs=X, refit=r), X) for r in ("none", "cg", "exact")}
    M = fit_sparse(W, 0.3, inputs=X, refit=refit)
    assert M.nparams <= int(0.3 * W.size)
    assert errors["exact"] <= errors["cg"] * (1 + 1e-9) <= errors["none"] * (1 + 1e-9)
    assert output_error(W, M, X) <= output_error(W, fit_sparse(W, 0.3), X)


@settings(max_examples=25)
@given(m=st.integers(1, 14), n=st.integers(1, 30), share=st.floats(0.02, 1.0), seed=st.integers(0, 2**16),
       block=st.sampled_from([1, 5, 128]))
def test_never_worse_than_magnitude_pruning_on_the_fitting_inputs(m, n, share, seed, block):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    X = _correlated_inputs(rng, int(rng.integers(1, 3 * n + 2)), n)   # also fewer rows than features
    k = max(1, int(share * m * n))
    aware = fit_sparse(W, k, inputs=X, block_size=block)
    assert aware.nparams <= k
    assert output_error(W, aware, X) <= output_error(W, fit_sparse(W, k), X) * (1 + 1e-6) + 1e-12


def test_same_inputs_give_the_same_bytes(rng):
    W, X = rng.standard_normal((20, 30)), _correlated_inputs(rng, 60, 30)
    a, b = fit_sparse(W, 0.2, inputs=X), fit_sparse(W, 0.2, inputs=InputStatistics.from_rows(X))
    for x, y in zip(a.csr_factors()[0][:3], b.csr_factors()[0][:3]):
        np.testing.assert_array_equal(x, y)


def test_approximate_passes_the_inputs_to_the_sparse_fit(rng):
    W, X = rng.standard_normal((10, 12)), _correlated_inputs(rng, 40, 12)
    via_api = structmat.approximate(W, "sparse", 0.25, inputs=X)
    np.testing.assert_array_equal(via_api.to_dense(), fit_sparse(W, 0.25, inputs=X).to_dense())


def test_singular_inputs_without_ridge_get_a_clear_error(rng):
    X = np.zeros((5, 6))
    X[:, :3] = rng.standard_normal((5, 3))       # three dead features
    with pytest.raises(ValueError, match="singular and ridge=0"):
        fit_sparse(rng.standard_normal((4, 6)), 0.5, inputs=X, ridge=0.0)
    assert fit_sparse(rng.standard_normal((4, 6)), 0.5, inputs=X).nparams <= 12   # the default ridge copes


@pytest.mark.parametrize("kwargs, error, match", [
    ({"refit": "lstsq"}, ValueError, "refit must be one of"),
    ({"block_size": 0}, ValueError, "block_size"),
    ({"ridge": -1.0}, ValueError, "ridge"),
])
def test_bad_options_raise(rng, kwargs, error, match):
    with pytest.raises(error, match=match):
        fit_sparse(rng.standard_normal((4, 6)), 0.5, inputs=rng.standard_normal((10, 6)), **kwargs)
