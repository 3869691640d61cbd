"""Dense-block accumulation shared by the SSS and hierarchical Numba kernels: a row-major block stored flat
inside a parameter vector, applied to a row range of a column batch."""

from __future__ import annotations

from numba import njit

__all__ = ["acc_block", "acc_block_t"]


@njit(cache=True)
def acc_block(flat, start, rows, cols, src, src0, out, out0):
    """out[out0:out0+rows] += Mat @ src[src0:src0+cols], Mat = flat[start:].reshape(rows, cols) (row-major)."""
    b = out.shape[1]
    for i in range(rows):
        for j in range(cols):
            a = flat[start + i * cols + j]
            for t in range(b):
                out[out0 + i, t] += a * src[src0 + j, t]


@njit(cache=True)
def acc_block_t(flat, start, rows, cols, src, src0, out, out0):
    """out[out0:out0+cols] += Matᵀ @ src[src0:src0+rows], Mat = flat[start:].reshape(rows, cols) (row-major)."""
    b = out.shape[1]
    for i in range(rows):
        for j in range(cols):
            a = flat[start + i * cols + j]
            for t in range(b):
                out[out0 + j, t] += a * src[src0 + i, t]
