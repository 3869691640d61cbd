"""Sequential OBS pruning of entries and blocks, and the preconditioned CG refit on a mask."""

import numpy as np
import pytest

from structmat import InputStatistics
from structmat.approximators._masked_refit import masked_cg_refit, top_eigenpairs
from structmat.approximators._output_norm import OutputNorm, inverse_diagonal_blocks
from structmat.approximators._sequential_pruning import expand_groups, sequential_prune
from structmat.approximators.sparse import refit_on_mask


def _norm(rng, m, n, rows=None, ridge=1e-6):
    X = rng.standard_normal((rows or 3 * n, n)) @ rng.standard_normal((n, n)) * np.geomspace(0.05, 5, n)
    return OutputNorm(rng.standard_normal((m, n)), InputStatistics.from_rows(X), ridge)


@pytest.mark.parametrize("group_shape", [(1, 1), (1, 4), (3, 4), (2, 5)])
def test_loss_is_the_output_error_of_the_pruned_values(rng, group_shape):
    """Each pruning adds exactly q² to tr((W − M) H (W − M)ᵀ); ragged last groups (11 rows, 23 columns) included."""
    norm = _norm(rng, 11, 23)
    br, bc = group_shape
    grid = (-(-11 // br), -(-23 // bc))
    count = grid[0] * grid[1] // 3
    values, keep, loss, _ = sequential_prune(norm.W, norm.inverse, count, group_shape=group_shape, block_size=8)
    assert keep.shape == grid and keep.sum() == count
    mask = expand_groups(keep, group_shape, norm.W.shape)
    assert np.all(values[~mask] == 0.0)
    assert loss == pytest.approx(norm.squared_error(values), rel=1e-9)


def test_whole_groups_are_kept_or_pruned(rng):
    norm = _norm(rng, 8, 16)
    values, keep, _, _ = sequential_prune(norm.W, norm.inverse, 6, group_shape=(2, 4))
    blocks = (values != 0).reshape(4, 2, 4, 4).any(axis=(1, 3))
    assert np.array_equal(blocks, keep)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cg_refit_lowers_the_error_it_reports_and_converges_to_least_squares(rng, dtype):
    norm = _norm(rng, 30, 200)        # n > 4 (rank + 8): the top eigenpairs by subspace iteration
    values, mask, loss, _ = sequential_prune(norm.W, norm.inverse, 2000)
    exact, exact_error2 = refit_on_mask(norm, mask)
    previous = loss
    for steps in (1, 2, 4):
        refit, error = masked_cg_refit(norm.W, norm.H, values, mask, steps, error=loss, product_dtype=dtype)
        assert np.all(refit[~mask] == 0.0)
        assert error == pytest.approx(norm.squared_error(refit), rel=1e-4 if dtype is np.float32 else 1e-9)
        assert error <= previous * (1 + 1e-6)
        previous = error
    assert previous <= 1.05 * exact_error2 * norm.energy
    converged, _ = masked_cg_refit(norm.W, norm.H, values, mask, 60)
    np.testing.assert_allclose(converged, exact, atol=1e-6 * np.abs(exact).max())


def test_top_eigenpairs_match_the_exact_ones(rng):
    """A decaying spectrum like real inputs' (each eigenvalue 0.7 times the previous one)."""
    Q = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    spectrum = 0.7 ** np.arange(300)
    lam, V = top_eigenpairs((Q * spectrum) @ Q.T, 8)
    np.testing.assert_allclose(lam, spectrum[7::-1], rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->j", V, Q[:, 7::-1])), 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_permuted_factor_is_the_inverse_of_the_cholesky_factor_of_the_permuted_inverse(rng, dtype):
    """K = U⁻¹ from one Cholesky factorisation of the reversed permuted H: P H Pᵀ = K Kᵀ, K upper triangular."""
    norm = _norm(rng, 5, 30)
    columns = rng.permutation(30)
    K = norm.permuted_factor(columns, dtype).astype(np.float64)
    np.testing.assert_array_equal(K, np.triu(K))
    H_p = norm.H[np.ix_(columns, columns)]
    np.testing.assert_allclose(K @ K.T, H_p, rtol=0, atol=(1e-10 if dtype is np.float64 else 1e-4) * np.abs(H_p).max())
    U = np.linalg.cholesky(np.linalg.inv(H_p)).T
    np.testing.assert_allclose(K, np.linalg.inv(U), rtol=1e-7 if dtype is np.float64 else 2e-3,
                               atol=1e-9 * np.abs(K).max())


@pytest.mark.parametrize("width", [1, 4, 7])
def test_inverse_diagonal_blocks_in_float32_and_float64_match_the_explicit_inverse(rng, width):
    norm = _norm(rng, 5, 30)
    expected = inverse_diagonal_blocks(np.linalg.inv(norm.H), width)
    np.testing.assert_allclose(norm.inverse_diagonal_blocks(width), expected, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(norm.inverse_diagonal_blocks(width, np.float32), expected, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("group_shape", [(1, 1), (2, 3)])
def test_gradient_is_the_output_gradient_on_every_column_that_keeps_an_entry(rng, group_shape):
    """Q Kᵀ = (W − values) H on the columns with kept entries, from the trailing block of K only; the output norm
    without H⁻¹ prunes as the explicit inverse does."""
    norm = _norm(rng, 9, 25)
    W = norm.W.copy()
    W[:, :6] *= 1e-3                  # small weights: whole columns pruned, processed first
    norm.W = W
    explicit = sequential_prune(W, np.linalg.inv(norm.H), 12, group_shape=group_shape, block_size=6)
    values, keep, loss, gradient = sequential_prune(W, norm, 12, group_shape=group_shape, block_size=6,
                                                    gradient=True)
    np.testing.assert_array_equal(keep, explicit.keep)
    np.testing.assert_allclose(values, explicit.values, atol=1e-9 * np.abs(W).max())
    assert loss == pytest.approx(explicit.loss, rel=1e-9)
    columns = expand_groups(keep, group_shape, W.shape).any(axis=0)
    assert not columns.all()
    np.testing.assert_allclose(gradient()[:, columns], ((W - values) @ norm.H)[:, columns], rtol=1e-9,
                               atol=1e-9 * np.abs(W).max() * np.abs(norm.H).max())


def test_refit_leaves_whole_pruned_columns_out_without_changing_the_result(rng):
    """Columns with no kept entry take no part in the products: the same values as with them (60 steps, float64)."""
    norm = _norm(rng, 12, 60)
    mask = rng.random((12, 60)) < 0.5
    mask[:, 20:50] = False            # half the columns pruned whole: the restricted products
    values = np.where(mask, norm.W, 0.0)
    restricted, error = masked_cg_refit(norm.W, norm.H, values, mask, 60)
    exact, exact_error2 = refit_on_mask(norm, mask)
    np.testing.assert_allclose(restricted, exact, atol=1e-7 * np.abs(exact).max())
    assert error == pytest.approx(exact_error2 * norm.energy, rel=1e-7)


@pytest.mark.parametrize("regularized", [True, False])
def test_the_projection_bound_never_claims_a_smaller_error_exceeded(rng, regularized):
    """exceeds() with directions agrees with the exact error just above and just below it."""
    norm = _norm(rng, 15, 40)
    M = np.where(rng.random(norm.W.shape) < 0.5, norm.W, 0.0)
    D = norm.W - M
    exact = float(np.einsum("ij,ij->", D @ norm.H, D)) - (0.0 if regularized else norm.shift * float(np.sum(D * D)))
    directions = norm.top_eigenpairs(8)[1]
    assert norm.exceeds(M, exact * (1 - 1e-6), regularized=regularized, directions=directions)
    assert not norm.exceeds(M, exact * (1 + 1e-6), regularized=regularized, directions=directions)


def test_float32_factorisations_fall_back_on_float64(rng):
    """Five inputs of 30 features and a ridge of 1e-12: float32 cannot factor H, float64 can; K Kᵀ = P H Pᵀ."""
    X = rng.standard_normal((5, 30)) * np.geomspace(0.05, 5, 30)
    norm = OutputNorm(rng.standard_normal((4, 30)), InputStatistics.from_rows(X), 1e-12)
    from scipy.linalg.lapack import spotrf

    assert spotrf(norm.H.astype(np.float32))[1] != 0
    columns = rng.permutation(30)
    K = norm.permuted_factor(columns, np.float32).astype(np.float64)
    H_p = norm.H[np.ix_(columns, columns)]
    np.testing.assert_allclose(K @ K.T, H_p, rtol=0, atol=1e-4 * np.abs(H_p).max())
    np.testing.assert_allclose(norm.inverse_diagonal_blocks(1, np.float32), norm.inverse_diagonal_blocks(1),
                               rtol=1e-4)


def test_large_weights_prune_in_float32_as_in_float64(rng):
    """128×1024 (m n² = 2²⁷): the default fit runs in float32; its output error is that of the float64 pipeline."""
    from structmat.approximators._masked_refit import product_dtype
    from structmat.approximators.sparse import fit_sparse

    m, n = 128, 1024
    X = rng.standard_normal((2 * n, n)) @ (rng.standard_normal((n, n)) / np.sqrt(n)) * np.geomspace(0.05, 5, n)
    stats = InputStatistics.from_rows(X)
    norm = OutputNorm(rng.standard_normal((m, n)), stats, 1e-6)
    assert product_dtype(norm.W.shape) == np.float32
    fitted = fit_sparse(norm.W, 0.25, inputs=stats).to_dense()
    assert np.array_equal(fitted, fit_sparse(norm.W, 0.25, inputs=stats).to_dense())   # same bytes
    values, mask, loss, gradient = sequential_prune(norm.W, norm, m * n // 4, dtype=np.float64, gradient=True)
    reference, _ = masked_cg_refit(norm.W, norm.H, values, mask, 2, error=loss, gradient=gradient(), rank=16)
    assert norm.error2(fitted) == pytest.approx(norm.error2(reference), rel=1e-3)
