"""Hierarchical-matrix layers: trainable leaves in one flat parameter, products that never form the dense weight.

The parameter ``values`` holds the matrix's numbers in its own layout (:mod:`structmat.matrices.hmatrix`: per leaf
``D_b``, or ``U_b`` then ``V_b``, row-major), exactly ``nparams`` of them; the buffers hold the leaf table and the
permutations as int16/int32. Three ways to compute (:mod:`structmat.layers.base`):

* training: low-rank leaves run in two stages batched over column and row clusters, dense leaves in batches of
  equal shape (:mod:`structmat.layers._hmatrix_plan`): a gather of input columns (skipped where the clusters tile
  the input in order), one ``torch.bmm`` per group of equal-sized clusters, and an add (or a scatter-add) into the
  output. The padded group tensors come from one scatter of ``values`` (its index is derived, never saved), so
  padding is zero, gets no gradient and never reaches the output;
* inference on the CPU: a few rows take one Numba sweep per row over ``values``
  (:func:`structmat.layers._fast_kernels.hmatrix_rows`); larger batches the batched products on cached padded
  tensors;
* the plain path (exports, reduced precision, other devices): the same batched products with the padded tensors
  assembled from slices of ``values`` (no index tensor of ``nparams`` entries in the graph).

A matrix reduced to one low-rank leaf covering everything (what the fits choose when that is best) is computed as
``LowRankLinear`` would be: two matrix products. Parameters are float32 by default; ``to_matrix`` returns float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers._fast_kernels import hmatrix_rows
from structmat.layers._hmatrix_plan import make_plan
from structmat.layers.base import StructuredLinear, check_structure_size, compact_index
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix, leaf_sizes
from structmat.matrices.hmatrix_partition import blocks_for, eta_blocks, max_depth
from structmat.matrices.permutation import inverse_permutation

__all__ = ["HMatrixLinear", "HODLRLinear", "HEDLRLinear"]

#: Batches up to this many rows take the per-row Numba sweep on the fast path; larger ones the batched products.
FAST_SWEEP_MAX_BATCH = 4


def _fresh_table(blocks: np.ndarray, rank: int) -> np.ndarray:
    """Leaf table for a new layer: admissible leaves at ``rank`` (if cheaper than dense), the others dense."""
    table = np.zeros((len(blocks), 5), dtype=np.int64)
    table[:, :4] = blocks[:, :4]
    for i, (r0, r1, c0, c1, admissible) in enumerate(blocks.tolist()):
        mb, nb = r1 - r0, c1 - c0
        r = min(rank, mb, nb)
        table[i, 4] = r if (admissible and r * (mb + nb) < mb * nb) else -1
    return table


def _identity_or(index: np.ndarray, size: int):
    """None when ``index`` is ``arange(size)`` (the gather would copy its input unchanged), else ``index``."""
    return None if index.shape == (size,) and np.array_equal(index, np.arange(size)) else index


class HMatrixLinear(StructuredLinear):
    """A linear layer whose weight is a hierarchical matrix on the η-admissible partition (family ``"hmatrix"``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rank : int
        Rank of every admissible leaf of a freshly built layer (capped where dense would be cheaper), at most
        ``min(in_features, out_features)``; the other leaves are dense. Layers built by ``from_matrix`` take their
        ranks from the matrix.
    eta : float
        Admissibility parameter of the fresh partition.
    min_block : int
        Inadmissible blocks are split while both sides exceed it.

    Notes
    -----
    ``nparams = Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b``, the length of ``values``; a forward pass costs about that
    many multiply-adds per input row (plus the padding of grouped ranks on the batched paths).
    """

    family = "hmatrix"
    _matrix_class = HMatrix

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8, eta: float = 1.0,
                 min_block: int = 16, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_structure_size(check_positive_int(rank, "rank"), "rank", min(in_features, out_features),
                                    "min(in_features, out_features)")
        min_block = check_positive_int(min_block, "min_block")
        blocks = eta_blocks(out_features, in_features, eta, min_block)
        partition = {"kind": "eta", "eta": float(eta), "min_block": min_block}
        self._setup(_fresh_table(blocks, rank), partition, None, None, device, dtype)
        self.reset_parameters()

    # ---------------------------------------------------------------- structure
    def _setup(self, table, partition, row_order, col_order, device, dtype) -> None:
        """Register the structure (compact buffers), the flat ``values`` and the batching plan."""
        table = np.asarray(table, dtype=np.int64)[:, :5]
        m, n = self.out_features, self.in_features
        self.partition = dict(partition)
        sizes = leaf_sizes(table)
        self._table = np.column_stack([table, np.concatenate([[0], np.cumsum(sizes)[:-1]])]).astype(np.int64)
        self.register_buffer("leaves", compact_index(table, max(m, n) + 1, device=device))
        # the permutations are buffers only when stored (torch.export mishandles None buffers)
        if col_order is not None:
            self.register_buffer("col_order", compact_index(col_order, n, device=device))
        if row_order is not None:
            self.register_buffer("inverse_row_order", compact_index(inverse_permutation(np.asarray(row_order)), m,
                                                                    device=device))
        self.values = nn.Parameter(torch.empty(int(sizes.sum()), device=device, dtype=dtype))
        self._plan = plan = make_plan(table, m)
        self._layout = self._padded_layout(plan)
        self._single_leaf = (len(table) == 1 and table[0, 4] > 0)
        for name, groups in (("dense", plan.dense), ("V", plan.columns), ("U", plan.rows)):
            for g, group in enumerate(groups):
                width = n if name != "U" else plan.t_size + 1
                gather = _identity_or(group.in_index, n) if name != "U" else group.in_index
                if gather is not None:  # (absent buffers read as None: torch.export mishandles None buffers)
                    self.register_buffer(f"_{name}{g}_gather", compact_index(gather, width, device=device),
                                         persistent=False)
                if name != "V" and group.out_rows is not None:
                    self.register_buffer(f"_{name}{g}_rows", compact_index(group.out_rows, m, device=device),
                                         persistent=False)

    def _padded_layout(self, plan) -> list:
        """Per batched group, ``(name, shape, members)``: each member a list of ``(start, rows, cols, slot)`` slices
        of ``values`` placed side by side from column ``slot`` (dense groups: one slice filling the member)."""
        table = self._table
        layout = []
        for g, group in enumerate(plan.dense):
            mb, nb = group.size
            layout.append(("dense", (len(group.members), mb, nb),
                           [[(int(table[b, 5]), mb, nb, 0)] for b in group.members]))
        for prefix, groups, slots in (("V", plan.columns, plan.v_slot), ("U", plan.rows, plan.u_slot)):
            members = [[[] for _ in g.members] for g in groups]
            for b, (g, i, slot) in slots.items():
                r0, r1, c0, c1, r, offset = (int(v) for v in table[b])
                mb, nb = r1 - r0, c1 - c0
                start = offset + mb * r if prefix == "V" else offset
                members[g][i].append((start, nb if prefix == "V" else mb, r, slot))
            for g, group in enumerate(groups):
                layout.append((prefix, (len(group.members), group.size, group.width),
                               [sorted(parts, key=lambda part: part[3]) for parts in members[g]]))
        return layout

    @property
    def nparams(self) -> int:
        """``Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b`` (the length of ``values``)."""
        return self.values.numel()

    def reset_parameters(self) -> None:
        """Entries of the weight get ``nn.Linear``'s variance ``1/(3 in_features)``: dense leaves uniform on
        ``±1/√in``; low-rank leaves ``V_b`` with variance ``1/in`` and ``U_b`` with ``1/(3 r_b)``."""
        bound = 1.0 / math.sqrt(self.in_features)
        scale = np.empty(self.values.numel())
        for r0, r1, c0, c1, r, offset in self._table.tolist():
            mb, nb = r1 - r0, c1 - c0
            if r < 0:
                scale[offset:offset + mb * nb] = bound
            elif r > 0:
                scale[offset:offset + mb * r] = 1.0 / math.sqrt(r)
                scale[offset + mb * r:offset + (mb + nb) * r] = math.sqrt(3.0) * bound
        with torch.no_grad():
            self.values.uniform_(-1.0, 1.0).mul_(torch.as_tensor(scale, dtype=self.values.dtype,
                                                                 device=self.values.device))
        self.reset_bias()

    # ---------------------------------------------------------------- products
    def _padded_from_slices(self) -> list[torch.Tensor]:
        """The batched group tensors assembled from slices of ``values`` (the plain path: no index tensor)."""
        out = []
        for _, (count, rows, width), members in self._layout:
            stacked = []
            for parts in members:
                pieces, filled = [], 0
                for start, r, c, slot in parts:
                    pieces.append(self.values[start:start + r * c].view(r, c))
                    filled = slot + c
                block = torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0]
                stacked.append(nn.functional.pad(block, (0, width - filled)) if filled < width else block)
            out.append(torch.stack(stacked) if count > 1 else stacked[0].unsqueeze(0))
        return out

    def _scatter_index(self) -> tuple[np.ndarray, list[int]]:
        """Where each entry of ``values`` goes in the concatenated padded group tensors, and their sizes."""
        index = np.empty(self.values.numel(), dtype=np.int64)
        sizes, base = [], 0
        for _, (count, rows, width), members in self._layout:
            for i, parts in enumerate(members):
                for start, r, c, slot in parts:
                    local = (i * rows + np.arange(r)[:, None]) * width + slot + np.arange(c)[None, :]
                    index[start:start + r * c] = base + local.ravel()
            sizes.append(count * rows * width)
            base += count * rows * width
        return index, sizes

    def _padded_scattered(self, differentiable: bool) -> list[torch.Tensor]:
        """The batched group tensors from one scatter of ``values`` (training; cached without autograd)."""
        def build():
            index, sizes = self._cached("scatter_index", lambda: (
                lambda pair: (torch.from_numpy(pair[0]).to(self.values.device), pair[1]))(self._scatter_index()))
            if differentiable:
                from structmat.layers.sss import _Scatter

                buffer = _Scatter.apply(self.values, index, sum(sizes))
            else:
                buffer = self.values.new_zeros(sum(sizes)).scatter_(0, index, self.values.detach())
            return [part.view(shape) for part, (_, shape, _) in zip(buffer.split(sizes), self._layout)]

        return build() if differentiable else self._cached("padded", build, [self.values])

    def _batched_product(self, x: torch.Tensor, padded: list[torch.Tensor]) -> torch.Tensor:
        if self._buffers.get("col_order") is not None:
            x = x.index_select(1, self._buffers.get("col_order").to(torch.int32))
        batch = x.shape[0]
        plan, tensors = self._plan, iter(padded)
        tiled, scattered = [], []  # outputs covering [0, m) in order, and (rows, outputs) to scatter-add once

        def collect(out, rows):  # out (G, batch, m_b)
            flat = out.transpose(0, 1).reshape(batch, out.shape[0] * out.shape[2])
            if rows is None:
                tiled.append(flat)
            else:
                scattered.append((rows.to(torch.int64), flat))  # ONNX ScatterND takes int64 indices

        def gathered(source, index, members, width):  # (G, batch, width) view of source's columns
            picked = source if index is None else source.index_select(1, index.to(torch.int32))
            return picked.reshape(batch, members, width).transpose(0, 1)

        for g, group in enumerate(plan.dense):
            xs = gathered(x, self._buffers.get(f"_dense{g}_gather"), len(group.members), group.size[1])
            collect(torch.bmm(xs, next(tensors).transpose(1, 2)), self._buffers.get(f"_dense{g}_rows"))
        if plan.columns:
            parts = []
            for g, group in enumerate(plan.columns):
                xs = gathered(x, self._buffers.get(f"_V{g}_gather"), len(group.members), group.size)
                part = torch.bmm(xs, next(tensors))
                parts.append(part.transpose(0, 1).reshape(batch, part.shape[0] * part.shape[2]))
            t = torch.cat(parts + [x.new_zeros(batch, 1)], dim=1)
            for g, group in enumerate(plan.rows):
                ts = gathered(t, self._buffers.get(f"_U{g}_gather"), len(group.members), group.width)
                collect(torch.bmm(ts, next(tensors).transpose(1, 2)), self._buffers.get(f"_U{g}_rows"))
        y = tiled[0] if tiled else x.new_zeros(batch, self.out_features) + 0.0 * x.sum()
        for flat in tiled[1:]:
            y = y + flat
        if scattered:
            rows = torch.cat([r for r, _ in scattered]) if len(scattered) > 1 else scattered[0][0]
            values = torch.cat([v for _, v in scattered], dim=1) if len(scattered) > 1 else scattered[0][1]
            y = y.index_add(1, rows, values)
        if self._buffers.get("inverse_row_order") is not None:
            y = y.index_select(1, self._buffers.get("inverse_row_order").to(torch.int32))
        return y

    def _single_leaf_factors(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V)`` of a matrix that is one low-rank leaf: views of ``values``."""
        m, n, r = self.out_features, self.in_features, int(self._table[0, 4])
        return values[: m * r].view(m, r), values[m * r:].view(n, r)

    def _permuted_low_rank(self, x: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        if self._buffers.get("col_order") is not None:
            x = x.index_select(1, self._buffers.get("col_order").to(torch.int32))
        y = (x @ V) @ U.T
        return y if self._buffers.get("inverse_row_order") is None else y.index_select(1, self._buffers.get("inverse_row_order").to(torch.int32))

    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        if self._single_leaf:
            return self._permuted_low_rank(x, *self._single_leaf_factors(self.values))
        return self._batched_product(x, self._padded_from_slices())

    def _train_product(self, x: torch.Tensor) -> torch.Tensor:
        if self._single_leaf:
            return self._permuted_low_rank(x, *self._single_leaf_factors(self.values))
        return self._batched_product(x, self._padded_scattered(differentiable=True))

    def _fast_product(self, x: torch.Tensor) -> torch.Tensor:
        if self._single_leaf:
            U, V, cols, inverse_rows = self._cached("single_leaf", lambda: (
                *self._single_leaf_factors(self.values.detach()),
                *(None if t is None else t.to(torch.int32) for t in (self._buffers.get("col_order"),
                                                                     self._buffers.get("inverse_row_order")))))
            if cols is not None:
                x = x.index_select(1, cols)
            y = torch.mm(torch.mm(x, V), U.T)
            return y if inverse_rows is None else y.index_select(1, inverse_rows)
        if x.shape[0] > FAST_SWEEP_MAX_BATCH:
            return self._batched_product(x, self._padded_scattered(differentiable=False)).contiguous()
        y = x.new_empty((x.shape[0], self.out_features))
        hmatrix_rows(self._table, *self._sweep_arrays(), x.numpy(), y.numpy(), *self._scratch(x.dtype))
        return y

    def _sweep_arrays(self) -> list[np.ndarray]:
        """NumPy views of ``values`` (the parameter's memory) and of the two permutations for the Numba sweep."""
        def build():
            cols = np.arange(self.in_features, dtype=np.int32) if self._buffers.get("col_order") is None else self._buffers.get("col_order").numpy()
            inv = self._buffers.get("inverse_row_order")
            rows = (np.arange(self.out_features, dtype=np.int32) if inv is None
                    else inverse_permutation(inv.numpy().astype(np.int64)).astype(np.int32))
            return [self.values.detach().numpy(), cols, rows]

        return self._cached("sweep_arrays", build)  # views of the parameter's memory

    def _scratch(self, dtype) -> tuple[np.ndarray, ...]:
        def build():
            np_dtype = np.float32 if dtype == torch.float32 else np.float64
            rank = max(1, int(self._table[:, 4].max()))
            return (np.empty(self.in_features, np_dtype), np.empty(rank, np_dtype),
                    np.empty(self.out_features, np_dtype))

        return self._cached(f"scratch_{dtype}", build)

    # ---------------------------------------------------------------- matrices
    def to_matrix(self, dtype=np.float64) -> HMatrix:
        col_order = None if self._buffers.get("col_order") is None else self._buffers.get("col_order").cpu().numpy().astype(np.int64)
        inv = self._buffers.get("inverse_row_order")
        row_order = None if inv is None else inverse_permutation(inv.cpu().numpy().astype(np.int64))
        values = self.values.detach().cpu().double().numpy().astype(dtype)
        return self._matrix_class((self.out_features, self.in_features), self.leaves.cpu().numpy().astype(np.int64),
                                  values, row_order=row_order, col_order=col_order, partition=self.partition,
                                  dtype=dtype)

    @classmethod
    def _build_from_matrix(cls, M: HMatrix, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        layer._setup(M.leaves, M.partition, M.row_order, M.col_order, device, dtype)
        with torch.no_grad():
            layer.values.copy_(torch.from_numpy(np.array(M.values, dtype=np.float64)))
        return layer

    def _structure_repr(self) -> str:
        ranks = self._table[:, 4]
        batches = len(self._plan.dense) + len(self._plan.columns) + len(self._plan.rows)
        text = f"leaves={len(ranks)} ({int((ranks < 0).sum())} dense), batched products={batches}"
        details = ", ".join(f"{k}={v}" for k, v in self.partition.items() if k != "kind")
        return text + (f", {details}" if details else "")


class _DepthPartitionLinear(HMatrixLinear):
    """A layer whose partition is fixed by its kind and a depth; a fresh one has rank-``rank`` low-rank leaves
    (dense where that is cheaper) at depth ``depth`` (default: ``min(_default_depth, max_depth(out, in, 32))``)."""

    _default_depth = 2

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8, depth=None,
                 device=None, dtype=None) -> None:
        StructuredLinear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_structure_size(check_positive_int(rank, "rank"), "rank", min(in_features, out_features),
                                    "min(in_features, out_features)")
        if depth is None:
            depth = min(self._default_depth, max_depth(out_features, in_features, 32))
        partition = {"kind": self.family, "depth": int(depth)}
        self._setup(_fresh_table(blocks_for(out_features, in_features, partition), rank), partition, None, None,
                    device, dtype)
        self.reset_parameters()


class HODLRLinear(_DepthPartitionLinear):
    """A linear layer whose weight is a HODLR matrix (family ``"hodlr"``).

    A fresh layer has depth ``depth`` (default: ``min(4, max_depth(out, in, 32))``), dense diagonal leaves and
    rank-``rank`` off-diagonal leaves (capped where dense would be cheaper).
    """

    family = "hodlr"
    _matrix_class = HODLRMatrix
    _default_depth = 4


class HEDLRLinear(_DepthPartitionLinear):
    """A linear layer whose weight is a HEDLR (block low-rank) matrix (family ``"hedlr"``).

    A fresh layer is a ``2^depth × 2^depth`` grid (default depth: ``min(2, max_depth(out, in, 32))``) of rank-``rank``
    blocks (dense where that is cheaper).
    """

    family = "hedlr"
    _matrix_class = HEDLRMatrix
