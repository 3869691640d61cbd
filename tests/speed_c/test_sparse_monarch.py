"""The C kernels of the sparse families and Monarch: rectangular chains, padding, and their own file checks."""

import numpy as np
import pytest

from structmat.matrices.monarch import Monarch
from structmat.matrices.sparse_product import Sparse, SparseProduct
from structmat.speed_c import LayerFileError, run_driver, time_c, write_input
from structmat.speed_c.layer_format import layer_bytes
from structmat.speed_c.runner import TOLERANCE
from structmat.speed_c.writers import WRITERS


def check(M, driver, rng, tmp_path):
    x = rng.standard_normal(M.shape[1])
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    expected = M.to_dense() @ x
    assert np.linalg.norm(y - expected) <= 2 * TOLERANCE * max(np.linalg.norm(expected), 1e-30)


@pytest.mark.parametrize("dims", [(7, 11, 5, 13), (40, 3, 40), (9, 30, 30, 30, 2)])
def test_sparse_product_chain_matches_numpy(dims, driver, rng, tmp_path):
    factors = [np.where(rng.random((a, b)) < 0.3, rng.standard_normal((a, b)), 0.0) for a, b in zip(dims, dims[1:])]
    factors[0][0] = 0.0  # an empty row
    check(SparseProduct(factors), driver, rng, tmp_path)


@pytest.mark.parametrize("shape, K, J, t", [((10, 13), 4, 3, 1), ((64, 80), 8, 8, 3), ((7, 50), 5, 1, 2)])
def test_monarch_padding_matches_numpy(shape, K, J, t, driver, rng, tmp_path):
    check(Monarch.random(shape, in_blocks=K, out_blocks=J, rank=t, seed=1), driver, rng, tmp_path)


def layer_file(tmp_path, M, edit_meta=None, edit_arrays=None):
    writer = WRITERS[M.family]
    meta, arrays = writer.layout(M)
    meta = list(meta)
    arrays = [np.asarray(a, dtype=np.int32 if np.asarray(a).dtype.kind in "iu" else np.float32).copy() for a in arrays]
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    path = tmp_path / "bad.smlayer"
    path.write_bytes(layer_bytes(writer.family_id, M.shape, meta, arrays))
    return path


def _set(index, position, value):
    def edit(arrays):
        arrays[index][position] = value
    return edit


@pytest.mark.parametrize("matrix, edit_meta, edit_arrays, message", [
    (Sparse.random((6, 5), seed=0), None, _set(1, 0, 5), "column index 5 out of range"),
    (Sparse.random((6, 5), seed=0), None, _set(2, 3, 0), "row pointers decrease"),
    (Sparse.random((6, 5), seed=0), None, _set(2, 0, 1), "row pointers must run from 0"),
    (SparseProduct.random((6, 5), seed=0), lambda meta: meta.__setitem__(0, 70), None, "[1, 64]"),
    (SparseProduct.random((6, 5), seed=0), None, _set(4, 0, -1), "out of range"),
    (Monarch.random((10, 13), in_blocks=4, out_blocks=3, seed=0), lambda meta: meta.__setitem__(3, 9), None,
     "do not fit shape"),
    (Monarch.random((10, 13), in_blocks=4, out_blocks=3, seed=0), lambda meta: meta.__setitem__(2, 2), None,
     "array 0 (R)"),
])
def test_corrupt_files_are_rejected(matrix, edit_meta, edit_arrays, message, driver, tmp_path):
    path = layer_file(tmp_path, matrix, edit_meta, edit_arrays)
    inp = write_input(np.ones(matrix.shape[1]), tmp_path / "x.f32")
    with pytest.raises(LayerFileError, match=f"not a valid {matrix.family} layer") as exc:
        run_driver(driver, path, inp, warmup=0, repeats=1)
    assert message in str(exc.value) and "\n" not in str(exc.value)
