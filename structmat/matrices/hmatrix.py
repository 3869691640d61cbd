"""Hierarchical matrices: a block partition of ``[0, m) × [0, n)`` whose leaves are dense or low rank.

Each leaf ``b = (r0, r1, c0, c1)`` of the partition stores either the dense block ``D_b`` or a low-rank factorization
``U_b V_bᵀ`` of its own rank ``r_b`` (Hackbusch, "Hierarchical Matrices: Algorithms and Analysis", Springer 2015,
§2.2 and §6; Börm, Grasedyck & Hackbusch, "Hierarchical Matrices", lecture notes, 2003, §1.3):

.. math:: H[r_0{:}r_1,\\, c_0{:}c_1] = U_b V_b^\\top \\ \\text{or}\\ D_b, \\qquad
          \\text{nparams} = \\sum_{b\\ \\text{low rank}} r_b (m_b + n_b) + \\sum_{b\\ \\text{dense}} m_b n_b .

Three classes share the storage and the kernels and differ only in the partition they accept (see
:mod:`structmat.matrices.hmatrix_partition`): :class:`HODLRMatrix` (``"hodlr"``), :class:`HEDLRMatrix`
(``"hedlr"``) and :class:`HMatrix` (``"hmatrix"``: the η-admissible partition, or any tiling).

Rows and columns may be reordered before the partition is laid over them: with permutations ``row_order`` and
``col_order`` stored beside the leaves, ``M[row_order[i], col_order[j]] = H[i, j]`` (see
:mod:`structmat.matrices.permutation`); products gather and scatter, and ``nbytes`` counts the indices.

Storage: one flat float buffer ``values`` and an int64 leaf table of rows ``(r0, r1, c0, c1, rank, offset)``,
``rank = -1`` for a dense leaf (``D_b`` row-major at ``offset``), else ``U_b`` (``m_b × r_b``) then ``V_b``
(``n_b × r_b``), both row-major. Fitted in float64; layers and the C kernel use float32.
"""

from __future__ import annotations

import numpy as np

from structmat.matrices import _hmatrix_kernels as kernels
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze
from structmat.matrices.hmatrix_partition import blocks_for, eta_blocks, max_depth
from structmat.matrices.permutation import check_permutation, count_indices, gather, scatter, unpermute

__all__ = ["HMatrix", "HODLRMatrix", "HEDLRMatrix", "leaf_sizes", "LEAF_COLUMNS"]

#: The columns of the leaf table.
LEAF_COLUMNS = ("r0", "r1", "c0", "c1", "rank", "offset")


def leaf_sizes(leaves: np.ndarray) -> np.ndarray:
    """Stored numbers per leaf: ``r (m_b + n_b)`` for low rank, ``m_b n_b`` for dense (``rank == -1``)."""
    mb, nb, rank = leaves[:, 1] - leaves[:, 0], leaves[:, 3] - leaves[:, 2], leaves[:, 4]
    return np.where(rank < 0, mb * nb, np.maximum(rank, 0) * (mb + nb))


def _check_leaves(leaves, shape: tuple[int, int]) -> np.ndarray:
    """Validate a (L, 5) or (L, 6) leaf table against ``shape``; return it as (L, 6) int64 with offsets."""
    m, n = shape
    table = np.asarray(leaves)
    if table.dtype.kind not in "iu":
        raise TypeError(f"leaves must be an integer array; got dtype {table.dtype}")
    if table.ndim != 2 or table.shape[1] not in (5, 6) or table.shape[0] < 1:
        raise ValueError(
            f"leaves must have shape (L, 5) or (L, 6) with rows {LEAF_COLUMNS[:5]} (+ offset), L >= 1; "
            f"got {table.shape}"
        )
    table = table.astype(np.int64)
    r0, r1, c0, c1, rank = (table[:, i] for i in range(5))
    bad = np.flatnonzero((r0 < 0) | (r1 > m) | (r0 >= r1) | (c0 < 0) | (c1 > n) | (c0 >= c1))
    if bad.size:
        b = int(bad[0])
        raise ValueError(
            f"leaf {b} = rows [{r0[b]}, {r1[b]}) x cols [{c0[b]}, {c1[b]}) is empty or outside shape ({m}, {n})"
        )
    bad = np.flatnonzero(rank < -1)
    if bad.size:
        raise ValueError(f"leaf {int(bad[0])} has rank {rank[bad[0]]}; ranks are >= 0, or -1 for a dense leaf")
    _check_tiling(table, shape)
    sizes = leaf_sizes(table)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    if table.shape[1] == 6 and not np.array_equal(table[:, 5], offsets):
        b = int(np.flatnonzero(table[:, 5] != offsets)[0])
        raise ValueError(f"leaf {b} has offset {table[b, 5]}; the leaves' sizes put it at {offsets[b]}")
    return np.column_stack([table[:, :5], offsets])


