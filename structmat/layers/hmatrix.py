"""Hierarchical-matrix layers: trainable leaf factors, a forward pass that never forms the dense weight.

Low-rank leaves run in two stages batched over column and row clusters, dense leaves in batches of equal shape
(:mod:`structmat.layers._hmatrix_plan`): each stage is a gather of input columns, one ``torch.bmm`` per group of
equal-sized clusters, and an add (or a scatter-add) into the output. ``nparams`` counts only the real numbers,
exactly as the matrix does; padding slots of a batch are dead parameters that never reach the output and get no
gradient. Parameters are float32 by default; ``to_matrix`` returns a float64 copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers._hmatrix_plan import make_plan
from structmat.layers.base import StructuredLinear
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.matrices.hmatrix_partition import blocks_for, eta_blocks, max_depth
from structmat.matrices.permutation import inverse_permutation

__all__ = ["HMatrixLinear", "HODLRLinear", "HEDLRLinear"]

def _fresh_table(blocks: np.ndarray, rank: int) -> np.ndarray:
    """Leaf table for a new layer: admissible leaves at ``rank`` (if cheaper than dense), the others dense."""
    table = np.zeros((len(blocks), 5), dtype=np.int64)
    table[:, :4] = blocks[:, :4]
    for i, (r0, r1, c0, c1, admissible) in enumerate(blocks.tolist()):
        mb, nb = r1 - r0, c1 - c0
        r = min(rank, mb, nb)
        table[i, 4] = r if (admissible and r * (mb + nb) < mb * nb) else -1
    return table


class HMatrixLinear(StructuredLinear):
    """A linear layer whose weight is a hierarchical matrix on the η-admissible partition (family ``"hmatrix"``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rank : int
        Rank of every admissible leaf of a freshly built layer (capped where dense would be cheaper); the other
        leaves are dense. Layers built by ``from_matrix`` take their ranks from the matrix.
    eta : float
        Admissibility parameter of the fresh partition.
    min_block : int
        Inadmissible blocks are split while both sides exceed it.

    Notes
    -----
    ``nparams = Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b``; a forward pass costs about that many multiply-adds per
    input row (plus the padding of grouped ranks).
    """

    family = "hmatrix"
    _matrix_class = HMatrix

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8, eta: float = 1.0,
                 min_block: int = 16, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_positive_int(rank, "rank")
        min_block = check_positive_int(min_block, "min_block")
        blocks = eta_blocks(out_features, in_features, eta, min_block)
        partition = {"kind": "eta", "eta": float(eta), "min_block": min_block}
        self._setup(_fresh_table(blocks, rank), partition, None, None, device, dtype)
        self.reset_parameters()

    # ---------------------------------------------------------------- structure
    def _setup(self, table, partition, row_order, col_order, device, dtype) -> None:
        """Register the structure (buffers) and the batched, uninitialised factors (parameters)."""
        table = np.asarray(table, dtype=np.int64)[:, :5]
        self.partition = dict(partition)
        self._plan = plan = make_plan(table, self.out_features)
        long = dict(device=device, dtype=torch.long)
        self.register_buffer("leaves", torch.tensor(table, **long))
        self.register_buffer("col_order", None if col_order is None else torch.tensor(np.array(col_order), **long))
        self.register_buffer("inverse_row_order",
                             None if row_order is None else torch.tensor(inverse_permutation(row_order), **long))

        def parameter(*shape):
            return nn.Parameter(torch.empty(*shape, device=device, dtype=dtype))

        def index(values):
            return None if values is None else torch.tensor(values, **long)

        for g, group in enumerate(plan.dense):
            mb, nb = group.size
            self.register_parameter(f"dense{g}", parameter(len(group.members), mb, nb))
            self.register_buffer(f"dense{g}_cols", index(group.in_index))
            self.register_buffer(f"dense{g}_rows", index(group.out_rows))
        for g, group in enumerate(plan.columns):
            self.register_parameter(f"V{g}", parameter(len(group.members), group.size, group.width))
            self.register_buffer(f"V{g}_cols", index(group.in_index))
        for g, group in enumerate(plan.rows):
            self.register_parameter(f"U{g}", parameter(len(group.members), group.size, group.width))
            self.register_buffer(f"U{g}_gather", index(group.in_index))
            self.register_buffer(f"U{g}_rows", index(group.out_rows))

    @property
    def nparams(self) -> int:
        """``Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b`` (padding excluded)."""
        t = self.leaves.cpu().numpy()
        mb, nb, r = t[:, 1] - t[:, 0], t[:, 3] - t[:, 2], t[:, 4]
        return int(np.where(r < 0, mb * nb, np.maximum(r, 0) * (mb + nb)).sum())

    def _slot_scales(self, slots: dict, groups: list, power: float) -> list[np.ndarray]:
        """Per group, a (members, 1, width) array with ``r_b ** power`` on each leaf's slots and 0 on padding."""
        out = [np.zeros((len(g.members), 1, g.width)) for g in groups]
        ranks = self.leaves[:, 4].cpu().numpy()
        for b, (g, i, slot) in slots.items():
            out[g][i, 0, slot:slot + ranks[b]] = float(ranks[b]) ** power
        return out

    def reset_parameters(self) -> None:
        """Entries of the weight get ``nn.Linear``'s variance ``1/(3 in_features)``: dense leaves uniform on
        ``±1/√in``; low-rank leaves ``V_b`` with variance ``1/in`` and ``U_b`` with ``1/(3 r_b)``; padding zero."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for g in range(len(self._plan.dense)):
                nn.init.uniform_(getattr(self, f"dense{g}"), -bound, bound)
            for g, scale in enumerate(self._slot_scales(self._plan.v_slot, self._plan.columns, 0.0)):
                V = getattr(self, f"V{g}")
                V.uniform_(-math.sqrt(3.0) * bound, math.sqrt(3.0) * bound).mul_(torch.as_tensor(scale, dtype=V.dtype,
                                                                                                  device=V.device))
            for g, scale in enumerate(self._slot_scales(self._plan.u_slot, self._plan.rows, -0.5)):
                U = getattr(self, f"U{g}")
                U.uniform_(-1.0, 1.0).mul_(torch.as_tensor(scale, dtype=U.dtype, device=U.device))
        self.reset_bias()

    # ---------------------------------------------------------------- products
    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        if self.col_order is not None:
            x = x.index_select(1, self.col_order)
        batch = x.shape[0]
        tiled, scattered = [], []  # outputs covering [0, m) in order, and (rows, outputs) to scatter-add once

        def collect(out, rows):  # out (G, batch, m_b)
            flat = out.transpose(0, 1).reshape(batch, -1)
            if rows is None:
                tiled.append(flat)
            else:
                scattered.append((rows, flat))

        def gathered(source, positions, members, width):  # (G, batch, width) view of source's columns
            return source.index_select(1, positions).view(batch, members, width).transpose(0, 1)

        for g, group in enumerate(self._plan.dense):
            xs = gathered(x, getattr(self, f"dense{g}_cols"), len(group.members), group.size[1])
            collect(torch.bmm(xs, getattr(self, f"dense{g}").transpose(1, 2)), getattr(self, f"dense{g}_rows"))
        if self._plan.columns:
            parts = []
            for g, group in enumerate(self._plan.columns):
                xs = gathered(x, getattr(self, f"V{g}_cols"), len(group.members), group.size)
                parts.append(torch.bmm(xs, getattr(self, f"V{g}")).transpose(0, 1).reshape(batch, -1))
            t = torch.cat(parts + [x.new_zeros(batch, 1)], dim=1)
            for g, group in enumerate(self._plan.rows):
                ts = gathered(t, getattr(self, f"U{g}_gather"), len(group.members), group.width)
                collect(torch.bmm(ts, getattr(self, f"U{g}").transpose(1, 2)), getattr(self, f"U{g}_rows"))
        y = tiled[0] if tiled else x.new_zeros(batch, self.out_features) + 0.0 * x.sum()
        for flat in tiled[1:]:
            y = y + flat
        if scattered:
            rows = torch.cat([r for r, _ in scattered]) if len(scattered) > 1 else scattered[0][0]
            values = torch.cat([v for _, v in scattered], dim=1) if len(scattered) > 1 else scattered[0][1]
            y = y.index_add(1, rows, values)
        if self.inverse_row_order is not None:
            y = y.index_select(1, self.inverse_row_order)
        return y

    # ---------------------------------------------------------------- matrices
    def to_matrix(self) -> HMatrix:
        table = self.leaves.cpu().numpy()
        plan = self._plan

        def numpy(name):
            return getattr(self, name).detach().cpu().double().numpy()

        dense = [numpy(f"dense{g}") for g in range(len(plan.dense))]
        V = [numpy(f"V{g}") for g in range(len(plan.columns))]
        U = [numpy(f"U{g}") for g in range(len(plan.rows))]
        blocks = []
        for b, (r0, r1, c0, c1, r) in enumerate(table.tolist()):
            if r < 0:
                g, i = plan.d_slot[b]
                payload = dense[g][i]
            elif r == 0:
                payload = (np.zeros((r1 - r0, 0)), np.zeros((c1 - c0, 0)))
            else:
                (gv, iv, sv), (gu, iu, su) = plan.v_slot[b], plan.u_slot[b]
                payload = (U[gu][iu, :, su:su + r], V[gv][iv, :, sv:sv + r])
            blocks.append(((r0, r1, c0, c1), payload))
        col_order = None if self.col_order is None else self.col_order.cpu().numpy()
        row_order = None if self.inverse_row_order is None else inverse_permutation(self.inverse_row_order.cpu().numpy())
        return self._matrix_class.from_blocks((self.out_features, self.in_features), blocks, row_order=row_order,
                                              col_order=col_order, partition=self.partition, dtype=np.float64)

    @classmethod
    def _build_from_matrix(cls, M: HMatrix, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        layer._setup(M.leaves, M.partition, M.row_order, M.col_order, device, dtype)
        plan = layer._plan
        dense = [np.zeros(tuple(getattr(layer, f"dense{g}").shape)) for g in range(len(plan.dense))]
        V = [np.zeros(tuple(getattr(layer, f"V{g}").shape)) for g in range(len(plan.columns))]
        U = [np.zeros(tuple(getattr(layer, f"U{g}").shape)) for g in range(len(plan.rows))]
        for b, (_, payload) in enumerate(M.blocks()):
            if not isinstance(payload, tuple):
                g, i = plan.d_slot[b]
                dense[g][i] = payload
            elif payload[0].shape[1] > 0:
                r = payload[0].shape[1]
                (gv, iv, sv), (gu, iu, su) = plan.v_slot[b], plan.u_slot[b]
                V[gv][iv, :, sv:sv + r] = payload[1]
                U[gu][iu, :, su:su + r] = payload[0]
        with torch.no_grad():
            for name, arrays in (("dense", dense), ("V", V), ("U", U)):
                for g, array in enumerate(arrays):
                    getattr(layer, f"{name}{g}").copy_(torch.from_numpy(array))
        return layer

    def _structure_repr(self) -> str:
        ranks = self.leaves[:, 4]
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
        rank = check_positive_int(rank, "rank")
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
