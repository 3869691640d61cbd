"""The binary layer format read by the C benchmark driver. This docstring is its one specification.

A layer file holds one structured matrix ``W`` of shape ``(m, n) = (out_features, in_features)`` in float32,
plus an optional bias, laid out for the family's C kernel. Everything is little-endian.

Header, 64 bytes::

    offset  type      field
     0      8 bytes   magic  b"SMLAYER\\0"
     8      uint32    format version (1)
    12      uint32    family id (the ``family_id`` of the family's writer in ``speed_c/writers.py``)
    16      uint32    value dtype: 1 = float32 (the only one)
    20      uint32    flags: bit 0 = a bias follows the family's arrays; other bits must be 0
    24      uint64    m (rows, out_features), 1 <= m < 2**31
    32      uint64    n (columns, in_features), 1 <= n < 2**31
    40      uint32    n_meta: number of integer metadata values (<= 2**24)
    44      uint32    n_arrays: number of family arrays, bias not included (<= 2**16)
    48      uint64    file size in bytes (a truncated file is caught before anything else is read)
    56      uint64    reserved, 0

Then, from offset 64:

- ``n_meta`` int64 values: the family's integer metadata (ranks, stage sizes, ...), each >= 0;
- the array table: ``n_arrays`` descriptors, plus one more for the bias when flag bit 0 is set. A
  descriptor is 16 bytes: uint32 dtype (1 = float32, 2 = int32), uint32 reserved (0), uint64 element count;
- the arrays' data, in table order. Each array starts at the next multiple of 64 bytes (zero padding), so
  a kernel reads aligned data in place; the padding after the last array ends exactly at the file size.
  The bias, when present, is float32 with ``m`` values and is added by the driver after the kernel.

What the metadata and arrays mean is the family's business: its writer (``speed_c/writers.py``) and its C
kernel (``speed_c/kernel_<family>.c``, whose comment repeats the layout) agree on it. The C loader
(``layer_io.c``) checks every offset and count against the file length before using it and the kernel's
``prepare`` checks the counts against ``(m, n)`` and the metadata, so a malformed file yields one error line.

The driver's input is a separate file of ``n`` raw little-endian float32 values (:func:`write_input`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structmat.matrices.base import StructuredMatrix
from structmat.matrices.io import atomic_write

__all__ = [
    "MAGIC", "FORMAT_VERSION", "LayerFileError", "LayerHeader", "write_layer", "layer_bytes", "read_header",
    "write_input",
]

MAGIC = b"SMLAYER\0"
FORMAT_VERSION = 1
HEADER_BYTES = 64
ALIGN = 64
DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.int32): 2}
_HEADER = struct.Struct("<8sIIIIQQIIQQ")
_DESCRIPTOR = struct.Struct("<IIQ")
FLAG_BIAS = 1


class LayerFileError(ValueError):
    """A layer or input file the C driver cannot use: truncated, corrupt, foreign, or of the wrong size."""


@dataclass(frozen=True)
class LayerHeader:
    """The parsed header and table of a layer file (for checks and tests; the driver parses in C)."""

    family_id: int
    shape: tuple[int, int]
    has_bias: bool
    meta: tuple[int, ...]
    array_counts: tuple[int, ...]
    file_size: int


def _pad(size: int) -> int:
    return -size % ALIGN


def layer_bytes(family_id: int, shape: tuple[int, int], meta, arrays, bias=None) -> bytes:
    """Encode a layer: the header, metadata, array table and 64-byte aligned arrays (see the module docstring).

    Parameters
    ----------
    family_id : int
    shape : (m, n)
    meta : sequence of int >= 0
    arrays : sequence of 1-D float32 or int32 arrays, in the order the family's kernel reads them
    bias : ndarray of shape (m,), optional
    """
    m, n = (int(s) for s in shape)
    if not (1 <= m < 2**31 and 1 <= n < 2**31):
        raise ValueError(f"layer shape must have sides in [1, 2**31); got {shape}")
    meta = [int(v) for v in meta]
    if any(v < 0 for v in meta):
        raise ValueError(f"layer metadata must be integers >= 0; got {meta}")
    arrays = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    for k, a in enumerate(arrays):
        if a.dtype not in DTYPE_CODES:
            raise TypeError(f"layer array {k} must be float32 or int32; got {a.dtype}")
    flags = 0
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        if bias.shape != (m,):
            raise ValueError(f"bias must have shape ({m},) (one value per output); got {bias.shape}")
        arrays.append(bias)
        flags |= FLAG_BIAS
    table_end = HEADER_BYTES + 8 * len(meta) + _DESCRIPTOR.size * len(arrays)
    body = [struct.pack(f"<{len(meta)}q", *meta)]
    body += [_DESCRIPTOR.pack(DTYPE_CODES[a.dtype], 0, a.size) for a in arrays]
    body.append(b"\0" * _pad(table_end))
    size = table_end + _pad(table_end)
    for a in arrays:
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        body += [data, b"\0" * _pad(len(data))]
        size += len(data) + _pad(len(data))
    n_arrays = len(arrays) - (1 if bias is not None else 0)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, int(family_id), 1, flags, m, n, len(meta), n_arrays, size, 0)
    out = header + b"".join(body)
    if len(out) != size:  # internal consistency, not user input
        raise RuntimeError(f"layer encoding produced {len(out)} bytes, expected {size}")
    return out


def write_layer(M: StructuredMatrix, path, bias=None) -> Path:
    """Write ``M`` (float32) and an optional bias to ``path`` in the layer format, atomically.

    Parameters
    ----------
    M : StructuredMatrix
        Any matrix whose family has a C writer (``structmat.speed_c.writers.WRITERS``).
    path : path-like
    bias : array of shape (m,), optional

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        the family has no C kernel (the message lists those that have one), or a bias of the wrong shape.
    """
    from structmat.speed_c.writers import c_layout

    family_id, meta, arrays = c_layout(M)
    data = layer_bytes(family_id, M.shape, meta, arrays, bias)
    path = Path(path)
    atomic_write(path, lambda f: f.write(data))
    return path


def read_header(path) -> LayerHeader:
    """Parse and check a layer file's header and table (the same checks as the C loader, minus the kernel's)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER_BYTES:
        raise LayerFileError(f"{path} is truncated: {len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, version, family_id, dtype, flags, m, n, n_meta, n_arrays, size, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise LayerFileError(f"{path} is not a structmat layer file (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise LayerFileError(f"{path} has layer format version {version}; this structmat reads {FORMAT_VERSION}")
    if size != len(data):
        raise LayerFileError(f"{path} is truncated or corrupt: the header says {size} bytes, the file has {len(data)}")
    if dtype != 1 or flags & ~FLAG_BIAS:
        raise LayerFileError(f"{path} has dtype code {dtype} and flags {flags:#x}; expected 1 and bit 0 only")
    has_bias = bool(flags & FLAG_BIAS)
    table = HEADER_BYTES + 8 * n_meta
    count = n_arrays + has_bias
    if table + _DESCRIPTOR.size * count > len(data):
        raise LayerFileError(f"{path} is truncated inside its metadata or array table")
    meta = struct.unpack_from(f"<{n_meta}q", data, HEADER_BYTES)
    counts = tuple(_DESCRIPTOR.unpack_from(data, table + _DESCRIPTOR.size * k)[2] for k in range(count))
    return LayerHeader(family_id, (m, n), has_bias, tuple(meta), counts[:n_arrays], len(data))


def write_input(x, path) -> Path:
    """Write a vector as raw little-endian float32 (the driver's input file), atomically."""
    x = np.ascontiguousarray(x, dtype="<f4").reshape(-1)
    path = Path(path)
    atomic_write(path, lambda f: f.write(x.tobytes()))
    return path