def _check_tiling(table: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise unless the leaves cover ``[0, m) × [0, n)`` exactly once (checked on the grid of leaf boundaries)."""
    m, n = shape
    row_cuts = np.unique(np.concatenate([[0, m], table[:, 0], table[:, 1]]))
    col_cuts = np.unique(np.concatenate([[0, n], table[:, 2], table[:, 3]]))
    rows = np.searchsorted(row_cuts, table[:, 0:2]).astype(np.int64)
    cols = np.searchsorted(col_cuts, table[:, 2:4]).astype(np.int64)
    count = kernels.hmatrix_coverage(rows, cols, len(row_cuts) - 1, len(col_cuts) - 1)
    wrong = np.argwhere(count != 1)
    if wrong.size:
        i, j = wrong[0]
        what = "not covered" if count[i, j] == 0 else f"covered {count[i, j]} times"
        raise ValueError(
            f"the leaves must tile [0, {m}) x [0, {n}) exactly once; the cell rows [{row_cuts[i]}, {row_cuts[i + 1]}) "
            f"x cols [{col_cuts[j]}, {col_cuts[j + 1]}) is {what}"
        )


class HMatrix(StructuredMatrix):
    """A hierarchical matrix: leaves of a block partition, each dense or low rank with its own rank.

    Parameters
    ----------
    shape : (int, int)
        ``(m, n)``.
    leaves : int array of shape (L, 5) or (L, 6)
        Rows ``(r0, r1, c0, c1, rank)`` (+ ``offset``, checked if given); ``rank = -1`` marks a dense leaf,
        ``rank = 0`` a zero block. The leaves must tile ``[0, m) × [0, n)`` exactly once.
    values : float array of shape (nparams,)
        The leaves' numbers in table order (see the module docstring for the layout).
    row_order, col_order : int arrays of shape (m,) and (n,), optional
        Permutations: ``M[row_order[i], col_order[j]] = H[i, j]``. None means the identity (not stored).
    partition : dict, optional
        How the partition was built (``{"kind": "eta", "eta": 1.0, "min_block": 16}``), written to files.
        :class:`HMatrix` accepts any tiling; the subclasses require their own partition.
    dtype : float32 or float64, optional
        Defaults to ``values``' dtype if float32, else float64.

    Notes
    -----
    ``M x`` adds ``U_b (V_bᵀ x[c0:c1])`` or ``D_b x[c0:c1]`` into ``y[r0:r1]`` for every leaf: ``nparams``
    multiply-adds per column (Numba, serial). ``nindices = 6 L`` (the leaf table) plus ``m + n`` when
    permutations are stored.

    Examples
    --------
    A dense 4×3 leaf, a rank-1 leaf beside it, and a rank-2 leaf below both:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> M = HMatrix.from_blocks((8, 6), [
    ...     ((0, 4, 0, 3), rng.standard_normal((4, 3))),
    ...     ((0, 4, 3, 6), (rng.standard_normal((4, 1)), rng.standard_normal((3, 1)))),
    ...     ((4, 8, 0, 6), (rng.standard_normal((4, 2)), rng.standard_normal((6, 2)))),
    ... ])
    >>> M
    HMatrix(shape=(8, 6), dtype=float64, nparams=39 (81.2%), leaves=3 (1 dense), ranks 1-2)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    """

    family = "hmatrix"
    #: The partition kind this class requires (None: any tiling).
    _partition_kind: str | None = None

    def __init__(self, shape, leaves, values, *, row_order=None, col_order=None, partition=None,
                 dtype=None) -> None:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"values must be a 1-D float array; got shape {values.shape}")
        if values.dtype.kind != "f":
            raise TypeError(f"values must hold floats; got dtype {values.dtype}")
        if dtype is None:
            dtype = np.float32 if values.dtype == np.float32 else np.float64
        super().__init__(tuple(shape), float_dtype(dtype))
        m, n = self.shape
        table = _check_leaves(leaves, self.shape)
        total = int(leaf_sizes(table).sum())
        if values.shape[0] != total:
            raise ValueError(f"values must hold {total} numbers for these leaves; got {values.shape[0]}")
        self.partition = self._check_partition(dict(partition or {"kind": "custom"}), table)
        self.leaves = freeze(table, np.int64)
        self.values = freeze(values, self.dtype)
        self.row_order = check_permutation(row_order, m, "row_order")
        self.col_order = check_permutation(col_order, n, "col_order")

    def _check_partition(self, partition: dict, table: np.ndarray) -> dict:
        kind = self._partition_kind
        if kind is None:
            if partition.get("kind") not in ("eta", "custom", "hodlr", "hedlr"):
                raise ValueError(f"partition kind must be 'eta', 'hodlr', 'hedlr' or 'custom'; got {partition!r}")
            if partition["kind"] == "custom":
                return {"kind": "custom"}
        elif partition.get("kind") != kind:
            raise ValueError(f"{type(self).__name__} needs partition kind {kind!r}; got {partition!r}")
        try:
            expected = blocks_for(*self.shape, partition)
        except KeyError as exc:
            raise ValueError(f"partition {partition!r} lacks the key {exc}") from None
        if not np.array_equal(expected[:, :4], table[np.lexsort((table[:, 2], table[:, 0])), :4]):
            raise ValueError(
                f"the leaves are not the {partition['kind']} partition {partition!r} of shape {self.shape}; "
                f"expected {len(expected)} leaves {expected[:3, :4].tolist()}..., got {len(table)}"
            )
        return partition

    # ---------------------------------------------------------------- construction helpers
    @classmethod
    def from_blocks(cls, shape, blocks, *, row_order=None, col_order=None, partition=None, dtype=None):
        """Build from ``[((r0, r1, c0, c1), payload), ...]`` with ``payload`` a dense ``(m_b, n_b)`` array or a
        pair ``(U_b, V_b)`` of shapes ``(m_b, r_b)`` and ``(n_b, r_b)``."""
        rows, parts = [], []
        for index, (box, payload) in enumerate(blocks):
            r0, r1, c0, c1 = (int(v) for v in box)
            mb, nb = r1 - r0, c1 - c0
            if isinstance(payload, tuple):
                U, V = (np.asarray(a) for a in payload)
                if U.ndim != 2 or V.ndim != 2 or U.shape[0] != mb or V.shape[0] != nb or U.shape[1] != V.shape[1]:
                    raise ValueError(
                        f"block {index} {box}: U, V must have shapes ({mb}, r) and ({nb}, r); "
                        f"got {U.shape} and {V.shape}"
                    )
                rows.append((r0, r1, c0, c1, U.shape[1]))
                parts += [U.ravel(), V.ravel()]
            else:
                D = np.asarray(payload)
                if D.shape != (mb, nb):
                    raise ValueError(f"block {index} {box}: a dense block must have shape ({mb}, {nb}); got {D.shape}")
                rows.append((r0, r1, c0, c1, -1))
                parts.append(D.ravel())
        if not rows:
            raise ValueError("blocks must hold at least one leaf")
        values = np.concatenate(parts) if parts else np.zeros(0)
        if dtype is None:
            dtype = np.float32 if values.dtype == np.float32 else np.float64
        return cls(shape, np.array(rows, dtype=np.int64), values.astype(dtype, copy=False), row_order=row_order,
                   col_order=col_order, partition=partition, dtype=dtype)

    def blocks(self):
        """Yield ``((r0, r1, c0, c1), payload)`` per leaf, as :meth:`from_blocks` takes them (views, read-only)."""
        for r0, r1, c0, c1, r, off in self.leaves.tolist():
            mb, nb = r1 - r0, c1 - c0
            if r < 0:
                yield (r0, r1, c0, c1), self.values[off:off + mb * nb].reshape(mb, nb)
            else:
                yield (r0, r1, c0, c1), (self.values[off:off + mb * r].reshape(mb, r),
                                         self.values[off + mb * r:off + (mb + nb) * r].reshape(nb, r))

    # ---------------------------------------------------------------- StructuredMatrix surface
    @property
    def nparams(self) -> int:
        """``Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b``."""
        return int(self.values.size)

    @property
    def nindices(self) -> int:
        """The leaf table (6 per leaf) plus the stored permutations."""
        return int(self.leaves.size) + count_indices(self.row_order, self.col_order)

    @property
    def num_leaves(self) -> int:
        return int(self.leaves.shape[0])

    @property
    def ranks(self) -> np.ndarray:
        """Per-leaf rank, ``-1`` for dense leaves."""
        return self.leaves[:, 4].copy()

    def _matmat(self, X):
        Y = np.zeros((self.shape[0], X.shape[1]), dtype=self.dtype)
        kernels.hmatrix_matmat(self.leaves, self.values, gather(X, self.col_order), Y)
        return scatter(Y, self.row_order)

    def _rmatmat(self, Y):
        X = np.zeros((self.shape[1], Y.shape[1]), dtype=self.dtype)
        kernels.hmatrix_rmatmat(self.leaves, self.values, gather(Y, self.row_order), X)
        return scatter(X, self.col_order)

    def core_dense(self) -> np.ndarray:
        """The block-structured matrix ``H`` in its own (permuted) index order."""
        out = np.zeros(self.shape, dtype=self.dtype)
        kernels.hmatrix_to_dense(self.leaves, self.values, out)
        return out

    def to_dense(self) -> np.ndarray:
        return unpermute(self.core_dense(), self.row_order, self.col_order)

    def transpose(self) -> "HMatrix":
        """``Mᵀ`` in the same class: leaves mirrored, ``U_b`` and ``V_b`` swapped, dense blocks transposed."""
        blocks = []
        for (r0, r1, c0, c1), payload in self.blocks():
            blocks.append(((c0, c1, r0, r1), (payload[1], payload[0]) if isinstance(payload, tuple) else payload.T))
        blocks.sort(key=lambda item: (item[0][0], item[0][2]))
        return type(self).from_blocks(self.shape[::-1], blocks, row_order=self.col_order, col_order=self.row_order,
                                      partition=self.partition, dtype=self.dtype)

    def scaled(self, factor) -> "HMatrix":
        """``factor * M``: every dense leaf and the ``U_b`` of every low-rank leaf are multiplied by ``factor``."""
        factor = float(factor)
        if not np.isfinite(factor):
            raise ValueError(f"factor must be a finite real number; got {factor}")
        mb = self.leaves[:, 1] - self.leaves[:, 0]
        nb = self.leaves[:, 3] - self.leaves[:, 2]
        rank = self.leaves[:, 4]
        scaled_count = np.where(rank < 0, mb * nb, np.maximum(rank, 0) * mb)  # D_b, or U_b (stored first)
        mask = np.zeros(self.values.shape[0], dtype=bool)
        for start, count in zip(self.leaves[:, 5], scaled_count):
            mask[start:start + count] = True
        values = np.where(mask, self.values * self.values.dtype.type(factor), self.values)
        return type(self)(self.shape, self.leaves, values, row_order=self.row_order, col_order=self.col_order,
                          partition=self.partition, dtype=self.dtype)

    def _arrays(self):
        arrays = {"leaves": self.leaves, "values": self.values}
        if self.row_order is not None:
            arrays["row_order"] = self.row_order
        if self.col_order is not None:
            arrays["col_order"] = self.col_order
        return arrays

    def _meta(self) -> dict:
        return {"partition": self.partition}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        leaves = np.asarray(arrays["leaves"])
        if leaves.ndim != 2 or leaves.shape[0] < 1 or leaves.shape[1] < 4:
            raise ValueError(f"leaves must have shape (L, 6); got {leaves.shape}")
        shape = (int(leaves[:, 1].max()), int(leaves[:, 3].max()))  # the leaves tile [0, m) x [0, n)
        return cls(shape, leaves, arrays["values"], row_order=arrays.get("row_order"),
                   col_order=arrays.get("col_order"), partition=meta.get("partition"), dtype=arrays["values"].dtype)

    def _repr_extra(self) -> str:
        rank = self.leaves[:, 4]
        low = rank[rank >= 0]
        text = f"leaves={self.num_leaves} ({int((rank < 0).sum())} dense)"
        if low.size:
            text += f", ranks {int(low.min())}-{int(low.max())}"
        if self.partition.get("kind") != "custom":
            text += ", " + ", ".join(f"{k}={v}" for k, v in self.partition.items() if k != "kind")
        if self.row_order is not None or self.col_order is not None:
            text += ", permuted"
        return text

    def plot(self, path=None, *, ax=None, title=None):
        """Draw the leaves with their ranks (see :func:`structmat.matrices.hmatrix_plot.plot_hmatrix`)."""
        from structmat.matrices.hmatrix_plot import plot_hmatrix

        return plot_hmatrix(self, path, ax=ax, title=title)

    # ---------------------------------------------------------------- random instances
    @classmethod
    def _random_blocks(cls, shape, rank: int, eta: float = 1.0, min_block: int = 8):
        m, n = shape
        return eta_blocks(m, n, eta=eta, min_block=min_block), {"kind": "eta", "eta": eta, "min_block": min_block}

    @classmethod
    def random(cls, shape, *, rank: int = 1, seed=None, dtype=np.float64, **partition_options) -> "HMatrix":
        """A random instance: admissible leaves of rank ``rank`` (capped below dense), the others dense, Gaussian
        entries. :class:`HMatrix` uses the η-partition (``eta=1, min_block=8``; pass ``eta``, ``min_block``), the
        subclasses their partition of depth ``min(2, max_depth(m, n, 8))`` (pass ``depth``)."""
        m, n = shape
        blocks, partition = cls._random_blocks(shape, rank, **partition_options)
        rng = np.random.default_rng(seed)
        payloads = []
        for r0, r1, c0, c1, admissible in blocks.tolist():
            mb, nb = r1 - r0, c1 - c0
            r = min(rank, mb, nb)
            if admissible and r * (mb + nb) < mb * nb:
                payloads.append(((r0, r1, c0, c1),
                                 (rng.standard_normal((mb, r)), rng.standard_normal((nb, r)) / np.sqrt(r))))
            else:
                payloads.append(((r0, r1, c0, c1), rng.standard_normal((mb, nb))))
        return cls.from_blocks(shape, payloads, partition=partition, dtype=dtype)


class _DepthPartitionMatrix(HMatrix):
    """An HMatrix whose partition is fixed by its kind and a depth (HODLR, HEDLR)."""

    @property
    def depth(self) -> int:
        return int(self.partition["depth"])

    @classmethod
    def _random_blocks(cls, shape, rank, depth=None):
        depth = min(2, max_depth(*shape, 8)) if depth is None else depth
        partition = {"kind": cls._partition_kind, "depth": depth}
        return blocks_for(*shape, partition), partition


class HODLRMatrix(_DepthPartitionMatrix):
    """A HODLR (hierarchically off-diagonal low-rank) matrix: the partition of
    :func:`~structmat.matrices.hmatrix_partition.hodlr_blocks` of depth ``partition["depth"]``."""

    family = "hodlr"
    _partition_kind = "hodlr"


class HEDLRMatrix(_DepthPartitionMatrix):
    """A HEDLR (hierarchically equally distributed low-rank, i.e. block low-rank) matrix: the uniform grid of
    :func:`~structmat.matrices.hmatrix_partition.hedlr_blocks` of depth ``partition["depth"]``."""

    family = "hedlr"
    _partition_kind = "hedlr"
