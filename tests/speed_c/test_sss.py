"""The SSS C kernel: stored permutations, uneven and empty stages, and its own metadata checks."""

import struct

import numpy as np
import pytest

from structmat.matrices.sss import SSS
from structmat.speed_c import LayerFileError, run_driver, time_c, write_input
from structmat.speed_c.layer_format import layer_bytes
from structmat.speed_c.runner import TOLERANCE
from structmat.speed_c.writers import WRITERS


def with_orders(M, rng, rows=True, cols=True):
    return SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims,
                         **{kind: M.flat(kind) for kind in "ABCDEFG"},
                         row_order=rng.permutation(M.shape[0]) if rows else None,
                         col_order=rng.permutation(M.shape[1]) if cols else None)


@pytest.mark.parametrize("shape", [(37, 29), (5, 60), (60, 5)])
@pytest.mark.parametrize("num_stages, state_dim", [(1, 1), (3, 5), (9, 2), (70, 3)])
@pytest.mark.parametrize("orders", [(False, False), (True, True), (True, False), (False, True)])
def test_sss_matches_numpy(shape, num_stages, state_dim, orders, driver, rng, tmp_path):
    """Stages wider than 8 and narrower, K > min(m, n) (empty stages), permutations on either side."""
    M = with_orders(SSS.random(shape, num_stages=num_stages, state_dim=state_dim, seed=num_stages), rng, *orders)
    x = rng.standard_normal(shape[1])
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    expected = M.to_dense() @ x
    assert np.linalg.norm(y - expected) <= 2 * TOLERANCE * np.linalg.norm(expected)


def test_sss_uneven_stages(driver, rng, tmp_path):
    M = SSS.random((30, 26), m_sizes=[0, 13, 1, 16, 0], n_sizes=[7, 0, 9, 1, 9], state_dim=4, seed=3)
    x = rng.standard_normal(26)
    y = time_c(M, x, binary=driver, work_dir=tmp_path, warmup=0, repeats=1)["output"]
    np.testing.assert_allclose(y, M.to_dense() @ x, rtol=1e-4, atol=1e-4 * np.abs(M.to_dense() @ x).max())


def sss_file(tmp_path, M, edit_meta=None, edit_arrays=None):
    meta, arrays = WRITERS["sss"].layout(M)
    meta = list(meta)
    arrays = [np.asarray(a, dtype=np.int32 if np.asarray(a).dtype.kind in "iu" else np.float32) for a in arrays]
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    path = tmp_path / "bad.smlayer"
    path.write_bytes(layer_bytes(WRITERS["sss"].family_id, M.shape, meta, arrays))
    return path


def set_item(index, value):
    def edit(values):
        values[index] = value
    return edit


@pytest.mark.parametrize(
    "edit_meta, edit_arrays, message",
    [
        (set_item(0, 5), None, "3 + 4K + 2 metadata values"),                    # K
        (set_item(1, 2), None, "must be 0 or 1"),                                 # has_row_order
        (set_item(1, 1), None, "expected 8 arrays"),                              # says a row order follows
        (set_item(3, 7), None, "must sum to the shape"),                          # m_0
        (set_item(3 + 2 * 3, 1), None, "start and end with 0"),                   # d[0]
        (set_item(3 + 2 * 3 + 1, 2**40), None, "<= 2^30"),                        # d[1]
        (None, lambda arrays: arrays.__setitem__(3, arrays[3][:-1]), "array 3 (D)"),
        (None, lambda arrays: arrays.__setitem__(0, arrays[0].astype(np.int32)), "must be float32"),
    ],
)
def test_sss_metadata_errors(edit_meta, edit_arrays, message, driver, tmp_path):
    M = SSS.random((12, 10), num_stages=3, state_dim=2, seed=0)
    path = sss_file(tmp_path, M, edit_meta, edit_arrays)
    inp = write_input(np.ones(10), tmp_path / "x.f32")
    with pytest.raises(LayerFileError, match="not a valid sss layer") as exc:
        run_driver(driver, path, inp, warmup=0, repeats=1)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_sss_bad_permutation(driver, tmp_path, rng):
    M = with_orders(SSS.random((12, 10), num_stages=3, state_dim=2, seed=0), rng)

    def repeat_an_index(arrays):
        arrays[7] = arrays[7].copy()
        arrays[7][0] = arrays[7][1]

    path = sss_file(tmp_path, M, edit_arrays=repeat_an_index)
    inp = write_input(np.ones(10), tmp_path / "x.f32")
    with pytest.raises(LayerFileError, match="row_order is not a permutation"):
        run_driver(driver, path, inp, warmup=0, repeats=1)
    data = bytearray(sss_file(tmp_path, M).read_bytes())
    struct.pack_into("<q", data, 64 + 8 * 3, 1 << 62)  # m_0 huge: the sums overflow, caught
    path.write_bytes(bytes(data))
    with pytest.raises(LayerFileError, match="must sum to the shape"):
        run_driver(driver, path, inp, warmup=0, repeats=1)
