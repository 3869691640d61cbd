"""Writer registry: how each family's matrix is laid out for its C kernel. One entry per family.

A writer turns a :class:`~structmat.matrices.base.StructuredMatrix` into the integer metadata and the float32
(or int32) arrays its kernel ``speed_c/kernel_<family>.c`` reads, in that kernel's order and layout (the
layer format itself is in :mod:`structmat.speed_c.layer_format`). Adding a family's C kernel means adding
``kernel_<family>.c`` and one ``CWriter`` line in :data:`WRITERS`, with a ``family_id`` no other entry uses;
the tests and the build pick both up from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from structmat.matrices.base import StructuredMatrix, TransposedMatrix

__all__ = ["CWriter", "WRITERS", "c_layout", "c_family_names"]


@dataclass(frozen=True)
class CWriter:
    """A family's C layout: its file ``family_id`` and ``layout(M) -> (meta, arrays)``.

    ``meta`` is a list of int >= 0 and ``arrays`` a list of 1-D arrays, float32 for values and int32 for
    indices; :func:`c_layout` casts float arrays to float32 and integer arrays to int32.
    """

    family_id: int
    layout: Callable[[StructuredMatrix], tuple[list[int], list[np.ndarray]]]


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def _dense_layout(M):
    """``W`` row-major."""
    return [], [_f32(M.W)]


def _lowrank_layout(M):
    """``[r]``; ``V`` (n, r) then ``Uᵀ`` (r, m), both row-major."""
    return [M.rank], [_f32(M.V), _f32(M.U.T)]


def _sss_layout(M):
    """``[K, has_row_order, has_col_order, m_sizes, n_sizes, causal_dims, anticausal_dims]``; the seven flat
    generator arrays A..G exactly as :class:`~structmat.matrices.sss.SSS` stores them, then the stored orders."""
    meta = [M.num_stages, int(M.row_order is not None), int(M.col_order is not None), *M.m_sizes.tolist(),
            *M.n_sizes.tolist(), *M.causal_dims.tolist(), *M.anticausal_dims.tolist()]
    arrays = [M.flat(kind) for kind in "ABCDEFG"]
    arrays += [order for order in (M.row_order, M.col_order) if order is not None]
    return meta, arrays


def _hmatrix_layout(M):
    """``[L, has_row_order, has_col_order]``; the values re-laid per leaf (dense ``D_bᵀ``; low rank ``V_bᵀ`` then
    ``U_bᵀ``, all row-major, same sizes and offsets), the leaf table ``(r0, r1, c0, c1, rank, offset)``, the orders."""
    parts = []
    for _, payload in M.blocks():
        parts += [payload.T] if not isinstance(payload, tuple) else [payload[1].T, payload[0].T]
    meta = [M.num_leaves, int(M.row_order is not None), int(M.col_order is not None)]
    arrays = [np.concatenate([_f32(p) for p in parts]), M.leaves]
    arrays += [order for order in (M.row_order, M.col_order) if order is not None]
    return meta, arrays


def _sparse_product_layout(M):
    """``[J, d_1, …, d_{J-1}]``; per factor in the order applied (``S_J`` first): values, column indices, row
    pointers (CSR exactly as :class:`~structmat.matrices.SparseProduct` stores them). The kernel derives its own
    layout per factor when it loads the file (``speed_c/sparse_plan.h``: chunks with AVX-512, or 16-bit indices), so
    one file serves every machine."""
    factors = M.csr_factors()
    meta = [len(factors)] + [shape[0] for *_, shape in factors[1:]]
    arrays = []
    for indptr, indices, data, _ in reversed(factors):
        arrays += [_f32(data), indices, indptr]
    return meta, arrays


def _sparse_layout(M):
    """No metadata; values, column indices, row pointers of the one CSR factor (the kernel derives its layout at
    load, as for ``sparse_product``)."""
    indptr, indices, data, _ = M.csr_factors()[0]
    return [], [_f32(data), indices, indptr]


def _monarch_layout(M):
    """``[K, J, t, I, L_r]``; ``R`` (K, J·t, I) then ``L`` (J, L_r, K·t), row-major as Monarch stores them."""
    K, Jt, I = M.R.shape
    J, Lr, _ = M.L.shape
    return [K, J, Jt // J, I, Lr], [_f32(M.R), _f32(M.L)]


def _toeplitz_like_layout(M):
    """``[N, r]``; ``Gᵀ`` (r, N) then ``(J H)ᵀ`` (r, N), row-major: one generator per row, ``h_j`` reversed."""
    return [M.size, M.rank], [_f32(M.G.T), _f32(M.H[::-1].T)]


def _lowrank_sparse_layout(M):
    """``[r]``; ``V`` (n, r) and ``Uᵀ`` (r, m) row-major as for low rank, then ``S``'s CSR values, column indices and
    row pointers (the kernel derives ``S``'s layout at load, as for ``sparse_product``)."""
    return [M.rank], [_f32(M.V), _f32(M.U.T), _f32(M.data), M.indices, M.indptr]


def _block_sparse_layout(M):
    """``[br, bc]``; the blocks (nblocks, br, bc) row-major, block-column indices, block-row pointers (BSR exactly
    as :class:`~structmat.matrices.BlockSparse` stores it)."""
    return list(M.block_shape), [_f32(M.values), M.indices, M.indptr]


#: family name -> writer. Ids are written into layer files: never reuse or renumber one.
WRITERS: dict[str, CWriter] = {
    "dense": CWriter(1, _dense_layout),
    "lowrank": CWriter(2, _lowrank_layout),
    "sss": CWriter(3, _sss_layout),
    "sparse_product": CWriter(7, _sparse_product_layout),
    "sparse": CWriter(8, _sparse_layout),
    "monarch": CWriter(9, _monarch_layout),
    "toeplitz_like": CWriter(10, _toeplitz_like_layout),
    "hodlr": CWriter(4, _hmatrix_layout),
    "hedlr": CWriter(5, _hmatrix_layout),
    "hmatrix": CWriter(6, _hmatrix_layout),
    "lowrank_sparse": CWriter(11, _lowrank_sparse_layout),
    "block_sparse": CWriter(12, _block_sparse_layout),
}


def c_family_names() -> list[str]:
    """Families with a C kernel, except the dense reference, in registry order."""
    return [name for name in WRITERS if name != "dense"]


def c_layout(M: StructuredMatrix) -> tuple[int, list[int], list[np.ndarray]]:
    """``(family_id, meta, arrays)`` for ``M``, arrays cast to float32 (values) and int32 (indices).

    Raises
    ------
    TypeError
        ``M`` is not a StructuredMatrix, or is a transposed view.
    ValueError
        ``M``'s family has no C kernel; the message lists those that have one.
    """
    if isinstance(M, TransposedMatrix):
        raise TypeError(f"a transposed view of {type(M.parent).__name__} has no C layout; "
                        "write a matrix of the family itself (families closed under transposition return one from .T)")
    if not isinstance(M, StructuredMatrix):
        raise TypeError(f"expected a StructuredMatrix; got {type(M).__name__}")
    writer = WRITERS.get(M.family)
    if writer is None:
        raise ValueError(f"family {M.family!r} has no C kernel yet; families with one: {sorted(WRITERS)}")
    meta, arrays = writer.layout(M)
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            out.append(_f32(a))
        elif a.dtype.kind in "iu":
            if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
                raise ValueError(f"{M.family} writer: an index array does not fit in int32")
            out.append(np.ascontiguousarray(a, dtype=np.int32).reshape(-1))
        else:
            raise TypeError(f"{M.family} writer returned an array of dtype {a.dtype}; expected float or int")
    return writer.family_id, [int(v) for v in meta], out
