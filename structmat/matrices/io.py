"""Saving and loading structured matrices: one ``.npz`` per matrix, never pickled.

The file holds the family's arrays plus ``meta``, a 0-d string array with a JSON object::

    {"format": "structmat", "format_version": 1, "family": "lowrank", "shape": [m, n],
     "dtype": "float64", "array_names": ["U", "V"], ...family hyper-parameters...}

``array_names`` lists the arrays, so that dropping an optional one (a stored permutation) is noticed; files written
before it existed load without that check.

Files are written to a temporary file and renamed, so an interrupted save leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from structmat.matrices.base import StructuredMatrix
from structmat.npyfile import NpzArchive, NumpyFileError, open_npz

__all__ = ["FORMAT_VERSION", "StructmatFileError", "save_matrix", "load", "read_meta", "atomic_write", "check_writable"]

FORMAT_VERSION = 1
_FORMAT_TAG = "structmat"
_REQUIRED_KEYS = ("format", "format_version", "family", "shape", "dtype")


class StructmatFileError(ValueError):
    """A file that is missing, corrupt, truncated or not a structmat matrix."""


def _creation_mode(path: Path) -> int:
    """The mode a new file gets from ``open()``: ``0o666`` minus the umask; an existing file keeps its mode."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_writable(path, what: str = "output") -> Path:
    """Check, before any work is done, that ``path`` can be written: not a directory, its directory exists and is
    writable. Returns it as a Path; raises FileNotFoundError, IsADirectoryError or PermissionError naming it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"the {what} {path} is a directory; give a file name")
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(f"cannot write the {what} {path}: its directory {parent} does not exist")
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot write the {what} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"cannot write the {what} {path}: permission denied")
    return path


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``.

    The file gets the mode ``open()`` would give it (``0o666`` minus the umask; an existing file's mode is kept),
    not the ``0o600`` of a temporary file. Errors name ``path``, never the temporary name."""
    path = check_writable(path, "file")
    mode = _creation_mode(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise type(exc)(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_matrix(M: StructuredMatrix, path) -> None:
    """Write ``M`` to ``path`` (``.npz``). See the module docstring for the layout."""
    arrays = M._arrays()
    if "meta" in arrays:
        raise ValueError(f"{type(M).__name__}._arrays() must not use the reserved name 'meta'")
    meta = {
        "format": _FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "family": M.family,
        "shape": list(M.shape),
        "dtype": str(M.dtype),
        "array_names": sorted(arrays),
        **M._meta(),
    }
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def _open(path) -> tuple[Path, NpzArchive]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise StructmatFileError(f"{path} is a directory, not a structmat matrix file (.npz)")
    try:
        return path, open_npz(path)
    except NumpyFileError as exc:
        raise StructmatFileError(f"{exc} (expected a structmat matrix file)") from None


def _parse_meta(path, data: NpzArchive) -> dict:
    if "meta" not in data.files:
        raise StructmatFileError(
            f"{path} has no 'meta' entry, so it is not a structmat matrix file "
            f"(expected a JSON meta with keys {list(_REQUIRED_KEYS)}; found arrays {data.files})"
        )
    if data.dtype("meta").kind != "U" or data.shapes["meta"] != ():
        raise StructmatFileError(f"{path}: the 'meta' entry must be a 0-d string; got dtype {data.dtype('meta')} "
                                 f"and shape {data.shapes['meta']}")
    try:
        meta = json.loads(str(data.read("meta")[()]))
    except (ValueError, RecursionError) as exc:
        raise StructmatFileError(f"{path}: the 'meta' entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_TAG:
        raise StructmatFileError(f"{path}: 'meta' does not carry format='structmat'; not a structmat matrix file")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise StructmatFileError(f"{path}: 'meta' lacks keys {missing}; expected {list(_REQUIRED_KEYS)}")
    version = meta["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise StructmatFileError(
            f"{path} has format_version {version!r}; this structmat reads versions 1 to {FORMAT_VERSION}"
        )
    shape = meta["shape"]
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise StructmatFileError(f"{path}: 'meta' shape must be [m, n] with m, n >= 1; got {shape!r}")
    if meta["dtype"] not in ("float32", "float64"):
        raise StructmatFileError(f"{path}: 'meta' dtype must be 'float32' or 'float64'; got {meta['dtype']!r}")
    return meta


def read_meta(path) -> dict:
    """The JSON ``meta`` of a saved matrix plus the names and shapes of its arrays (for ``structmat info``); the
    shapes come from the arrays' headers, nothing else is read."""
    path, data = _open(path)
    with data:
        meta = _parse_meta(path, data)
        meta["arrays"] = {k: list(shape) for k, shape in data.shapes.items() if k != "meta"}
    return meta


def _check_stored_arrays(path, arrays: dict) -> None:
    """Refuse arrays no family stores: complex, boolean or non-numeric ones, and floats that are not finite."""
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu":
            raise StructmatFileError(f"{path}: array {name!r} has dtype {array.dtype}; structmat stores real floats "
                                     "and integers only")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise StructmatFileError(f"{path}: array {name!r} holds {bad} NaN or Inf values; a saved matrix must be "
                                     "finite")


def _check_canonical(path, M: StructuredMatrix, arrays: dict, meta: dict) -> None:
    """The file must be what ``M.save`` would write: the same array names, shapes and values, and the same meta.
    Registry-driven, so it covers every family: a tampered, reshaped or truncated entry that the family's
    constructor happened to accept (an extra axis flattened, a float index rounded, a meta key ignored) is refused
    instead of giving a different matrix than the one saved."""
    canonical = M._arrays()
    if set(canonical) != set(arrays):
        extra, missing = sorted(set(arrays) - set(canonical)), sorted(set(canonical) - set(arrays))
        differences = [f"{word} {names}" for word, names in (("extra", extra), ("missing", missing)) if names]
        raise StructmatFileError(f"{path}: a {M.family} matrix stores arrays {sorted(canonical)}; the file has "
                                 + ", ".join(differences))
    for name, want in canonical.items():
        have = arrays[name]
        if have.shape != want.shape:
            raise StructmatFileError(f"{path}: array {name!r} has shape {have.shape}; this {M.family} matrix stores "
                                     f"it with shape {want.shape}")
        if want.dtype.kind == "f" and have.dtype.kind != "f" or want.dtype.kind in "iu" and have.dtype.kind not in "iu":
            raise StructmatFileError(f"{path}: array {name!r} has dtype {have.dtype}; expected "
                                     f"{'floats' if want.dtype.kind == 'f' else 'integers'}")
        if not np.array_equal(have, want):
            raise StructmatFileError(f"{path}: array {name!r} does not hold values a {M.family} matrix can store "
                                     "(they change when loaded); the file is corrupt or was edited")
    expected = {"format": _FORMAT_TAG, "format_version": meta["format_version"], "family": M.family,
                "shape": list(M.shape), "dtype": str(M.dtype), **M._meta()}
    if "array_names" in meta:  # files written before it was recorded do not have it
        expected["array_names"] = sorted(canonical)
    expected = json.loads(json.dumps(expected))
    if meta != expected:
        keys = sorted(k for k in set(meta) | set(expected) if meta.get(k) != expected.get(k))
        says, gives = {k: meta.get(k) for k in keys}, {k: expected.get(k) for k in keys}
        raise StructmatFileError(f"{path}: 'meta' does not match its arrays in {keys} (the file says {says}, the "
                                 f"arrays give {gives})")


def load(path) -> StructuredMatrix:
    """Read a matrix written by ``StructuredMatrix.save``.

    Every array's header is checked against the bytes present before anything is read, the arrays must be real and
    finite, and the file must be exactly what ``save`` writes for the matrix it describes (same arrays, shapes,
    values and meta): a damaged or edited file is refused rather than loaded as another matrix.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    StructmatFileError (a ValueError)
        the file is corrupt, truncated, edited, from another program, of an unknown family or a newer format.
    """
    from structmat.families import FAMILIES

    path, data = _open(path)
    with data:
        meta = _parse_meta(path, data)
        family = FAMILIES.get(meta["family"])
        if family is None:
            raise StructmatFileError(
                f"{path} holds family {meta['family']!r}, which this structmat does not know; "
                f"known families: {sorted(FAMILIES)}"
            )
        try:
            arrays = {k: data.read(k) for k in data.files if k != "meta"}
        except NumpyFileError as exc:
            raise StructmatFileError(f"{path} is truncated or corrupt: {exc}") from None
    _check_stored_arrays(path, arrays)
    try:
        M = family.matrix_class._from_arrays({k: v.copy() for k, v in arrays.items()}, meta)
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as exc:
        what = f"missing array {exc}" if isinstance(exc, KeyError) else str(exc)
        raise StructmatFileError(f"{path}: the arrays do not form a valid {meta['family']} matrix ({what})") from None
    if list(M.shape) != list(meta["shape"]):
        raise StructmatFileError(f"{path}: meta says shape {meta['shape']} but the arrays give {list(M.shape)}")
    _check_canonical(path, M, arrays, meta)
    return M
