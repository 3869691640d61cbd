"""Sequential OBS pruning of entries and blocks, and the preconditioned CG refit on a mask."""

import numpy as np
import pytest

from structmat import InputStatistics
from structmat.approximators._masked_refit import masked_cg_refit, top_eigenpairs
from structmat.approximators._output_norm import OutputNorm
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
