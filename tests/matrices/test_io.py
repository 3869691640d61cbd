import json

import numpy as np
import pytest

import structmat
from structmat import LowRank, StructmatFileError
from structmat.matrices.io import read_meta


@pytest.fixture
def saved(tmp_path):
    M = LowRank.random((12, 7), rank=2, seed=0)
    path = tmp_path / "m.npz"
    M.save(path)
    return M, path


def test_meta_is_json_with_version_and_family(saved):
    M, path = saved
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"][()]))
    assert meta["format"] == "structmat" and meta["format_version"] == 1
    assert meta["family"] == "lowrank" and meta["shape"] == [12, 7] and meta["dtype"] == "float64"
    assert read_meta(path)["arrays"] == {"U": [12, 2], "V": [7, 2]}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        structmat.load(tmp_path / "nope.npz")


def test_truncated_file(saved):
    _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StructmatFileError, match="m.npz"):
        structmat.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive at all" * 10)
    with pytest.raises(StructmatFileError, match="garbage.npz") as info:
        structmat.load(path)
    assert "zip" in str(info.value) and "allow_pickle" not in str(info.value)  # never suggests unpickling


def test_foreign_npz_without_meta(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, W=np.ones((3, 3)))
    with pytest.raises(StructmatFileError, match="no 'meta' entry.*expected a JSON meta"):
        structmat.load(path)


def test_plain_npy_is_refused(tmp_path):
    path = tmp_path / "W.npy"
    np.save(path, np.ones((3, 3)))
    with pytest.raises(StructmatFileError, match="single .npy array"):
        structmat.load(path)


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, meta=np.array([{"family": "lowrank"}], dtype=object))
    with pytest.raises(StructmatFileError):
        structmat.load(path)


def _rewrite(path, meta=None, drop=None):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != drop}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def test_unknown_family(saved):
    _, path = saved
    meta = read_meta(path)
    del meta["arrays"]
    _rewrite(path, {**meta, "family": "wavelet"})
    with pytest.raises(StructmatFileError, match="family 'wavelet'.*known families"):
        structmat.load(path)


def test_newer_format_version(saved):
    _, path = saved
    meta = read_meta(path)
    del meta["arrays"]
    _rewrite(path, {**meta, "format_version": 99})
    with pytest.raises(StructmatFileError, match="format_version 99"):
        structmat.load(path)


def test_missing_array(saved):
    _, path = saved
    _rewrite(path, drop="V")
    with pytest.raises(StructmatFileError, match="do not form a valid lowrank matrix"):
        structmat.load(path)


def test_inconsistent_arrays(saved):
    _, path = saved
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["V"] = np.ones((7, 3))
    np.savez(path, **arrays)
    with pytest.raises(StructmatFileError, match="same number of columns"):
        structmat.load(path)


def test_meta_shape_mismatch(saved):
    _, path = saved
    meta = read_meta(path)
    del meta["arrays"]
    _rewrite(path, {**meta, "shape": [5, 5]})
    with pytest.raises(StructmatFileError, match="meta says shape"):
        structmat.load(path)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    M = LowRank.random((6, 5), seed=1)
    path = tmp_path / "m.npz"
    M.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        LowRank.random((6, 5), seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_transposed_view_cannot_be_saved(tmp_path):
    M = structmat.Dense(np.ones((3, 2)))
    from structmat.matrices.base import TransposedMatrix

    with pytest.raises(TypeError, match="cannot be saved"):
        TransposedMatrix(M).save(tmp_path / "t.npz")


def test_complex_factors_are_refused_not_truncated():
    U = np.ones((4, 2)) + 1j
    with pytest.raises(TypeError, match="complex"):
        structmat.LowRank(U, np.ones((3, 2)))


def test_a_directory_is_not_a_matrix_file(tmp_path):
    with pytest.raises(StructmatFileError, match="is a directory"):
        structmat.load(tmp_path)
