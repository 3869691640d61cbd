"""fit_block_sparse: exact recovery, the block-shape choice, budgets in parameters and bytes, fitting to outputs."""

import itertools

import numpy as np
import pytest

import structmat
from structmat import output_error
from structmat.approximators.block_sparse import DEFAULT_BLOCK_SHAPES, blocks_for_budget, fit_block_sparse
from structmat.matrices.block_sparse import BlockSparse


@pytest.mark.parametrize("block_shape", DEFAULT_BLOCK_SHAPES)
@pytest.mark.parametrize("shape", [(32, 48), (29, 43)])
def test_exact_recovery_picks_the_true_block_shape(block_shape, shape):
    M = BlockSparse.random(shape, block_shape=block_shape, density=0.3, seed=3)
    fitted = fit_block_sparse(M.to_dense(), M.nparams)
    np.testing.assert_array_equal(fitted.to_dense(), M.to_dense())
    assert fitted.block_shape == block_shape and fitted.nparams <= M.nparams  # finer shapes tie; fewer bytes win


def test_largest_energy_blocks_are_optimal_for_a_shape():
    """Brute force over every support of k blocks on a tiny matrix."""
    W = np.random.default_rng(0).standard_normal((4, 16))
    for k in (1, 2, 3):
        fitted = fit_block_sparse(W, k * 8, block_shape=(1, 8))
        best = np.inf
        for support in itertools.combinations(range(8), k):
            keep = np.zeros((4, 2), dtype=bool)
            keep.ravel()[list(support)] = True
            best = min(best, structmat.relative_error(W, BlockSparse.from_mask(W, (1, 8), keep)))
        assert structmat.relative_error(W, fitted) == pytest.approx(best, rel=1e-12)


def test_one_by_one_blocks_are_magnitude_pruning():
    W = np.random.default_rng(1).standard_normal((20, 30))
    fitted = fit_block_sparse(W, 0.2, block_shape=(1, 1))
    pruned = structmat.approximate(W, "sparse", 0.2)
    np.testing.assert_array_equal(fitted.to_dense(), pruned.to_dense())


def test_budget_rules():
    W = np.random.default_rng(2).standard_normal((48, 64))
    errors = [structmat.relative_error(W, fit_block_sparse(W, s)) for s in (0.05, 0.1, 0.3, 0.6, 1.0)]
    assert all(b <= a for a, b in zip(errors, errors[1:])) and errors[-1] == 0.0
    for budget in (0.25, 3000):
        fitted = fit_block_sparse(W, budget, unit="bytes")
        assert fitted.nbytes <= (int(budget * W.size) * 4 if isinstance(budget, float) else budget)
    assert blocks_for_budget((48, 64), (2, 8), 1000) == 62
    assert blocks_for_budget((48, 64), (2, 8), 1000, "bytes") == (1000 - 25) // 17
    a, b = fit_block_sparse(W, 0.3), fit_block_sparse(W * 2.0**-40, 0.3)
    assert a.block_shape == b.block_shape
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(b.values * 2.0**40, a.values)


def test_errors_name_the_smallest_budget():
    W = np.ones((16, 16))
    with pytest.raises(ValueError, match=r"below the smallest block-sparse matrix.*8 parameters \(one \(1, 8\) "):
        fit_block_sparse(W, 7)
    with pytest.raises(ValueError, match=r"budget=60 allows 15 4-byte words"):
        fit_block_sparse(W, 60, unit="bytes")
    with pytest.raises(ValueError, match="block_shapes must hold at least one"):
        fit_block_sparse(W, 0.5, block_shapes=())
    with pytest.raises(ValueError, match="block_shape"):
        fit_block_sparse(W, 0.5, block_shape=(0, 8))


def test_fit_to_outputs():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((24, 40))
    X = rng.standard_normal((500, 40)) @ (rng.standard_normal((40, 40)) * np.geomspace(3, 0.03, 40))
    plain = fit_block_sparse(W, 0.25)
    aware = fit_block_sparse(W, 0.25, inputs=X, ridge=0.0)
    assert aware.nparams <= 240 and output_error(W, aware, X) < 0.5 * output_error(W, plain, X)
    # least-squares values: the gradient of the output error vanishes on every kept block
    gradient = (W - aware.to_dense()) @ (X.T @ X)
    br, bc = aware.block_shape
    for block, (row, col) in enumerate(zip(aware.block_rows, aware.indices)):
        part = gradient[row * br:(row + 1) * br, col * bc:(col + 1) * bc]
        assert np.abs(part).max() <= 1e-7 * np.abs(W @ X.T @ X).max(), block
    # white inputs: saliency is energy and the plain fit is already optimal
    white = fit_block_sparse(W, 0.25, inputs=rng.standard_normal((4000, 40)))
    assert output_error(W, white, rng.standard_normal((4000, 40))) < 1.05 * structmat.relative_error(W, plain)


def test_fit_to_outputs_skips_shapes_a_finer_one_tiles_with_a_parameter_budget():
    from structmat.approximators.block_sparse import _tiled_by_another

    shapes = [(1, 8), (2, 8), (4, 8), (8, 8), (3, 4)]
    assert [s for s in shapes if not _tiled_by_another(s, shapes)] == [(1, 8), (3, 4)]
    rng = np.random.default_rng(4)
    W = rng.standard_normal((32, 48))
    X = rng.standard_normal((300, 48)) @ (rng.standard_normal((48, 48)) * np.geomspace(3, 0.03, 48))
    aware = fit_block_sparse(W, 0.25, inputs=X)
    assert aware.block_shape == (1, 8) and aware.nparams <= 0.25 * W.size
    # with a byte budget coarser blocks store more parameters: every shape is fitted, none worse than the plain fit
    plain_bytes = fit_block_sparse(W, 0.25, unit="bytes")
    aware_bytes = fit_block_sparse(W, 0.25, inputs=X, unit="bytes")
    assert aware_bytes.nbytes <= 0.25 * 4 * W.size
    assert output_error(W, aware_bytes, X) <= output_error(W, plain_bytes, X)


def test_singular_inputs_need_a_ridge():
    rng = np.random.default_rng(5)
    X = np.zeros((30, 16))
    X[:, :8] = rng.standard_normal((30, 8))       # eight dead features
    W = rng.standard_normal((8, 16))
    with pytest.raises(ValueError, match="singular and ridge=0"):
        fit_block_sparse(W, 0.5, inputs=X, ridge=0.0)
    assert output_error(W, fit_block_sparse(W, 0.5, inputs=X), X) <= output_error(W, fit_block_sparse(W, 0.5), X)
