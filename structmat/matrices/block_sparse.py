"""Block sparsity: the non-zeros of ``M`` fill a few dense ``br × bc`` blocks of a regular grid, stored in BSR.

One int32 block-column index per block instead of one per value, and a product whose inner loop runs over a
block's contiguous columns, so the compiler vectorises it (the C kernel does; the layout is that of
``scipy.sparse.bsr_array`` and of the BSR kernels of torch, MKL and cuSPARSE). Gray, Radford & Kingma, "GPU kernels
for block-sparse weights", OpenAI 2017, and Narang, Undersander & Diamos, "Block-sparse recurrent neural
networks", 2017, train networks in this form.
"""

from __future__ import annotations

import numpy as np

from structmat._validation import check_positive_int
from structmat.matrices._block_sparse_kernels import bsr_matmat, bsr_rmatmat, bsr_to_dense
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["BlockSparse", "block_grid"]


def block_grid(shape: tuple[int, int], block_shape: tuple[int, int]) -> tuple[int, int]:
    """``(⌈m / br⌉, ⌈n / bc⌉)``: the number of block-rows and block-columns covering ``shape``."""
    (m, n), (br, bc) = shape, block_shape
    return -(-m // br), -(-n // bc)


def _check_block_shape(block_shape) -> tuple[int, int]:
    if not (isinstance(block_shape, (tuple, list)) and len(block_shape) == 2):
        raise ValueError(f"block_shape must be a pair (rows, cols) of ints >= 1; got {block_shape!r}")
    return (check_positive_int(block_shape[0], "block_shape[0]"), check_positive_int(block_shape[1], "block_shape[1]"))


class BlockSparse(StructuredMatrix):
    """A block-sparse matrix in BSR form: ``nblocks`` dense ``br × bc`` blocks on a regular grid.

    Parameters
    ----------
    shape : (int, int)
        ``(m, n)``; the grid has ``⌈m/br⌉ × ⌈n/bc⌉`` blocks, the last ones reaching past the edges when ``br ∤ m``
        or ``bc ∤ n`` (their entries past the edges must be zero).
    indptr : int array of shape (⌈m/br⌉ + 1,)
        Block-row pointers: the blocks of block-row ``I`` are ``indptr[I]:indptr[I+1]``.
    indices : int array of shape (nblocks,)
        Each block's block-column, strictly increasing within a block-row.
    values : array of shape (nblocks, br, bc)
        The blocks, row-major.
    dtype : float32 or float64, optional
        Defaults to ``values``' dtype if it is float32, else float64.

    Notes
    -----
    .. math:: M = \\sum_{b} E_{I_b} B_b F_{J_b}^\\top, \\qquad \\text{nparams} = \\text{nblocks} \\cdot b_r b_c,

    with ``E_I`` (``F_J``) the rows (columns) of block-row ``I`` (block-column ``J``). A deployment stores one
    int32 index per block plus ``⌈m/br⌉ + 1`` block-row pointers: ``nindices = nblocks + ⌈m/br⌉ + 1``,
    ``nbytes = 4 nparams + 4 nindices``. ``M @ x`` costs ``nparams`` multiply-adds per column of ``x``.

    References
    ----------
    S. Gray, A. Radford, D. P. Kingma, "GPU kernels for block-sparse weights", OpenAI technical report, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.zeros((4, 8)); W[0:2, 4:8] = 1.0; W[2:4, 0:4] = 2.0
    >>> M = BlockSparse.from_dense(W, (2, 4))
    >>> M
    BlockSparse(shape=(4, 8), dtype=float64, nparams=16 (50.0%), block_shape=(2, 4), nblocks=2)
    >>> bool(np.array_equal(M.to_dense(), W)), M.nindices, M.nbytes
    (True, 5, 84)
    """

    family = "block_sparse"

    def __init__(self, shape, indptr, indices, values, dtype=None) -> None:
        if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
            raise ValueError(f"shape must be a pair (m, n); got {shape!r}")
        m, n = (check_positive_int(s, "shape") for s in shape)
        indptr, indices, values = np.asarray(indptr), np.asarray(indices), np.asarray(values)
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise TypeError(f"indptr and indices must be integer arrays; got dtypes {indptr.dtype} and {indices.dtype}")
        if values.dtype.kind not in "fiu":
            raise TypeError(f"values must hold real numbers; got dtype {values.dtype}")
        if values.ndim != 3 or values.shape[1] < 1 or values.shape[2] < 1:
            raise ValueError(f"values must have shape (nblocks, br, bc) with br, bc >= 1; got {values.shape}")
        br, bc = values.shape[1:]
        mb, nb = block_grid((m, n), (br, bc))
        if indptr.shape != (mb + 1,):
            raise ValueError(f"indptr must have ⌈m/br⌉ + 1 = {mb + 1} entries for shape {(m, n)} and blocks "
                             f"{(br, bc)}; got shape {indptr.shape}")
        nblocks = values.shape[0]
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != nblocks or indices.shape != (nblocks,):
            raise ValueError(
                f"not a valid BSR structure: indptr must start at 0, not decrease and end at nblocks={nblocks}, "
                f"and indices must have one entry per block; got indptr[-1]={indptr[-1]}, indices of shape "
                f"{indices.shape}")
        if nblocks and (indices.min() < 0 or indices.max() >= nb):
            raise ValueError(f"block-column indices must lie in [0, {nb}); got range "
                             f"[{indices.min()}, {indices.max()}]")
        block_row = np.repeat(np.arange(mb), np.diff(indptr))
        if nblocks > 1 and np.any((np.diff(indices) <= 0) & (np.diff(block_row) == 0)):
            raise ValueError("block-column indices must be strictly increasing within each block-row")
        if not np.all(np.isfinite(values)):
            raise ValueError("values must be finite")
        if max(mb * nb, nblocks) > np.iinfo(np.int32).max:
            raise ValueError(f"shape {(m, n)} with blocks {(br, bc)} is too large for int32 block indices")
        past = _entries_past_edges(values, block_row, indices, (m, n))
        if past:
            raise ValueError(f"{past} block entries lie past row {m} or column {n} and are not zero; entries of the "
                             "last block-row or block-column beyond the matrix must be 0")
        if dtype is None:
            dtype = np.float32 if values.dtype == np.float32 else np.float64
        dtype = float_dtype(dtype)
        super().__init__((m, n), dtype)
        self.indptr = freeze(indptr, np.int32)
        self.indices = freeze(indices, np.int32)
        self.values = freeze(values, dtype)

    @classmethod
    def from_dense(cls, W, block_shape, dtype=None) -> "BlockSparse":
        """The blocks of ``W`` on the ``block_shape`` grid that hold a non-zero, in BSR form."""
        W = np.asarray(W)
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D; got shape {W.shape}")
        br, bc = _check_block_shape(block_shape)
        mb, nb = block_grid(W.shape, (br, bc))
        padded = np.zeros((mb * br, nb * bc), dtype=W.dtype)
        padded[: W.shape[0], : W.shape[1]] = W
        blocks = padded.reshape(mb, br, nb, bc).transpose(0, 2, 1, 3)
        keep = np.any(blocks != 0, axis=(2, 3))
        return cls.from_mask(W, block_shape, keep, dtype=dtype)

    @classmethod
    def from_mask(cls, W, block_shape, keep, dtype=None) -> "BlockSparse":
        """The blocks of ``W`` where the boolean ``keep`` of shape ``(⌈m/br⌉, ⌈n/bc⌉)`` is True (stored even if
        zero)."""
        W = np.asarray(W)
        br, bc = _check_block_shape(block_shape)
        mb, nb = block_grid(W.shape, (br, bc))
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (mb, nb):
            raise ValueError(f"keep must have the block grid's shape {(mb, nb)}; got {keep.shape}")
        padded = np.zeros((mb * br, nb * bc), dtype=W.dtype if W.dtype.kind == "f" else np.float64)
        padded[: W.shape[0], : W.shape[1]] = W
        rows, cols = np.nonzero(keep)
        values = padded.reshape(mb, br, nb, bc)[rows, :, cols, :]
        indptr = np.zeros(mb + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=mb), out=indptr[1:])
        return cls(W.shape, indptr, cols, values, dtype=dtype)

    # ---------------------------------------------------------------- structure
    @property
    def block_shape(self) -> tuple[int, int]:
        return (int(self.values.shape[1]), int(self.values.shape[2]))

    @property
    def nblocks(self) -> int:
        return self.values.shape[0]

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(⌈m/br⌉, ⌈n/bc⌉)``."""
        return block_grid(self.shape, self.block_shape)

    @property
    def block_rows(self) -> np.ndarray:
        """The block-row of each block (int64, ``(nblocks,)``)."""
        return np.repeat(np.arange(self.grid_shape[0]), np.diff(self.indptr))

    @property
    def nparams(self) -> int:
        """``nblocks · br · bc`` (entries of edge blocks past the matrix are stored too)."""
        return self.values.size

    @property
    def nindices(self) -> int:
        """``nblocks + ⌈m/br⌉ + 1``: one int32 block-column index per block plus the block-row pointers."""
        return self.indices.size + self.indptr.size

    def scaled(self, factor: float) -> "BlockSparse":
        """``factor · M``: every block multiplied by ``factor`` (same structure)."""
        factor = float(factor)
        if not np.isfinite(factor):
            raise ValueError(f"factor must be a finite real number; got {factor}")
        return type(self)(self.shape, self.indptr, self.indices, self.values * self.dtype.type(factor),
                          dtype=self.dtype)

    # ---------------------------------------------------------------- products
    def _matmat(self, X):
        out = np.empty((self.shape[0], X.shape[1]), dtype=self.dtype)
        bsr_matmat(self.indptr, self.indices, self.values, X, out)
        return out

    def _rmatmat(self, Y):
        out = np.empty((self.shape[1], Y.shape[1]), dtype=self.dtype)
        bsr_rmatmat(self.indptr, self.indices, self.values, Y, out)
        return out

    def to_dense(self) -> np.ndarray:
        D = np.zeros(self.shape, dtype=self.dtype)
        bsr_to_dense(self.indptr, self.indices, self.values, D)
        return D

    def transpose(self) -> "BlockSparse":
        """``Mᵀ``: blocks ``bc × br`` (each block transposed), in BSR order of the transposed grid."""
        mb, nb = self.grid_shape
        rows, cols = self.block_rows, self.indices.astype(np.int64)
        order = np.lexsort((rows, cols))
        indptr = np.zeros(nb + 1, dtype=np.int64)
        np.cumsum(np.bincount(cols, minlength=nb), out=indptr[1:])
        return type(self)(self.shape[::-1], indptr, rows[order], self.values[order].transpose(0, 2, 1),
                          dtype=self.dtype)

    # ---------------------------------------------------------------- files
    def _arrays(self):
        return {"values": self.values, "indices": self.indices, "indptr": self.indptr}

    def _meta(self) -> dict:
        return {"shape": list(self.shape)}  # the block grid does not determine (m, n)

    @classmethod
    def _from_arrays(cls, arrays, meta):
        shape = meta["shape"]
        if not (isinstance(shape, list) and len(shape) == 2):
            raise ValueError(f"meta 'shape' must be [m, n]; got {shape!r}")
        return cls(tuple(shape), arrays["indptr"], arrays["indices"], arrays["values"], dtype=arrays["values"].dtype)

    def _repr_extra(self) -> str:
        return f"block_shape={self.block_shape}, nblocks={self.nblocks}"

    @classmethod
    def random(cls, shape, *, block_shape=(2, 8), density: float = 0.3, seed=None,
               dtype=np.float64) -> "BlockSparse":
        """A random block-sparse matrix: ``max(1, round(density · grid size))`` blocks at random grid positions,
        Gaussian values, zero past the edges (for tests, benchmarks and exact-recovery checks)."""
        br, bc = _check_block_shape(block_shape)
        m, n = shape
        mb, nb = block_grid((m, n), (br, bc))
        rng = np.random.default_rng(seed)
        keep = np.zeros(mb * nb, dtype=bool)
        keep[rng.choice(mb * nb, max(1, round(density * mb * nb)), replace=False)] = True
        W = np.zeros((mb * br, nb * bc))
        W.reshape(mb, br, nb, bc).transpose(0, 2, 1, 3)[keep.reshape(mb, nb)] = rng.standard_normal(
            (int(keep.sum()), br, bc))
        return cls.from_mask(W[:m, :n], (br, bc), keep.reshape(mb, nb), dtype=dtype)


def _entries_past_edges(values, block_row, block_col, shape) -> int:
    """How many non-zero block entries lie past row ``m`` or column ``n``."""
    m, n = shape
    br, bc = values.shape[1:]
    count = 0
    over_rows = (block_row + 1) * br > m
    if np.any(over_rows):
        count += int(np.count_nonzero(values[over_rows][:, m - block_row[over_rows][0] * br:, :]))
    over_cols = (block_col.astype(np.int64) + 1) * bc > n
    if np.any(over_cols):
        first = int(n - block_col[over_cols][0] * bc)
        count += int(np.count_nonzero(values[over_cols][:, :, first:]))
    return count
