"""Compiled C helpers of the layers' inference fast path, built with the system C compiler at first use.

The sources are this package's ``*.c`` files and the headers they include (``sparse_rows.h``: the sparse row
kernels, shared with the C speed benchmark :mod:`structmat.speed_c`); the shared library is compiled once per
(sources, compiler, flags) with ``cc -O3 -march=native -shared -fPIC`` (``$CC`` and ``$STRUCTMAT_CFLAGS`` as for
``structmat bench-c``) into ``<cache>/native/<hash>/`` next to the C runner's binaries, under a temporary name then
renamed, so concurrent processes never load a half-written file. The library is called through :mod:`ctypes` on the
tensors' memory.

Two libraries: ``sparse_kernels.c`` (CSR factors: :func:`sparse_library`, a whole layer in one call through
:class:`SparseLayerPlan`) and ``block_sparse_kernels.c`` (BSR: :func:`block_sparse_library`,
:class:`BlockSparsePlan`). Nothing here is required: without a C compiler, when the build fails, or with
``STRUCTMAT_NATIVE=0`` in the environment, the loaders return None (with one logged warning when a build was
attempted) and the layers use torch's own kernels. Exports never call these helpers; the sparse layers' training
path uses :func:`csr_panels` forward and backward.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["sparse_library", "block_sparse_library", "SparseLayerPlan", "BlockSparsePlan", "csr_rows", "chunk_plan",
           "chunk_rows", "csr_panels", "aligned_scratch", "PANEL_ROWS"]

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
#: Input rows per panel of :func:`csr_panels` (the C kernel's PANEL).
PANEL_ROWS = 64
_LIBRARY: dict = {}


def _build(name: str) -> Path:
    """Compile ``<name>.c`` into a shared library (once) and return its path; raises CompilerError."""
    from structmat.speed_c.build import _resolve_compiler, _split_flags, default_cache_dir, run_compiler

    command, flags = _resolve_compiler(None), _split_flags(None)
    source = SOURCE_DIR / f"{name}.c"
    digest = hashlib.sha256()
    for part in (json.dumps(command), json.dumps(flags)):
        digest.update(part.encode() + b"\0")
    for path in [source] + sorted(SOURCE_DIR.glob("*.h")):  # the headers it may include (sparse_rows.h)
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    target_dir = default_cache_dir().parent / "native" / digest.hexdigest()[:20]
    library = target_dir / f"lib{name}.so"
    if library.exists():
        return library
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".build-") as tmp:
        out = Path(tmp) / library.name
        argv = command + flags + ["-shared", "-fPIC", str(source), "-o", str(out)]
        run_compiler(argv, f"{source.name} with {' '.join(command + flags)}", timeout=300)
        os.replace(out, library)
    return library


def sparse_library():
    """The compiled sparse kernels (:mod:`ctypes` library), or None when disabled or not buildable."""
    return _library("sparse_kernels", _declare_sparse)


def block_sparse_library():
    """The compiled block-sparse kernels (:mod:`ctypes` library), or None when disabled or not buildable."""
    return _library("block_sparse_kernels", _declare_block_sparse)


def _library(name: str, declare):
    """``<name>.c`` built and loaded once per process, its functions declared by ``declare``; None when switched
    off (``STRUCTMAT_NATIVE=0``) or not buildable (one logged warning)."""
    key = name.removesuffix("_kernels")
    if key in _LIBRARY:
        return _LIBRARY[key]
    library = None
    if os.environ.get("STRUCTMAT_NATIVE", "1") != "0":
        try:
            library = ctypes.CDLL(str(_build(name)))
        except Exception as exc:  # no compiler, failed build, unloadable file: torch's kernels serve instead
            logger.warning("structmat: compiled %s kernels unavailable (%s); using torch's kernels",
                           key.replace("_", "-"), exc)
        else:
            declare(library)
    _LIBRARY[key] = library
    return library


def _declare_sparse(library) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    library.sm_csr_rows.argtypes = [i64, i64, ptr, ptr, ptr, ptr, i64, ptr, i64]
    library.sm_csr_rows.restype = None
    library.sm_csr_panels.argtypes = [i64, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, i64, ptr]
    library.sm_csr_panels.restype = None
    library.sm_chunk_count.argtypes = [i64, i64, ptr, ptr]
    library.sm_chunk_count.restype = i64
    library.sm_chunk_build.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    library.sm_chunk_build.restype = None
    library.sm_chunk_rows.argtypes = [i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64]
    library.sm_chunk_rows.restype = None
    library.sm_chunks_available.restype = ctypes.c_int
    library.sm_sparse_rows.argtypes = [ptr, i64, ptr, ptr]
    library.sm_sparse_rows.restype = ctypes.c_int
    library.sm_sparse_panels.argtypes = [ptr, i64, ptr, ptr]
    library.sm_sparse_panels.restype = ctypes.c_int


def _declare_block_sparse(library) -> None:
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    arguments = [i64, i64, i64, i64, i64, ptr, ptr, ptr, ptr, ptr, i64, ptr, i64]
    library.sm_bsr_rows.argtypes = arguments
    library.sm_bsr_rows.restype = None
    library.sm_bsr_panels.argtypes = arguments
    library.sm_bsr_panels.restype = ctypes.c_int


def csr_rows(library, crow, col16, values, x, y) -> None:
    """``y = x Sᵀ`` one input row at a time (float32 tensors, x (b, cols) and y (b, rows) C-contiguous; ``crow``
    int32, ``col16`` the column indices as uint16 NumPy)."""
    rows = crow.shape[0] - 1
    library.sm_csr_rows(rows, x.shape[0], crow.data_ptr(), col16.ctypes.data, values.data_ptr(), x.data_ptr(),
                        x.shape[1], y.data_ptr(), rows)


def chunk_plan(library, crow, col, values, cols: int, min_fill: float = 0.0):
    """The chunked layout of the row kernel for AVX-512 (see ``sm_chunk_build`` in ``sparse_kernels.c``): chunk
    pointers per row (int32), each chunk's window start column (int32), 16 lane numbers (uint8) and 16 values
    (float32, zero-padded), with their addresses. None when the library was built without AVX-512, ``cols < 64``, or
    the chunks would hold fewer than ``min_fill`` values on average."""
    if cols < 64 or not library.sm_chunks_available():
        return None
    rows = crow.shape[0] - 1
    count = library.sm_chunk_count(rows, cols, crow.data_ptr(), col.data_ptr())
    if values.numel() < min_fill * count:
        return None
    # lanes and values 64-byte aligned: a 64-byte load across two cache lines costs two
    arrays = (np.empty(rows + 1, np.int32), np.empty(count, np.int32), _aligned(16 * count, np.uint8),
              _aligned(16 * count, np.float32))
    addresses = tuple(a.ctypes.data for a in arrays)
    library.sm_chunk_build(rows, cols, crow.data_ptr(), col.data_ptr(), values.data_ptr(), *addresses)
    return arrays, addresses


def chunk_rows(library, plan, x, y) -> None:
    """``y = x Sᵀ`` one input row at a time with the chunked layout of :func:`chunk_plan`."""
    library.sm_chunk_rows(y.shape[1], x.shape[0], *plan[1], x.data_ptr(), x.shape[1], y.data_ptr(), y.shape[1])


def csr_panels(library, crow, col, values, cols: int, x, y, scratch) -> None:
    """``y = x Sᵀ`` with the panel kernel; ``scratch``: float32, 64-byte aligned, ``PANEL_ROWS (cols + rows)``."""
    rows = crow.shape[0] - 1
    library.sm_csr_panels(rows, cols, x.shape[0], crow.data_ptr(), col.data_ptr(), values.data_ptr(),
                          x.data_ptr(), cols, y.data_ptr(), rows, scratch.ctypes.data)


def aligned_scratch(size: int) -> np.ndarray:
    """A float32 array of ``size`` entries starting on a 64-byte boundary."""
    return _aligned(size, np.float32)


def _aligned(size: int, dtype) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size + 64 // itemsize, dtype=dtype)
    start = (-raw.ctypes.data // itemsize) % (64 // itemsize)
    return raw[start:start + size]


class BlockSparsePlan:
    """A block-sparse layer, ``y = x Mᵀ + b``, for the compiled kernels (``sm_bsr_rows`` / ``sm_bsr_panels`` in
    ``block_sparse_kernels.c``): one call per forward pass.

    Parameters
    ----------
    library : the :func:`block_sparse_library`
    shape, block_shape : (int, int)
        ``(m, n)`` and ``(br, bc)``.
    indptr, cols : int32 tensors
        The BSR block-row pointers and block-columns (held by the plan).
    values : float32 tensor (nblocks, br, bc), C-contiguous
    bias : float32 tensor (m,) or None

    ``values`` and ``bias`` are read through their current memory on every call (a parameter whose ``.data`` is
    replaced is followed); the kernels allocate their scratch per call (no state shared between threads).
    """

    __slots__ = ("_rows", "_panels", "_head", "_indices", "_keep", "values", "bias")

    def __init__(self, library, shape, block_shape, indptr, cols, values, bias=None) -> None:
        self._rows, self._panels = library.sm_bsr_rows, library.sm_bsr_panels
        self._head = (*shape, *block_shape)
        self._indices = (indptr.data_ptr(), cols.data_ptr())
        self._keep = (indptr, cols)
        self.values, self.bias = values, bias

    def __call__(self, x, y, panels: bool = False) -> None:
        """``y = x Mᵀ + b`` (float32, C-contiguous): one input row at a time, or by panels of 64 rows."""
        arguments = (*self._head, x.shape[0], *self._indices, self.values.data_ptr(),
                     None if self.bias is None else self.bias.data_ptr(), x.data_ptr(), x.shape[1], y.data_ptr(),
                     y.shape[1])
        if not panels:
            self._rows(*arguments)
        elif self._panels(*arguments) != 0:
            raise MemoryError(f"the block-sparse panel kernel could not allocate its scratch for {x.shape[0]} rows")


class _Factor(ctypes.Structure):  # sm_factor in sparse_kernels.c
    _fields_ = [("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("indptr", ctypes.c_void_p),
                ("indices", ctypes.c_void_p), ("short_indices", ctypes.c_void_p), ("values", ctypes.c_void_p),
                ("chunk_ptr", ctypes.c_void_p), ("window", ctypes.c_void_p), ("lanes", ctypes.c_void_p),
                ("padded", ctypes.c_void_p)]


class _Layer(ctypes.Structure):  # sm_sparse_layer in sparse_kernels.c
    _fields_ = [("out", ctypes.c_int64), ("in_", ctypes.c_int64), ("num_factors", ctypes.c_int64),
                ("rank", ctypes.c_int64), ("widest", ctypes.c_int64), ("factors", ctypes.c_void_p),
                ("bias", ctypes.c_void_p), ("U", ctypes.c_void_p), ("V", ctypes.c_void_p)]


class SparseLayerPlan:
    """A whole sparse layer, ``y = S_1 (⋯ (S_J x)) + U (Vᵀ x) + b``, as one C structure, so that a forward pass is
    one call (``sm_sparse_rows`` / ``sm_sparse_panels`` in ``sparse_kernels.c``).

    Parameters
    ----------
    library : the :func:`sparse_library`
    shape : (out_features, in_features)
    factors : sequence of ``(rows, cols, crow, col, short_columns, values, chunks)`` in the order they apply (the
        first reads the input): CSR indices (int32 tensors), the 16-bit column indices (NumPy, or None), the values
        (float32 tensor) and :func:`chunk_plan`'s result (or None).
    bias, U, V : float32 tensors or None
        The bias and the low-rank part's ``U`` (out, rank) and ``V`` (in, rank), C-contiguous.

    The plan holds every array it points to; the kernels allocate their scratch per call (no state shared between
    threads). ``rows_available``: every factor has a row kernel (16-bit indices or a chunked layout).
    """

    __slots__ = ("library", "_layer", "_address", "_factors", "_keep", "rows_available")

    def __init__(self, library, shape, factors, bias=None, U=None, V=None) -> None:
        self.library = library
        self._keep = [bias, U, V]
        self._factors = (_Factor * max(len(factors), 1))()
        widest = max(shape)
        self.rows_available = True
        for k, (rows, cols, crow, col, short_columns, values, chunks) in enumerate(factors):
            chunk_addresses = chunks[1] if chunks is not None else (None,) * 4
            self._factors[k] = _Factor(rows, cols, crow.data_ptr(), col.data_ptr(),
                                       None if short_columns is None else short_columns.ctypes.data,
                                       values.data_ptr(), *chunk_addresses)
            self._keep += [crow, col, short_columns, values, chunks]
            self.rows_available &= chunks is not None or short_columns is not None
            widest = max(widest, rows, cols)
        rank = 0 if U is None else U.shape[1]
        self._layer = _Layer(shape[0], shape[1], len(factors), rank, widest, ctypes.addressof(self._factors),
                             *(None if t is None else t.data_ptr() for t in (bias, U, V)))
        self._address = ctypes.addressof(self._layer)

    def rows(self, x, y) -> None:
        """``y = layer(x)`` one input row at a time (float32 tensors, C-contiguous)."""
        if self.library.sm_sparse_rows(self._address, x.shape[0], x.data_ptr(), y.data_ptr()):
            raise MemoryError("the sparse row kernels could not allocate their scratch")

    def panels(self, x, y) -> None:
        """``y = `` the sparse factors applied to ``x`` plus the bias, by panels of 64 rows (the low-rank part is the
        caller's)."""
        if self.library.sm_sparse_panels(self._address, x.shape[0], x.data_ptr(), y.data_ptr()):
            raise MemoryError("the sparse panel kernel could not allocate its scratch")
