"""A malicious pickle, in every file format structmat reads, never runs: each reader refuses it with a clear error.

The payload writes a marker file when unpickled. :data:`READERS` lists every format with a function that plants the
payload in a file of that format (as an object array, a torch pickle, or raw pickle bytes under the format's name)
and reads it the way the library does. A format added later (compressed whole-model files, say) joins by adding
an entry; the test runs over all of them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import structmat
from structmat.features.cache import CACHE_FORMAT, CACHE_FORMAT_VERSION, FeatureCache
from structmat.matrices.io import StructmatFileError, read_meta
from structmat.statistics import InputStatistics
from structmat.weights import load_weight

from .outcomes import Recorder

ERRORS = (ValueError, TypeError, FileNotFoundError, OSError, StructmatFileError)


class Payload:
    """Unpickling this writes ``marker``: the proof that a reader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pickle code ran')",)


def object_array(marker) -> np.ndarray:
    array = np.empty(3, dtype=object)
    array[:] = [Payload(marker), 1.0, 2.0]
    return array


def raw(marker) -> bytes:
    return pickle.dumps(Payload(marker))


def save_object_npy(path, marker) -> Path:
    np.save(path, object_array(marker), allow_pickle=True)
    return Path(path)


# ---------------------------------------------------------------- saved matrices
def _matrix_meta_object(tmp, marker):
    path = tmp / "M.npz"
    M = structmat.LowRank.random((6, 5), seed=0)
    np.savez(path, meta=object_array(marker), U=M.U, V=M.V)
    return lambda: structmat.load(path)


def _matrix_array_object(tmp, marker):
    path = tmp / "M.npz"
    M = structmat.LowRank.random((6, 5), seed=0)
    meta = {"format": "structmat", "format_version": 1, "family": "lowrank", "shape": [6, 5], "dtype": "float64"}
    np.savez(path, meta=np.array(json.dumps(meta)), U=object_array(marker), V=M.V)
    return lambda: structmat.load(path)


def _matrix_info(tmp, marker):
    path = tmp / "M.npz"
    np.savez(path, meta=object_array(marker))
    return lambda: read_meta(path)


def _matrix_raw(tmp, marker):
    path = tmp / "M.npz"
    path.write_bytes(raw(marker))
    return lambda: structmat.load(path)


def _matrix_as_npy(tmp, marker):
    path = save_object_npy(tmp / "M.npy", marker)
    return lambda: structmat.load(path)


# ---------------------------------------------------------------- weight specs
def _weight_npy(tmp, marker):
    path = save_object_npy(tmp / "W.npy", marker)
    return lambda: load_weight(str(path))


def _weight_npz(tmp, marker):
    path = tmp / "W.npz"
    np.savez(path, W=object_array(marker))
    return lambda: load_weight(f"{path}:W")


def _weight_raw_npy(tmp, marker):
    path = tmp / "W.npy"
    path.write_bytes(raw(marker))
    return lambda: load_weight(str(path))


def _weight_torch(tmp, marker):
    import torch

    path = tmp / "model.pt"
    torch.save({"layer.weight": torch.ones(3, 2), "evil": Payload(marker)}, path)
    return lambda: load_weight(f"{path}:layer.weight")


def _weight_raw_pt(tmp, marker):
    path = tmp / "model.pt"
    path.write_bytes(raw(marker))
    return lambda: load_weight(str(path))


# ---------------------------------------------------------------- feature cache
def _tiny_cache(tmp) -> Path:
    """A finished two-row cache with a head, written by hand in the cache format."""
    directory = tmp / "cache"
    directory.mkdir()
    files = {"features-00000.npy": np.ones((2, 3), np.float32), "labels-00000.npy": np.zeros(2, np.int64),
             "logits-00000.npy": np.ones((2, 4), np.float32), "head-weight.npy": np.ones((4, 3), np.float32),
             "head-bias.npy": np.zeros(4, np.float32)}
    for name, array in files.items():
        np.save(directory / name, array)
    _write_manifest(directory)
    return directory


