import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from structmat.features import (
    CacheMismatchError, ChunkedArray, FeatureCache, FeatureCacheError, extract_features,
)
from tests.features._tiny import tiny_backbone, tiny_dataset

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cache_files(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


def test_extract_matches_the_backbone_and_reads_as_memory_maps(tmp_path):
    backbone, dataset = tiny_backbone(), tiny_dataset(70)
    cache = extract_features(backbone, dataset, tmp_path / "c", chunk_size=32, batch_size=8, progress=False)
    assert cache.count == 70 and cache.features.shape == (70, 12) and cache.logits.shape == (70, 5)
    assert [len(c) for c in cache.features.chunks()] == [32, 32, 6]
    assert all(isinstance(c, np.memmap) and not c.flags.writeable for c in cache.features.chunks())
    images, labels = backbone.transform.collate([dataset[i] for i in range(70)])
    features, logits = backbone.forward(images)
    np.testing.assert_allclose(cache.features.to_numpy(), features.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cache.logits.to_numpy(), logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache.labels.to_numpy(), dataset.labels)
    weight, bias = cache.head_weights()
    np.testing.assert_allclose(cache.features.to_numpy() @ weight.T + bias, cache.logits.to_numpy(), atol=1e-5)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["backbone"]["layer"] == "fc" and len(manifest["chunks"]) == 3
    assert manifest["format"] == "structmat-features" and manifest["format_version"] == 1
    cache.verify()


def test_chunked_array_indexing_matches_numpy(rng):
    parts = [rng.standard_normal((n, 3)) for n in (4, 1, 6)]
    whole = np.concatenate(parts)
    array = ChunkedArray(parts)
    assert array.shape == (11, 3) and len(array) == 11
    np.testing.assert_array_equal(array.to_numpy(), whole)
    for key in (slice(2, 9), slice(None, None, 3), slice(5, 5), 7, -1, [10, 0, 4, 4], np.array([3, 5])):
        np.testing.assert_array_equal(array[key], whole[key])
    np.testing.assert_array_equal(array[3:8, 1], whole[3:8, 1])
    with pytest.raises(IndexError):
        array.take([11])


def test_float16_cache(tmp_path):
    backbone, dataset = tiny_backbone(), tiny_dataset(20)
    full = extract_features(backbone, dataset, tmp_path / "a", progress=False)
    half = extract_features(backbone, dataset, tmp_path / "b", dtype="float16", progress=False)
    assert half.features.dtype == np.float16 and half.logits.dtype == np.float32
    np.testing.assert_allclose(half.features.to_numpy(), full.features.to_numpy(), rtol=2e-3, atol=1e-3)


def test_finished_cache_is_reused_without_recomputing(tmp_path, monkeypatch):
    backbone, dataset = tiny_backbone(), tiny_dataset(30)
    extract_features(backbone, dataset, tmp_path, chunk_size=16, progress=False)
    before = cache_files(tmp_path)
    monkeypatch.setattr(type(backbone), "forward", lambda *a: pytest.fail("a finished cache was recomputed"))
    cache = extract_features(backbone, dataset, tmp_path, chunk_size=7, batch_size=3, progress=False)
    assert cache.count == 30 and cache_files(tmp_path) == before


@pytest.mark.parametrize("change", ["weights", "layer", "dataset", "dtype", "image_size"])
def test_mismatching_cache_is_refused(tmp_path, change):
    extract_features(tiny_backbone(), tiny_dataset(20), tmp_path, progress=False)
    backbone, dataset, dtype = tiny_backbone(), tiny_dataset(20), "float32"
    if change == "weights":
        backbone = tiny_backbone(seed=1)
    elif change == "layer":
        backbone = tiny_backbone(layer="body")
    elif change == "dataset":
        dataset = tiny_dataset(20, seed=1)
    elif change == "dtype":
        dtype = "float16"
    else:
        backbone = tiny_backbone(image_size=14)
    with pytest.raises(CacheMismatchError, match="made for other inputs") as info:
        extract_features(backbone, dataset, tmp_path, dtype=dtype, progress=False)
    assert {"weights": "weights_sha256", "layer": "layer", "dataset": "fingerprint", "dtype": "dtype",
            "image_size": "transform"}[change] in str(info.value)
    from structmat.features import cache_key

    with pytest.raises(CacheMismatchError):
        FeatureCache(tmp_path, expected=cache_key(backbone, dataset, dtype))
    cache = extract_features(backbone, dataset, tmp_path, dtype=dtype, overwrite=True, progress=False)
    assert cache.backbone == backbone.describe()


def test_unfinished_corrupt_and_foreign_caches(tmp_path):
    directory = tmp_path / "c"
    extract_features(tiny_backbone(), tiny_dataset(40), directory, chunk_size=16, progress=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["complete"] = False
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureCacheError, match="unfinished"):
        FeatureCache(directory)
    manifest["complete"] = True
    (directory / "manifest.json").write_text(json.dumps(manifest))
    data = bytearray((directory / "features-00001.npy").read_bytes())
    data[-1] ^= 0xFF
    (directory / "features-00001.npy").write_bytes(bytes(data))
    with pytest.raises(FeatureCacheError, match="checksum"):
        FeatureCache(directory, verify=True)
    (directory / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(FeatureCacheError, match="not a structmat feature cache"):
        FeatureCache(directory)
    with pytest.raises(FeatureCacheError, match="no manifest.json"):
        FeatureCache(tmp_path)


def test_damaged_chunk_is_extracted_again_on_resume(tmp_path):
    backbone, dataset = tiny_backbone(), tiny_dataset(40)
    extract_features(backbone, dataset, tmp_path / "ref", chunk_size=16, progress=False)
    directory = tmp_path / "c"
    extract_features(backbone, dataset, directory, chunk_size=16, progress=False)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["complete"] = False
    (directory / "manifest.json").write_text(json.dumps(manifest))
    (directory / "logits-00001.npy").write_bytes(b"garbage")
    extract_features(backbone, dataset, directory, progress=False)
    assert cache_files(directory) == cache_files(tmp_path / "ref")


CHILD = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from tests.features._tiny import tiny_backbone, tiny_dataset
    from structmat.features import extract_features
    backbone = tiny_backbone()
    backbone.split_layer.register_forward_hook(lambda *args: time.sleep(0.02))  # slow enough to kill mid-way
    extract_features(backbone, tiny_dataset(400), sys.argv[1], chunk_size=40, batch_size=10, progress=False)
""")


def test_kill_9_mid_extraction_then_resume_equals_uninterrupted(tmp_path):
    directory = tmp_path / "interrupted"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    manifest = directory / "manifest.json"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if manifest.exists() and len(json.loads(manifest.read_text())["chunks"]) >= 3:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the child finished before it could be interrupted"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    state = json.loads(manifest.read_text())
    done = len(state["chunks"])
    assert not state["complete"] and 3 <= done < 10
    kept = {name: (directory / name).stat().st_mtime_ns for name in (f"features-{i:05d}.npy" for i in range(done))}

    backbone, dataset = tiny_backbone(), tiny_dataset(400)
    resumed = extract_features(backbone, dataset, directory, chunk_size=40, batch_size=10, progress=False)
    assert {name: (directory / name).stat().st_mtime_ns for name in kept} == kept  # finished chunks were kept
    extract_features(backbone, dataset, tmp_path / "straight", chunk_size=40, batch_size=10, progress=False)
    assert cache_files(directory) == cache_files(tmp_path / "straight")
    assert resumed.count == 400
    resumed.verify()


# ---------------------------------------------------------------- checks on open: checksums and finite values
def _tiny_finished_cache(tmp_path):
    return extract_features(tiny_backbone(), tiny_dataset(40), tmp_path / "c", chunk_size=16, batch_size=8,
                            progress=False)


def test_a_bit_flipped_chunk_is_refused_when_opened(tmp_path):
    cache = _tiny_finished_cache(tmp_path)
    path = cache.directory / "features-00001.npy"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(FeatureCacheError, match="features-00001.npy does not match its checksum"):
        FeatureCache(cache.directory)
    assert FeatureCache(cache.directory, verify=False).count == 40  # trusting the files is still possible


def test_non_finite_features_are_refused_even_with_matching_checksums(tmp_path):
    from structmat.features.cache import file_sha256, read_manifest, write_manifest

    cache = _tiny_finished_cache(tmp_path)
    path = cache.directory / "features-00002.npy"
    features = np.load(path)
    features[3, 1] = np.nan
    np.save(path, features)
    manifest = read_manifest(cache.directory)
    manifest["chunks"][2]["sha256"]["features"] = file_sha256(path)
    write_manifest(cache.directory, manifest)
    with pytest.raises(FeatureCacheError, match=r"features-00002.npy: 1 rows of features hold NaN or Inf \(first: row 35\)"):
        FeatureCache(cache.directory)


def test_reusing_a_damaged_cache_extracts_the_damaged_chunks_again(tmp_path):
    cache = _tiny_finished_cache(tmp_path)
    before = cache_files(cache.directory)
    path = cache.directory / "logits-00001.npy"
    path.write_bytes(path.read_bytes()[:-8])  # truncated
    again = extract_features(tiny_backbone(), tiny_dataset(40), cache.directory, chunk_size=16, batch_size=8,
                             progress=False)
    assert again.count == 40 and cache_files(cache.directory) == before


def test_the_backbone_giving_nan_is_refused(tmp_path):
    import torch

    backbone = tiny_backbone()
    with torch.no_grad():
        backbone.head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="the backbone gave NaN or Inf logits"):
        extract_features(backbone, tiny_dataset(20), tmp_path / "c", chunk_size=16, batch_size=8, progress=False)
