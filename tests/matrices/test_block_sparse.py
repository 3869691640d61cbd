"""BlockSparse: BSR validation, edges, counts and views (registry-wide checks are in test_matrix_conformance)."""

import numpy as np
import pytest

import structmat
from structmat.matrices.block_sparse import BlockSparse, block_grid


def test_counts_bytes_and_grid():
    W = np.zeros((5, 10))
    W[0:2, 0:4] = 1.0
    W[4, 8:10] = 2.0  # an edge block: rows 4-5 and columns 8-11 of a 6x12 grid
    M = BlockSparse.from_dense(W, (2, 4))
    assert M.block_shape == (2, 4) and M.grid_shape == (3, 3) == block_grid((5, 10), (2, 4))
    assert M.nblocks == 2 and M.nparams == 16 and M.nindices == 2 + 4
    assert M.nbytes == 4 * 16 + 4 * 6
    np.testing.assert_array_equal(M.to_dense(), W)
    np.testing.assert_array_equal(M.block_rows, [0, 2])


def test_from_mask_stores_zero_blocks():
    W = np.arange(12.0).reshape(3, 4)
    keep = np.array([[True, False], [False, True]])
    M = BlockSparse.from_mask(np.zeros((3, 4)), (2, 2), keep)
    assert M.nblocks == 2 and M.nparams == 8 and not M.to_dense().any()
    M = BlockSparse.from_mask(W, (2, 2), keep)
    np.testing.assert_array_equal(M.to_dense(), np.where([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], W, 0))


def test_entries_past_the_edges_must_be_zero():
    values = np.ones((1, 2, 4))
    with pytest.raises(ValueError, match="past row 3 or column 6 and are not zero"):
        BlockSparse((3, 6), [0, 0, 1], [1], values)
    values[0, 1, :] = 0.0
    values[0, :, 2:] = 0.0
    M = BlockSparse((3, 6), [0, 0, 1], [1], values)
    np.testing.assert_array_equal(M.to_dense()[2], [0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize("args, error, match", [
    (((4, 8), [0, 1], [0], np.ones((1, 2, 4))), ValueError, r"indptr must have ⌈m/br⌉ \+ 1 = 3 entries"),
    (((4, 8), [0, 1, 1], [2], np.ones((1, 2, 4))), ValueError, r"must lie in \[0, 2\)"),
    (((4, 8), [0, 2, 2], [1, 0], np.ones((2, 2, 4))), ValueError, "strictly increasing"),
    (((4, 8), [0, 1, 2], [0], np.ones((1, 2, 4))), ValueError, "not a valid BSR structure"),
    (((4, 8), [0, 1, 1], [0], np.ones((2, 4))), ValueError, r"shape \(nblocks, br, bc\)"),
    (((4, 8), [0, 1, 1], [0], np.full((1, 2, 4), np.nan)), ValueError, "finite"),
    (((4, 8), [0.0, 1, 1], [0], np.ones((1, 2, 4))), TypeError, "integer arrays"),
    (((4,), [0, 1, 1], [0], np.ones((1, 2, 4))), ValueError, r"pair \(m, n\)"),
])
def test_bad_structures_raise(args, error, match):
    with pytest.raises(error, match=match):
        BlockSparse(*args)


@pytest.mark.parametrize("block_shape", [(0, 4), (2,), "2x4", (2, 4.0)])
def test_bad_block_shapes_raise(block_shape):
    with pytest.raises((ValueError, TypeError), match="block_shape"):
        BlockSparse.from_dense(np.ones((4, 8)), block_shape)


def test_transpose_and_scaled():
    M = BlockSparse.random((11, 19), block_shape=(2, 8), density=0.4, seed=2)
    T = M.T
    assert type(T) is BlockSparse and T.block_shape == (8, 2) and T.nblocks == M.nblocks
    np.testing.assert_array_equal(T.to_dense(), M.to_dense().T)
    assert T.T.block_shape == (2, 8)
    np.testing.assert_array_equal(M.scaled(-2.0).to_dense(), -2.0 * M.to_dense())


def test_random_respects_edges_and_density():
    M = BlockSparse.random((13, 36), block_shape=(4, 8), density=0.5, seed=0)
    mb, nb = M.grid_shape
    assert (mb, nb) == (4, 5) and M.nblocks == round(0.5 * mb * nb)
    D = M.to_dense()
    assert D.shape == (13, 36)
    assert BlockSparse.from_dense(D, (4, 8)).nblocks == M.nblocks


def test_save_load_keeps_shape_with_partial_blocks(tmp_path, rng):
    M = BlockSparse.random((9, 1), block_shape=(2, 8), seed=1)
    M.save(tmp_path / "b.npz")
    L = structmat.load(tmp_path / "b.npz")
    assert L.shape == (9, 1) and L.block_shape == (2, 8)
    np.testing.assert_array_equal(L.to_dense(), M.to_dense())
