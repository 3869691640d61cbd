"""Numba kernels of the sparse families: products of one CSR factor with a dense block, forward and transposed.

A CSR factor of shape ``(rows, cols)`` is ``indptr`` (int32, ``rows + 1``), ``indices`` (int32, ``nnz``, column of
each stored value, sorted within a row) and ``data`` (float, ``nnz``). The kernels are serial: benchmarks time one
core.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["csr_matmat", "csr_rmatmat", "csr_to_dense", "dense_to_csr"]


@njit(cache=True)
def csr_matmat(indptr, indices, data, X, out):
    """``out = S @ X``: indptr (rows+1,), indices (nnz,), data (nnz,), X (cols, k), out (rows, k)."""
    rows = indptr.shape[0] - 1
    k = X.shape[1]
    for i in range(rows):
        for c in range(k):
            out[i, c] = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            v = data[p]
            for c in range(k):
                out[i, c] += v * X[j, c]


@njit(cache=True)
def csr_rmatmat(indptr, indices, data, Y, out):
    """``out = Sᵀ @ Y``: indptr (rows+1,), indices (nnz,), data (nnz,), Y (rows, k), out (cols, k)."""
    rows = indptr.shape[0] - 1
    k = Y.shape[1]
    for j in range(out.shape[0]):
        for c in range(k):
            out[j, c] = 0.0
    for i in range(rows):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            v = data[p]
            for c in range(k):
                out[j, c] += v * Y[i, c]


@njit(cache=True)
def csr_to_dense(indptr, indices, data, out):
    """Scatter a CSR factor into the zeroed dense ``out`` (rows, cols)."""
    rows = indptr.shape[0] - 1
    for i in range(rows):
        for p in range(indptr[i], indptr[i + 1]):
            out[i, indices[p]] += data[p]


@njit(cache=True)
def _dense_to_csr(A):
    """CSR ``(indptr, indices, data)`` of the non-zeros of a C-contiguous 2-D array ``A`` (rows, cols)."""
    rows, cols = A.shape
    indptr = np.zeros(rows + 1, dtype=np.int32)
    for i in range(rows):
        count = 0
        for j in range(cols):
            if A[i, j] != 0:
                count += 1
        indptr[i + 1] = indptr[i] + count
    indices = np.empty(indptr[rows], dtype=np.int32)
    data = np.empty(indptr[rows], dtype=A.dtype)
    for i in range(rows):
        p = indptr[i]
        for j in range(cols):
            if A[i, j] != 0:
                indices[p] = j
                data[p] = A[i, j]
                p += 1
    return indptr, indices, data


def dense_to_csr(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zeros of a dense 2-D array as CSR ``(indptr, indices, data)`` (int32, int32, A's dtype)."""
    A = np.ascontiguousarray(A)
    if A.dtype.kind in "iu":
        A = A.astype(np.int64)
    return _dense_to_csr(A)
