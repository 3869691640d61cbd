"""Run a backbone once over a dataset and write its features into a resumable on-disk cache.

:func:`extract_features` walks the dataset in chunks of ``chunk_size`` images, each split into batches of
``batch_size`` counted from the chunk's start, so that the batches of a resumed run are exactly those of an
uninterrupted one and the finished caches are byte-identical. After each chunk its files and then the manifest
are written atomically (see :mod:`structmat.features.cache` for the layout). Memory holds one chunk and one batch,
whatever the dataset's size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from structmat._validation import check_positive_int
from structmat.features.backbones import Backbone
from structmat.features.cache import (
    CACHE_FORMAT, CACHE_FORMAT_VERSION, MANIFEST, CacheMismatchError, FeatureCache, FeatureCacheError,
    file_sha256, chunk_file, mismatches, read_manifest, write_array, write_manifest,
)

__all__ = ["extract_features", "cache_key", "FEATURE_DTYPES"]

logger = logging.getLogger(__name__)

FEATURE_DTYPES = ("float32", "float16")
_KINDS = ("features", "labels", "logits")


def cache_key(backbone: Backbone, dataset, dtype: str = "float32") -> dict:
    """The manifest fields a cache must match to be reused: backbone, dataset and feature dtype."""
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}; got {dtype!r}")
    name = getattr(dataset, "name", type(dataset).__name__)
    if not hasattr(dataset, "fingerprint"):
        raise TypeError(f"dataset {name!r} has no fingerprint(); use a dataset from structmat.features.datasets "
                        "or give yours a fingerprint() returning a content hash")
    return {"backbone": backbone.describe(), "dataset": {"name": name, "fingerprint": dataset.fingerprint(),
                                                         "count": len(dataset)},
            "dtype": dtype}


def _new_manifest(key: dict, backbone: Backbone, dataset, chunk_size: int, batch_size: int) -> dict:
    arrays = ["features"]
    if getattr(dataset, "labels", None) is not None:
        arrays.append("labels")
    if backbone.head is not None:
        arrays.append("logits")
    return {"format": CACHE_FORMAT, "format_version": CACHE_FORMAT_VERSION, **key, "count": len(dataset),
            "chunk_size": chunk_size, "batch_size": batch_size, "arrays": arrays, "feature_dim": None,
            "num_classes": backbone.head.out_features if backbone.head is not None else None,
            "head_sha256": None, "chunks": [], "complete": False}


def _clear(directory: Path) -> None:
    """Remove a cache's own files (leaves anything else in the directory alone)."""
    for pattern in ("features-*.npy", "labels-*.npy", "logits-*.npy", "head-*.npy", MANIFEST, ".*.tmp"):
        for path in directory.glob(pattern):
            path.unlink()


def _valid_prefix(directory: Path, manifest: dict) -> list[dict]:
    """The finished chunks whose files are all present and match their checksums (a resume keeps those)."""
    kept = []
    for index, chunk in enumerate(manifest["chunks"]):
        ok = all((directory / chunk_file(kind, index)).exists()
                 and file_sha256(directory / chunk_file(kind, index)) == digest
                 for kind, digest in chunk["sha256"].items())
        if not ok:
            logger.warning("%s: chunk %d is missing or damaged; extracting again from there", directory, index)
            break
        kept.append(chunk)
    return kept


def _write_head(directory: Path, head) -> dict:
    digests = {"head-weight.npy": write_array(directory / "head-weight.npy",
                                              head.weight.detach().cpu().float().numpy())}
    if head.bias is not None:
        digests["head-bias.npy"] = write_array(directory / "head-bias.npy", head.bias.detach().cpu().float().numpy())
    return digests


