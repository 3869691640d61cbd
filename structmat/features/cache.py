"""The feature cache on disk: chunked ``.npy`` files read back as memory maps, and a JSON manifest.

A cache is a directory::

    manifest.json                       what was extracted, and which chunks are finished
    features-00000.npy, ...             (chunk, feature_dim) float32 or float16
    labels-00000.npy, ...               (chunk,) int64                      -- when the dataset has labels
    logits-00000.npy, ...               (chunk, num_classes) float32        -- when the backbone has a head
    head-weight.npy, head-bias.npy      the dense head the logits came from -- when the backbone has a head

The manifest records the format and its version, the backbone (name, split layer, SHA-256 of its weights, the
input transform), the dataset (name, content fingerprint, count), the feature dtype, the chunk size, the array
dimensions, and per finished chunk the SHA-256 of each of its files. Every file is written atomically
(temporary name, then rename) and the manifest is rewritten after each chunk, so an interrupted extraction
leaves only whole chunks behind and resumes from the first unfinished one. Nothing is pickled; arrays are
opened with ``allow_pickle=False`` as read-only memory maps, so reading costs memory only for what is touched.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np

from structmat.matrices.io import StructmatFileError, atomic_write
from structmat.npyfile import load_npy

__all__ = [
    "FeatureCache", "ChunkedArray", "FeatureCacheError", "CacheMismatchError", "CACHE_FORMAT", "CACHE_FORMAT_VERSION",
    "MANIFEST", "read_manifest", "write_manifest", "write_array", "file_sha256", "chunk_file", "mismatches",
]

CACHE_FORMAT = "structmat-features"
CACHE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Manifest fields that must agree for a cache to be reused for a request.
KEY_FIELDS = ("backbone", "dataset", "dtype")


class FeatureCacheError(StructmatFileError):
    """A feature cache that is missing, unfinished, corrupt, or not a structmat feature cache."""


class CacheMismatchError(FeatureCacheError):
    """A feature cache made for another backbone, dataset or feature dtype than the one requested."""


def chunk_file(kind: str, index: int) -> str:
    """``features-00003.npy`` and the like."""
    return f"{kind}-{index:05d}.npy"


def write_array(path, array: np.ndarray) -> str:
    """Save ``array`` as ``.npy`` atomically; return the SHA-256 of the bytes written."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory, manifest: dict) -> None:
    """Rewrite ``manifest.json`` atomically (sorted keys, so equal caches have equal manifests)."""
    data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    atomic_write(Path(directory) / MANIFEST, lambda f: f.write(data))


def read_manifest(directory) -> dict:
    """The manifest of the cache in ``directory``; FeatureCacheError if it is absent, corrupt or foreign."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FeatureCacheError(f"{directory} is not a feature cache: it has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeatureCacheError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise FeatureCacheError(f"{path} does not carry format={CACHE_FORMAT!r}; not a structmat feature cache")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > CACHE_FORMAT_VERSION:
        raise FeatureCacheError(f"{path} has format_version {version!r}; this structmat reads versions "
                                f"<= {CACHE_FORMAT_VERSION}")
    missing = [k for k in (*KEY_FIELDS, "count", "chunks", "complete", "arrays") if k not in manifest]
    if missing:
        raise FeatureCacheError(f"{path} lacks the fields {missing}")
    return manifest


def _describe(value) -> str:
    if isinstance(value, dict):
        parts = [f"{k}={v!r}" for k, v in value.items() if k in ("name", "layer", "count")]
        return ", ".join(parts) or json.dumps(value, sort_keys=True)
    return repr(value)


def mismatches(manifest: dict, expected: dict) -> list[str]:
    """Human-readable differences between a cache's key fields and the requested ones (empty when they agree)."""
    out = []
    for field in KEY_FIELDS:
        have, want = manifest.get(field), expected.get(field)
        if have == want:
            continue
        if isinstance(have, dict) and isinstance(want, dict):
            keys = [k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k)]
            out.append(f"{field} differs in {keys}: the cache has {_describe(have)}, requested {_describe(want)}")
        else:
            out.append(f"{field}: the cache has {have!r}, requested {want!r}")
    return out


def _check_finite_rows(array: "ChunkedArray", directory, kind: str) -> None:
    """Raise FeatureCacheError if a float array of the cache holds NaN or Inf (checked chunk by chunk)."""
    if array.dtype.kind != "f":
        raise FeatureCacheError(f"{directory}: the {kind} are stored as {array.dtype}; expected floats")
    start = 0
    for index, part in enumerate(array.chunks()):
        finite = np.isfinite(part)
        if not finite.all():
            rows = np.flatnonzero(~finite.reshape(part.shape[0], -1).all(axis=1)) + start
            raise FeatureCacheError(f"{directory}/{chunk_file(kind, index)}: {rows.size} rows of {kind} hold NaN or "
                                    f"Inf (first: row {int(rows[0])}); training on them would give NaN losses. "
                                    "Extract the features again (is the backbone or the input data broken?)")
        start += part.shape[0]


