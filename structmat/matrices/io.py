"""Saving and loading structured matrices: one ``.npz`` per matrix, never pickled.

The file holds the family's arrays plus ``meta``, a 0-d string array with a JSON object::

    {"format": "structmat", "format_version": 1, "family": "lowrank", "shape": [m, n],
     "dtype": "float64", ...family hyper-parameters...}

Files are written to a temporary file and renamed, so an interrupted save leaves no half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from structmat.matrices.base import StructuredMatrix

__all__ = ["FORMAT_VERSION", "StructmatFileError", "save_matrix", "load", "read_meta", "atomic_write"]

FORMAT_VERSION = 1
_FORMAT_TAG = "structmat"
_REQUIRED_KEYS = ("format", "format_version", "family", "shape", "dtype")


class StructmatFileError(ValueError):
    """A file that is missing, corrupt, truncated or not a structmat matrix."""


def atomic_write(path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
        **M._meta(),
    }
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def _open(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK") and magic != b"\x93NUMPY":
        # np.load would try to unpickle it (and its message suggests allow_pickle=True): never for a matrix file
        raise StructmatFileError(f"{path} is not a structmat matrix file: not an .npz (zip) archive")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise StructmatFileError(f"{path} is not a readable .npz file ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise StructmatFileError(f"{path} is a single .npy array, not a structmat .npz matrix file")
    return path, data


def _parse_meta(path, data) -> dict:
    if "meta" not in data.files:
        raise StructmatFileError(
            f"{path} has no 'meta' entry, so it is not a structmat matrix file "
            f"(expected a JSON meta with keys {list(_REQUIRED_KEYS)}; found arrays {data.files})"
        )
    try:
        meta = json.loads(str(data["meta"][()]))
    except (ValueError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise StructmatFileError(f"{path}: the 'meta' entry is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT_TAG:
        raise StructmatFileError(f"{path}: 'meta' does not carry format='structmat'; not a structmat matrix file")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise StructmatFileError(f"{path}: 'meta' lacks keys {missing}; expected {list(_REQUIRED_KEYS)}")
    if not isinstance(meta["format_version"], int) or meta["format_version"] > FORMAT_VERSION:
        raise StructmatFileError(
            f"{path} has format_version {meta['format_version']!r}; this structmat reads versions <= {FORMAT_VERSION}"
        )
    return meta


def read_meta(path) -> dict:
    """The JSON ``meta`` of a saved matrix plus the names and shapes of its arrays (for ``structmat info``)."""
    path, data = _open(path)
    with data:
        meta = _parse_meta(path, data)
        meta["arrays"] = {k: list(data[k].shape) for k in data.files if k != "meta"}
    return meta


def load(path) -> StructuredMatrix:
    """Read a matrix written by ``StructuredMatrix.save``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    StructmatFileError (a ValueError)
        the file is corrupt, truncated, from another program, of an unknown family or a newer format.
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
            arrays = {k: data[k] for k in data.files if k != "meta"}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise StructmatFileError(f"{path} is truncated or corrupt ({exc})") from exc
    try:
        M = family.matrix_class._from_arrays(arrays, meta)
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise StructmatFileError(f"{path}: the arrays do not form a valid {meta['family']} matrix ({exc})") from exc
    if list(M.shape) != list(meta["shape"]):
        raise StructmatFileError(f"{path}: meta says shape {meta['shape']} but the arrays give {list(M.shape)}")
    return M