def extract_features(backbone: Backbone, dataset, directory, *, dtype: str = "float32", chunk_size: int = 1024,
                     batch_size: int = 32, num_workers: int = 0, overwrite: bool = False,
                     progress: bool = True) -> FeatureCache:
    """Extract ``backbone``'s features of every image of ``dataset`` into the cache ``directory``.

    Parameters
    ----------
    backbone : Backbone
    dataset : a dataset from :mod:`structmat.features.datasets` (or any map-style dataset of ``(image, label)``
        with ``name`` and ``fingerprint()``)
    directory : path
        Created if needed. A finished cache for the same backbone, dataset and dtype is returned as it is;
        an unfinished one is resumed (with the chunk and batch sizes it was started with).
    dtype : {"float32", "float16"}
        Storage dtype of the features (logits are always float32).
    chunk_size, batch_size : int
        Images per file and per forward pass.
    num_workers : int
        DataLoader worker processes (0 loads in this process).
    overwrite : bool
        Replace a cache made for other inputs instead of refusing it.

    Returns
    -------
    FeatureCache

    Raises
    ------
    CacheMismatchError
        ``directory`` holds a cache of another backbone, dataset or dtype (and ``overwrite`` is False).
    """
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    num_workers = check_positive_int(num_workers, "num_workers", minimum=0)
    if len(dataset) == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} is empty")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(backbone, dataset, dtype)

    manifest = None
    if (directory / MANIFEST).exists():
        try:
            manifest = read_manifest(directory)
            problems = mismatches(manifest, key)
        except FeatureCacheError:
            if not overwrite:
                raise
            problems = ["unreadable"]
        if problems:
            if not overwrite:
                raise CacheMismatchError(f"the feature cache at {directory} was made for other inputs: "
                                         + "; ".join(problems) + ". Pass another cache directory, or overwrite=True "
                                         "(--overwrite) to replace it")
            logger.info("replacing the feature cache at %s (%s)", directory, "; ".join(problems))
            _clear(directory)
            manifest = None
        elif manifest["complete"]:
            try:
                cache = FeatureCache(directory, expected=key)
                logger.info("reusing the finished feature cache at %s", directory)
                return cache
            except CacheMismatchError:
                raise
            except FeatureCacheError as exc:  # a damaged file: redo the chunks from the first damaged one
                logger.warning("the finished feature cache at %s failed its checks (%s); extracting the damaged "
                               "chunks again", directory, exc)
                manifest["complete"] = False
    for leftover in directory.glob(".*.tmp"):  # half-written files of a killed run
        leftover.unlink()
    if manifest is None:
        manifest = _new_manifest(key, backbone, dataset, chunk_size, batch_size)
        if backbone.head is not None:
            manifest["head_sha256"] = _write_head(directory, backbone.head)
        write_manifest(directory, manifest)
    else:
        manifest["chunks"] = _valid_prefix(directory, manifest)
        chunk_size, batch_size = manifest["chunk_size"], manifest["batch_size"]
        logger.info("resuming the feature extraction in %s at image %d of %d", directory,
                    len(manifest["chunks"]) * chunk_size, manifest["count"])
    _run(backbone, dataset, directory, manifest, num_workers, progress)
    return FeatureCache(directory, expected=key)


def _run(backbone: Backbone, dataset, directory: Path, manifest: dict, num_workers: int, progress: bool) -> None:
    count, chunk_size, batch_size = manifest["count"], manifest["chunk_size"], manifest["batch_size"]
    first = len(manifest["chunks"])
    chunks = [(i * chunk_size, min(count, (i + 1) * chunk_size)) for i in range(first, math.ceil(count / chunk_size))]
    batches = [list(range(b, min(b + batch_size, stop))) for start, stop in chunks
               for b in range(start, stop, batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=backbone.transform.collate,
                        num_workers=num_workers)
    store_dtype = np.dtype(manifest["dtype"])
    bar = tqdm(total=count, initial=first * chunk_size, unit="img", desc="extract features", disable=not progress,
               smoothing=0.1)
    buffers, filled, index = None, 0, first
    with bar:
        for images, labels in loader:
            features, logits = backbone.forward(images)
            _check_finite_batch(features, logits, filled + chunks[index - first][0], dataset)
            if buffers is None:
                size = chunks[index - first][1] - chunks[index - first][0]
                buffers = {"features": np.empty((size, features.shape[1]), store_dtype),
                           "labels": np.empty(size, np.int64),
                           "logits": None if logits is None else np.empty((size, logits.shape[1]), np.float32)}
            rows = slice(filled, filled + features.shape[0])
            buffers["features"][rows] = features.float().numpy()
            buffers["labels"][rows] = labels.numpy()
            if logits is not None:
                buffers["logits"][rows] = logits.float().numpy()
            if not np.isfinite(buffers["features"][rows]).all():  # finite in float32, beyond float16's range
                raise ValueError(f"features of images from {filled + chunks[index - first][0]} on exceed the range of "
                                 f"{store_dtype} (65504 for float16); extract with dtype='float32'")
            filled += features.shape[0]
            bar.update(features.shape[0])
            if filled == buffers["features"].shape[0]:
                _finish_chunk(directory, manifest, index, buffers)
                buffers, filled, index = None, 0, index + 1
    manifest["complete"] = True
    write_manifest(directory, manifest)


def _check_finite_batch(features, logits, first_row: int, dataset) -> None:
    """Refuse NaN or Inf from the backbone before it reaches the cache (a training run on it would silently give
    NaN losses)."""
    import torch

    for kind, values in (("features", features), ("logits", logits)):
        if values is not None and not bool(torch.isfinite(values).all()):
            rows = torch.nonzero(~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)).flatten()
            raise ValueError(f"the backbone gave NaN or Inf {kind} for {rows.numel()} images of dataset "
                             f"{getattr(dataset, 'name', '')!r} (first: image {first_row + int(rows[0])}); the "
                             "chunks before them are kept. Check the images and the backbone's weights")


def _finish_chunk(directory: Path, manifest: dict, index: int, buffers: dict) -> None:
    digests = {kind: write_array(directory / chunk_file(kind, index), buffers[kind])
               for kind in _KINDS if kind in manifest["arrays"]}
    manifest["chunks"].append({"start": index * manifest["chunk_size"], "count": int(buffers["features"].shape[0]),
                               "sha256": digests})
    manifest["feature_dim"] = int(buffers["features"].shape[1])
    write_manifest(directory, manifest)
