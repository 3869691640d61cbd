"""Row and column permutations stored with a structured matrix: validation, products and counting.

Rows and columns of a weight matrix can be reordered freely before a structure is fitted, provided the
permutation is stored with the matrix and applied in every product. The convention used by every family
that stores one (SSS, hierarchical matrices) is

.. math:: M[\\text{row\\_order}[i],\\, \\text{col\\_order}[j]] = S[i, j],
          \\qquad M = P_r^\\top S P_c,

where ``S`` is the structured *core* fitted to the reordered matrix ``W[row_order][:, col_order]``. Hence

- ``M @ x   = scatter(S @ gather(x, col_order), row_order)``,
- ``M.T @ y = scatter(S.T @ gather(y, row_order), col_order)``,
- ``to_dense(M) = unpermute(S.to_dense(), row_order, col_order)``.

``None`` stands for the identity and is not stored. A stored permutation of length ``k`` costs ``k`` int32
indices in ``nbytes`` (:func:`count_indices`). Orderings that make the blocks of ``S`` cheaper live in
:mod:`structmat.approximators.ordering`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "check_permutation", "inverse_permutation", "gather", "scatter", "permute", "unpermute", "count_indices",
]


def check_permutation(order, size: int, name: str = "order"):
    """Validate a permutation of ``range(size)``; returns a read-only int64 array, or None for None.

    The identity is kept as an array (callers that want to drop it can test ``np.array_equal`` with
    ``arange``); only None means "no permutation stored".

    Raises
    ------
    TypeError
        ``order`` does not hold integers.
    ValueError
        wrong shape, or not a permutation (an index out of range or repeated).
    """
    if order is None:
        return None
    array = np.asarray(order)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (a permutation of range({size})); got dtype {array.dtype}")
    if array.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},) (a permutation of range({size})); got shape {array.shape}")
    if size and (array.min() < 0 or array.max() >= size):
        raise ValueError(
            f"{name} must be a permutation of range({size}); found index {int(array.min() if array.min() < 0 else array.max())}"
        )
    seen = np.zeros(size, dtype=bool)
    seen[array] = True
    if not seen.all():
        missing = int(np.flatnonzero(~seen)[0])
        raise ValueError(f"{name} must be a permutation of range({size}); index {missing} is missing (another repeats)")
    out = np.array(array, dtype=np.int64)
    out.flags.writeable = False
    return out


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[order[i]] = i``."""
    inv = np.empty_like(order)
    inv[order] = np.arange(order.shape[0], dtype=order.dtype)
    return inv


def gather(X: np.ndarray, order) -> np.ndarray:
    """``X[order]`` along the first axis (``X`` itself when ``order`` is None)."""
    return X if order is None else np.ascontiguousarray(X[order])


def scatter(Y: np.ndarray, order) -> np.ndarray:
    """``out`` with ``out[order] = Y`` along the first axis (``Y`` itself when ``order`` is None)."""
    if order is None:
        return Y
    out = np.empty_like(Y)
    out[order] = Y
    return out


def permute(W: np.ndarray, row_order, col_order) -> np.ndarray:
    """The reordered matrix ``W[row_order][:, col_order]`` (None keeps that side)."""
    out = W if row_order is None else W[row_order]
    out = out if col_order is None else out[:, col_order]
    return np.ascontiguousarray(out)


def unpermute(S: np.ndarray, row_order, col_order) -> np.ndarray:
    """The inverse of :func:`permute`: ``M`` with ``M[row_order][:, col_order] = S``."""
    out = scatter(S, row_order)
    if col_order is not None:
        cols = np.empty_like(out)
        cols[:, col_order] = out
        out = cols
    return np.ascontiguousarray(out)


def count_indices(*orders) -> int:
    """How many integer indices the stored permutations take (None counts 0)."""
    return sum(0 if o is None else int(o.shape[0]) for o in orders)