def _write_manifest(directory: Path) -> None:
    digest = {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in
              ("features-00000.npy", "labels-00000.npy", "logits-00000.npy", "head-weight.npy", "head-bias.npy")}
    manifest = {"format": CACHE_FORMAT, "format_version": CACHE_FORMAT_VERSION, "backbone": {"name": "x", "layer": "y"},
                "dataset": {"name": "d", "count": 2}, "dtype": "float32", "count": 2, "chunk_size": 2,
                "batch_size": 2, "arrays": ["features", "labels", "logits"], "feature_dim": 3, "num_classes": 4,
                "head_sha256": {k: v for k, v in digest.items() if k.startswith("head")}, "complete": True,
                "chunks": [{"start": 0, "count": 2, "sha256": {k.split("-")[0]: v for k, v in digest.items()
                                                                if not k.startswith("head")}}]}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _cache_chunk(tmp, marker, *, verify=True):
    directory = _tiny_cache(tmp)
    save_object_npy(directory / "features-00000.npy", marker)
    _write_manifest(directory)  # checksums updated: the attacker controls the whole directory
    return lambda: FeatureCache(directory, verify=verify).features.to_numpy()


def _cache_chunk_unverified(tmp, marker):
    return _cache_chunk(tmp, marker, verify=False)


def _cache_head(tmp, marker):
    directory = _tiny_cache(tmp)
    save_object_npy(directory / "head-weight.npy", marker)
    _write_manifest(directory)
    return lambda: FeatureCache(directory, verify=False).head_weights()


def _cache_manifest(tmp, marker):
    directory = _tiny_cache(tmp)
    (directory / "manifest.json").write_bytes(raw(marker))
    return lambda: FeatureCache(directory)


# ---------------------------------------------------------------- other inputs
def _statistics(tmp, marker):
    path = tmp / "stats.npz"
    np.savez(path, meta=object_array(marker), sum=np.zeros(3), gram=np.eye(3))
    return lambda: InputStatistics.load(path)


def _statistics_rows(tmp, marker):
    path = save_object_npy(tmp / "rows.npy", marker)
    return lambda: InputStatistics.from_path(path)


def _dataset_npz(tmp, marker):
    from structmat.features import load_dataset

    path = tmp / "images.npz"
    np.savez(path, images=object_array(marker))
    return lambda: load_dataset(str(path))


def _results_csv(tmp, marker):
    from structmat.benchmarks.results import read_rows

    path = tmp / "sweep.csv"
    path.write_bytes(raw(marker))
    return lambda: read_rows(path)


def _c_layer(tmp, marker):
    from structmat.speed_c import read_header

    path = tmp / "M.smlayer"
    path.write_bytes(raw(marker))
    return lambda: read_header(path)


def _c_layer_driver(tmp, marker):
    from structmat.speed_c import run_driver, write_input
    from structmat.speed_c.build import compile_driver

    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    path = tmp / "M.smlayer"
    path.write_bytes(raw(marker))
    inp = write_input(np.ones(3), tmp / "x.f32")
    driver = compile_driver()
    return lambda: run_driver(driver, path, inp, warmup=0, repeats=1)


#: Every format structmat reads: name -> plant(tmp_path, marker) returning the read to attempt.
READERS = {
    "matrix npz: meta as a pickled object array": _matrix_meta_object,
    "matrix npz: an array as a pickled object array": _matrix_array_object,
    "matrix npz read by structmat info": _matrix_info,
    "matrix npz: raw pickle bytes": _matrix_raw,
    "matrix: an object .npy": _matrix_as_npy,
    "weight spec .npy: object array": _weight_npy,
    "weight spec .npz: object array": _weight_npz,
    "weight spec .npy: raw pickle bytes": _weight_raw_npy,
    "weight spec .pt: state dict with an object": _weight_torch,
    "weight spec .pt: raw pickle bytes": _weight_raw_pt,
    "feature cache: features chunk (checksums fixed up)": _cache_chunk,
    "feature cache: features chunk, unverified": _cache_chunk_unverified,
    "feature cache: dense head": _cache_head,
    "feature cache: manifest": _cache_manifest,
    "input statistics .npz": _statistics,
    "input rows .npy": _statistics_rows,
    "dataset .npz": _dataset_npz,
    "results CSV (resume)": _results_csv,
    "C layer file header": _c_layer,
    "C layer file through the driver": _c_layer_driver,
}


@pytest.mark.parametrize("name", list(READERS))
def test_malicious_pickle_never_runs(request, tmp_path, name):
    recorder = Recorder(request, "malicious pickles")
    marker = tmp_path / "PWNED"
    read = READERS[name](tmp_path, marker)
    outcome = recorder.call(name, read, errors=ERRORS, check=lambda value: "a file carrying a pickle was read")
    assert not marker.exists(), f"{name}: unpickling ran code ({outcome})"