class ChunkedArray:
    """A read-only array stored as consecutive row chunks, each a memory-mapped ``.npy`` file.

    Supports ``len``, ``shape``, ``dtype``, integer and slice indexing (returns ndarrays), :meth:`take` for
    index arrays, and :meth:`chunks` to stream it. Only the rows touched are read from disk.

    Examples
    --------
    >>> import numpy as np
    >>> rows = ChunkedArray([np.arange(6.0).reshape(3, 2), np.arange(6.0, 10.0).reshape(2, 2)])
    >>> rows.shape, rows[2:4].tolist(), rows.take([4, 0]).tolist()
    ((5, 2), [[4.0, 5.0], [6.0, 7.0]], [[8.0, 9.0], [0.0, 1.0]])
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        if not parts:
            raise ValueError("a ChunkedArray needs at least one chunk")
        tail = parts[0].shape[1:]
        if any(p.shape[1:] != tail or p.dtype != parts[0].dtype for p in parts):
            raise ValueError("chunks must share dtype and trailing shape")
        self._parts = parts
        self._offsets = np.concatenate([[0], np.cumsum([p.shape[0] for p in parts])]).astype(np.int64)
        self.shape = (int(self._offsets[-1]), *tail)
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def chunks(self):
        """Yield the chunks in order (memory maps; copy what you keep)."""
        yield from self._parts

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as one ndarray."""
        start, stop = max(0, start), min(len(self), stop)
        if stop <= start:
            return np.empty((0, *self.shape[1:]), self.dtype)
        first = int(np.searchsorted(self._offsets, start, side="right") - 1)
        last = int(np.searchsorted(self._offsets, stop, side="left") - 1)
        pieces = [self._parts[i][max(start - self._offsets[i], 0):min(stop, self._offsets[i + 1]) - self._offsets[i]]
                  for i in range(first, last + 1)]
        return np.concatenate(pieces) if len(pieces) > 1 else np.array(pieces[0])

    def take(self, indices) -> np.ndarray:
        """Rows at ``indices`` (any order, repeats allowed) as one ndarray."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        indices = np.where(indices < 0, indices + len(self), indices)
        out = np.empty((indices.size, *self.shape[1:]), self.dtype)
        chunk = np.searchsorted(self._offsets, indices, side="right") - 1
        for i in np.unique(chunk):
            where = np.nonzero(chunk == i)[0]
            out[where] = self._parts[i][indices[where] - self._offsets[i]]
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the trailing axes of what they give
            rows = self[key[0]]
            return rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            return self.take([key])[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self.read(start, stop) if step == 1 else self.take(np.arange(start, stop, step))
        return self.take(key)

    def to_numpy(self) -> np.ndarray:
        """The whole array in memory."""
        return self.read(0, len(self))

    def __repr__(self) -> str:
        return f"ChunkedArray(shape={self.shape}, dtype={self.dtype}, chunks={len(self._parts)})"


class FeatureCache:
    """A finished feature cache, opened for reading.

    Parameters
    ----------
    directory : path
    expected : dict, optional
        Key fields (``backbone``, ``dataset``, ``dtype``) the cache must have; a
        :class:`CacheMismatchError` lists every difference.
    verify : bool
        Check every file's size and SHA-256 against the manifest and refuse non-finite features and logits
        (default True: it reads the cache once, about 0.1 s for the demo's 45 MB; what is training for
        reads it anyway). ``False`` trusts the files as they are.

    Attributes
    ----------
    features : ChunkedArray of shape (count, feature_dim)
    labels : ChunkedArray of shape (count,) or None
    logits : ChunkedArray of shape (count, num_classes) or None
        The backbone head's outputs (float32).
    manifest : dict
    """

    def __init__(self, directory, *, expected: dict | None = None, verify: bool = True) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no such feature cache directory: {self.directory}")
        self.manifest = manifest = read_manifest(self.directory)
        if expected is not None:
            problems = mismatches(manifest, expected)
            if problems:
                raise CacheMismatchError(f"the feature cache at {self.directory} was made for other inputs: "
                                         + "; ".join(problems) + ". Use another cache directory or overwrite it")
        if not manifest["complete"]:
            done = sum(c["count"] for c in manifest["chunks"])
            raise FeatureCacheError(f"the feature cache at {self.directory} is unfinished ({done} of "
                                    f"{manifest['count']} images); rerun the extraction to resume it")
        if verify:
            self.verify()
        arrays = {name: self._open_kind(name) for name in manifest["arrays"]}
        self.features: ChunkedArray = arrays["features"]
        self.labels: ChunkedArray | None = arrays.get("labels")
        self.logits: ChunkedArray | None = arrays.get("logits")
        if len(self.features) != manifest["count"]:
            raise FeatureCacheError(f"{self.directory}: the chunks hold {len(self.features)} rows; the manifest "
                                    f"says {manifest['count']}")
        if verify:
            for kind in ("features", "logits"):
                if arrays.get(kind) is not None:
                    _check_finite_rows(arrays[kind], self.directory, kind)

    def _open_kind(self, kind: str) -> ChunkedArray:
        parts = []
        for index, chunk in enumerate(self.manifest["chunks"]):
            path = self.directory / chunk_file(kind, index)
            try:
                part = load_npy(path, mmap_mode="r")
            except FileNotFoundError:
                raise FeatureCacheError(f"{self.directory}: chunk file {path.name} listed in the manifest is "
                                        "missing") from None
            except (ValueError, OSError) as exc:
                raise FeatureCacheError(f"{path} is not a readable .npy file ({exc})") from None
            if part.shape[0] != chunk["count"]:
                raise FeatureCacheError(f"{path} holds {part.shape[0]} rows; the manifest says {chunk['count']}")
            parts.append(part)
        return ChunkedArray(parts)

    def verify(self) -> None:
        """Compare every chunk file (and the head files) with its SHA-256 in the manifest; a file whose checksum
        is missing from the manifest, or a manifest that lists no checksums, is refused too."""
        files = {}
        for i, chunk in enumerate(self.manifest["chunks"]):
            digests = chunk.get("sha256") if isinstance(chunk, dict) else None
            if not isinstance(digests, dict) or set(digests) != set(self.manifest["arrays"]):
                raise FeatureCacheError(f"{self.directory}/{MANIFEST}: chunk {i} does not list a SHA-256 for each of "
                                        f"{self.manifest['arrays']}; the manifest is damaged")
            files.update({chunk_file(kind, i): digest for kind, digest in digests.items()})
        head = self.manifest.get("head_sha256") or {}
        if not isinstance(head, dict):
            raise FeatureCacheError(f"{self.directory}/{MANIFEST}: head_sha256 must map file names to checksums")
        files.update(head)
        for name, digest in files.items():
            path = self.directory / name
            if not path.is_file():
                raise FeatureCacheError(f"{self.directory}: {name} is missing")
            if file_sha256(path) != digest:
                raise FeatureCacheError(f"{path} does not match its checksum in the manifest: the cache is corrupt "
                                        "(extract again: the damaged chunks are redone, the rest kept)")

    # ------------------------------------------------------------------ summaries
    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int | None:
        """Width of the cached logits, or None without a head."""
        return None if self.logits is None else int(self.logits.shape[1])

    @property
    def backbone(self) -> dict:
        return self.manifest["backbone"]

    @property
    def dataset(self) -> dict:
        return self.manifest["dataset"]

    def head_weights(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(weight, bias)`` of the backbone's dense head (float32; weight of shape (num_classes, feature_dim)),
        or None when the backbone had no ``nn.Linear`` head."""
        if not self.manifest.get("head_sha256"):
            return None
        try:
            weight = load_npy(self.directory / "head-weight.npy")
            bias_path = self.directory / "head-bias.npy"
            bias = load_npy(bias_path) if bias_path.exists() else None
        except (ValueError, OSError) as exc:
            raise FeatureCacheError(f"{self.directory}: the dense head's files are unreadable ({exc})") from None
        for name, array in (("head-weight.npy", weight), ("head-bias.npy", bias)):
            if array is not None and (array.dtype.kind != "f" or not np.isfinite(array).all()):
                raise FeatureCacheError(f"{self.directory}/{name} must hold finite floats; got dtype {array.dtype} "
                                        "with non-finite or non-float values")
        if weight.ndim != 2 or (bias is not None and bias.shape != (weight.shape[0],)):
            raise FeatureCacheError(f"{self.directory}: the dense head has weight shape {weight.shape} and bias shape "
                                    f"{None if bias is None else bias.shape}; expected (classes, features) and "
                                    "(classes,)")
        return weight, bias

    def __repr__(self) -> str:
        return (f"FeatureCache({str(self.directory)!r}, count={self.count}, feature_dim={self.feature_dim}, "
                f"dtype={self.manifest['dtype']}, backbone={self.backbone['name']!r}, "
                f"layer={self.backbone['layer']!r}, dataset={self.dataset['name']!r}, "
                f"logits={'yes' if self.logits is not None else 'no'}, labels={'yes' if self.labels is not None else 'no'})")
