"""The hierarchical-matrix C kernel: fitted partitions, rank-0 leaves, permutations, and its own table checks."""

import numpy as np
import pytest

import structmat
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.speed_c import LayerFileError, run_driver, time_c, write_input
from structmat.speed_c.layer_format import layer_bytes
from structmat.speed_c.runner import TOLERANCE
from structmat.speed_c.writers import WRITERS


def check(M, driver, rng, tmp_path):
    x = rng.standard_normal(M.shape[1])
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    expected = M.to_dense() @ x
    assert np.linalg.norm(y - expected) <= 2 * TOLERANCE * np.linalg.norm(expected)


@pytest.mark.parametrize("family", ["hodlr", "hedlr", "hmatrix"])
@pytest.mark.parametrize("share", [0.1, 0.4])
def test_fitted_matrices_with_permutations_match_numpy(family, share, driver, rng, tmp_path):
    """A fitted matrix has mixed dense, low-rank and rank-0 leaves; ordering="bisection" stores permutations (the
    partitions are held to more than one leaf: the one-leaf candidate is low rank, with nothing to reorder)."""
    W = rng.standard_normal((70, 90)) + np.outer(np.arange(70), np.ones(90)) / 70
    several_leaves = {"min_block": [8, 16]} if family == "hmatrix" else {"depth": [1, 2, 3]}
    M = structmat.approximate(W, family, share, ordering="bisection", seed=0, **several_leaves)
    assert M.row_order is not None
    check(M, driver, rng, tmp_path)


@pytest.mark.parametrize("cls, options", [(HODLRMatrix, {"depth": 4}), (HEDLRMatrix, {"depth": 3}),
                                          (HMatrix, {"eta": 0.5, "min_block": 4})])
def test_random_partitions_match_numpy(cls, options, driver, rng, tmp_path):
    check(cls.random((100, 37), rank=3, seed=1, **options), driver, rng, tmp_path)


def hmatrix_file(tmp_path, M, edit_meta=None, edit_arrays=None):
    meta, arrays = WRITERS[M.family].layout(M)
    meta = list(meta)
    arrays = [np.array(a, dtype=np.int32 if np.asarray(a).dtype.kind in "iu" else np.float32) for a in arrays]
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    path = tmp_path / "bad.smlayer"
    path.write_bytes(layer_bytes(WRITERS[M.family].family_id, M.shape, meta, arrays))
    return path


def set_meta(index, value):
    def edit(meta):
        meta[index] = value
    return edit


def set_leaf(leaf, column, value):
    def edit(arrays):
        arrays[1][leaf, column] = value
    return edit


@pytest.mark.parametrize(
    "edit_meta, edit_arrays, message",
    [
        (set_meta(0, 0), None, "number of leaves must be in"),
        (set_meta(0, 5), None, "array 1 (leaves)"),
        (set_meta(2, 3), None, "must be 0 or 1"),
        (set_meta(1, 1), None, "expected 3 arrays"),
        (None, set_leaf(1, 3, 99), "is empty or outside"),
        (None, set_leaf(0, 4, -2), "has rank -2"),
        (None, set_leaf(2, 5, 0), "starts at 0"),
        (None, lambda a: (set_leaf(1, 1, 9)(a), set_leaf(1, 3, 11)(a)), "the leaves cover 189 entries"),
        (None, lambda arrays: arrays.__setitem__(0, arrays[0][:-1]), "array 0 (values)"),
    ],
)
def test_table_errors(edit_meta, edit_arrays, message, driver, tmp_path):
    M = HODLRMatrix.random((16, 12), rank=2, depth=1, seed=0)
    path = hmatrix_file(tmp_path, M, edit_meta, edit_arrays)
    inp = write_input(np.ones(12), tmp_path / "x.f32")
    with pytest.raises(LayerFileError, match="not a valid hodlr layer") as exc:
        run_driver(driver, path, inp, warmup=0, repeats=1)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_bad_permutation_is_rejected(driver, tmp_path):
    M = HMatrix.random((16, 12), seed=0)
    M = HMatrix(M.shape, M.leaves, M.values, row_order=np.arange(16)[::-1], partition=M.partition)

    def repeat(arrays):
        arrays[2][0] = arrays[2][1]

    path = hmatrix_file(tmp_path, M, None, repeat)
    inp = write_input(np.ones(12), tmp_path / "x.f32")
    with pytest.raises(LayerFileError, match="row_order"):
        run_driver(driver, path, inp, warmup=0, repeats=1)
