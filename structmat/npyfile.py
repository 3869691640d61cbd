"""Reading ``.npy`` and ``.npz`` files safely: never unpickled, and sizes checked before anything is allocated.

``np.load(path, allow_pickle=False)`` already refuses object arrays, but a header that declares a huge shape makes
it allocate (``MemoryError``) before finding that the file is short, a damaged ``.npz`` member fails with
``zipfile.BadZipFile`` (bad CRC) or ``EOFError`` when it is read, and a file that is not NumPy at all gets a
message that suggests ``allow_pickle=True``. Here every array's header is parsed first (``numpy.lib.format``) and
its declared size compared with the bytes actually present, so each of those cases is one :class:`NumpyFileError`
(a ``ValueError``) that names the file and what is wrong with it.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["NumpyFileError", "NPY_MAGIC", "ZIP_MAGIC", "read_npy_header", "load_npy", "NpzArchive", "open_npz"]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
#: The largest ``.npy`` header read (NumPy's own default limit).
_MAX_HEADER = 10_000


class NumpyFileError(ValueError):
    """A ``.npy``/``.npz`` file that is truncated, corrupt, pickled, or not a NumPy file at all."""


def read_npy_header(f, where: str, available: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse the ``.npy`` header at the current position of ``f``; return ``(shape, fortran_order, dtype,
    data_bytes)`` after checking that the array's ``data_bytes`` fit in the ``available`` bytes that follow the
    header's start. Raises :class:`NumpyFileError`."""
    start = f.tell()
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise NumpyFileError(f"{where} is not a readable .npy array: its header is damaged ({exc})") from None
    if dtype.hasobject:
        raise NumpyFileError(f"{where} holds Python objects (dtype {dtype}); they would have to be unpickled, which "
                             "structmat never does. Save plain numeric arrays")
    header = f.tell() - start
    data_bytes = math.prod(shape) * dtype.itemsize
    if header + data_bytes != available:
        what = "truncated" if header + data_bytes > available else "longer than its header says"
        raise NumpyFileError(f"{where} is {what}: its header declares shape {shape} of {dtype} "
                             f"({data_bytes:,} bytes of data) but {max(available - header, 0):,} bytes follow it")
    return tuple(shape), fortran, dtype, data_bytes


def _refuse_foreign(path: Path, magic: bytes, expected: str) -> None:
    if magic.startswith(NPY_MAGIC) or magic.startswith(ZIP_MAGIC):
        return
    if magic[:1] == b"\x80":
        raise NumpyFileError(f"{path} is a Python pickle, not {expected}; structmat never unpickles")
    raise NumpyFileError(f"{path} is not {expected} (it starts with {magic[:8]!r})")


def load_npy(path, *, mmap_mode=None) -> np.ndarray:
    """``np.load`` of a single ``.npy`` file, with its header checked first (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise NumpyFileError(f"{path} is a directory, not a .npy file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            _refuse_foreign(path, magic, "a .npy file")
            raise NumpyFileError(f"{path} is not a .npy file (it is a zip archive: an .npz?)")
        f.seek(0)
        read_npy_header(f, str(path), size)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise NumpyFileError(f"{path} is not a readable .npy file ({exc})") from None


class NpzArchive:
    """An ``.npz`` archive opened for reading: ``files``, ``shapes`` (from the headers, nothing decompressed) and
    ``read(name)``. Every member's header is checked on opening; a member that fails its CRC when read raises
    :class:`NumpyFileError`. Use as a context manager, or call ``close()``."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise NumpyFileError(f"{self.path} is not a readable .npz (zip) archive ({exc})") from None
        try:
            self._members = {}
            for info in self._zip.infolist():
                if not info.filename.endswith(".npy"):
                    raise NumpyFileError(f"{self.path} holds {info.filename!r}, which is not a .npy array")
                name = info.filename[:-4]
                with self._zip.open(info) as member:
                    head = io.BytesIO(member.read(_MAX_HEADER + 16))
                shape, _, dtype, _ = read_npy_header(head, f"{self.path}:{name}", info.file_size)
                self._members[name] = (info, shape, dtype)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            self._zip.close()
            if isinstance(exc, NumpyFileError):
                raise
            raise NumpyFileError(f"{self.path} is a damaged .npz archive ({exc})") from None

    @property
    def files(self) -> list[str]:
        return list(self._members)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: shape for name, (_, shape, _) in self._members.items()}

    def dtype(self, name: str) -> np.dtype:
        return self._members[name][2]

    def read(self, name: str) -> np.ndarray:
        """The array ``name``, fully read (its CRC checked by ``zipfile``)."""
        info = self._members[name][0]
        try:
            with self._zip.open(info) as member:
                return np.lib.format.read_array(io.BytesIO(member.read()), allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise NumpyFileError(f"{self.path}:{name} is damaged ({exc})") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_npz(path) -> NpzArchive:
    """Open an ``.npz`` archive with every member's header checked (see :class:`NpzArchive`)."""
    path = Path(path)
    if path.is_dir():
        raise NumpyFileError(f"{path} is a directory, not an .npz file")
    with open(path, "rb") as f:
        magic = f.read(len(NPY_MAGIC))
    if not magic.startswith(ZIP_MAGIC):
        _refuse_foreign(path, magic, "an .npz (zip) archive")
        raise NumpyFileError(f"{path} is a single .npy array, not an .npz archive")
    return NpzArchive(path)
