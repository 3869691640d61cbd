"""Hierarchical-matrix layers: trainable leaf factors, a forward pass that never forms the dense weight.

Leaves of the same shape and kind are grouped, and each group runs as two batched products (``torch.bmm``) between
a gather of the input columns and a scatter-add into the output (``index_add_``). Low-rank leaves of one shape with
different ranks share a group padded to its largest rank when the padding adds at most ``PAD_SLACK`` of the
group's numbers; a fixed 0/1 mask zeroes the padded columns of ``V``, so they never reach the output and get no
gradient. ``nparams`` counts only the real numbers, exactly as the matrix does. Parameters are float32 by default;
``to_matrix`` returns a float64 copy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers.base import StructuredLinear
from structmat.matrices.hmatrix import HEDLRMatrix, HMatrix, HODLRMatrix
from structmat.matrices.hmatrix_partition import eta_blocks, hedlr_blocks, hodlr_blocks, max_depth
from structmat.matrices.permutation import inverse_permutation

__all__ = ["HMatrixLinear", "HODLRLinear", "HEDLRLinear", "PAD_SLACK"]

#: A low-rank group is padded to its largest rank only while padding adds at most this share of its numbers.
PAD_SLACK = 0.25


def _fresh_table(blocks: np.ndarray, rank: int) -> np.ndarray:
    """Leaf table for a new layer: admissible leaves at ``rank`` (if cheaper than dense), the others dense."""
    table = np.zeros((len(blocks), 5), dtype=np.int64)
    table[:, :4] = blocks[:, :4]
    for i, (r0, r1, c0, c1, admissible) in enumerate(blocks.tolist()):
        mb, nb = r1 - r0, c1 - c0
        r = min(rank, mb, nb)
        table[i, 4] = r if (admissible and r * (mb + nb) < mb * nb) else -1
    return table


def _groups(table: np.ndarray) -> list[tuple[str, list[int], int]]:
    """``(kind, leaf indices, padded rank)`` per group: dense leaves by shape; low-rank leaves by shape, split by
    rank where padding to the group's largest rank would add more than ``PAD_SLACK``. Rank-0 leaves are dropped."""
    by_shape: dict[tuple, list[int]] = {}
    for i, (r0, r1, c0, c1, r) in enumerate(table[:, :5].tolist()):
        if r != 0:
            by_shape.setdefault(("dense" if r < 0 else "lowrank", r1 - r0, c1 - c0), []).append(i)
    groups = []
    for (kind, _, _), members in by_shape.items():
        if kind == "dense":
            groups.append((kind, members, -1))
            continue
        members = sorted(members, key=lambda i: -table[i, 4])
        current = [members[0]]
        for i in members[1:]:
            top = table[current[0], 4]
            if top * (len(current) + 1) <= (1 + PAD_SLACK) * (table[current, 4].sum() + table[i, 4]):
                current.append(i)
            else:
                groups.append((kind, current, int(top)))
                current = [i]
        groups.append((kind, current, int(table[current[0], 4])))
    return groups


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
        """Register the structure (buffers) and the grouped, uninitialised factors (parameters)."""
        table = np.asarray(table, dtype=np.int64)[:, :5]
        self.partition = dict(partition)
        self.register_buffer("leaves", torch.from_numpy(table.copy()).to(device))
        long = dict(device=device, dtype=torch.long)
        self.register_buffer("col_order", None if col_order is None else torch.tensor(np.array(col_order), **long))
        self.register_buffer("inverse_row_order",
                             None if row_order is None else torch.tensor(inverse_permutation(row_order), **long))
        self._group_specs = []
        for g, (kind, members, rank) in enumerate(_groups(table)):
            r0, r1, c0, c1 = table[members[0], :4]
            mb, nb = int(r1 - r0), int(c1 - c0)
            rows = np.concatenate([np.arange(table[i, 0], table[i, 1]) for i in members])
            cols = np.stack([np.arange(table[i, 2], table[i, 3]) for i in members])
            self.register_buffer(f"group{g}_rows", torch.as_tensor(rows, **long))
            self.register_buffer(f"group{g}_cols", torch.as_tensor(cols, **long))
            count = len(members)
            if kind == "dense":
                self.register_parameter(f"group{g}_D", nn.Parameter(torch.empty(count, mb, nb, device=device,
                                                                                dtype=dtype)))
                self.register_buffer(f"group{g}_mask", None)
            else:
                self.register_parameter(f"group{g}_U", nn.Parameter(torch.empty(count, mb, rank, device=device,
                                                                                dtype=dtype)))
                self.register_parameter(f"group{g}_V", nn.Parameter(torch.empty(count, nb, rank, device=device,
                                                                                dtype=dtype)))
                ranks = table[members, 4]
                mask = None
                if (ranks < rank).any():
                    mask = torch.from_numpy((np.arange(rank)[None, :] < ranks[:, None]).astype(np.float32))
                    mask = mask.to(device=device, dtype=dtype or torch.get_default_dtype())[:, None, :]
                self.register_buffer(f"group{g}_mask", mask)
            self._group_specs.append((kind, list(members), rank))

    @property
    def nparams(self) -> int:
        """``Σ_low r_b (m_b + n_b) + Σ_dense m_b n_b`` (padding excluded)."""
        t = self.leaves.cpu().numpy()
        mb, nb, r = t[:, 1] - t[:, 0], t[:, 3] - t[:, 2], t[:, 4]
        return int(np.where(r < 0, mb * nb, np.maximum(r, 0) * (mb + nb)).sum())

    def reset_parameters(self) -> None:
        """Entries of the weight get ``nn.Linear``'s variance ``1/(3 in_features)``: dense leaves uniform on
        ``±1/√in``; low-rank leaves ``V`` with variance ``1/in`` and ``U`` with ``1/(3 r_b)``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for g, (kind, members, rank) in enumerate(self._group_specs):
                if kind == "dense":
                    nn.init.uniform_(getattr(self, f"group{g}_D"), -bound, bound)
                    continue
                nn.init.uniform_(getattr(self, f"group{g}_V"), -math.sqrt(3.0) * bound, math.sqrt(3.0) * bound)
                U = getattr(self, f"group{g}_U")
                ranks = torch.as_tensor(self.leaves[members, 4].cpu().numpy(), dtype=U.dtype, device=U.device)
                U.uniform_(-1.0, 1.0).mul_(ranks.clamp(min=1).rsqrt()[:, None, None])
                mask = getattr(self, f"group{g}_mask")
                if mask is not None:
                    U.mul_(mask)
                    getattr(self, f"group{g}_V").mul_(mask)
        self.reset_bias()

    # ---------------------------------------------------------------- products
    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        if self.col_order is not None:
            x = x.index_select(1, self.col_order)
        batch = x.shape[0]
        y = x.new_zeros(batch, self.out_features)
        for g, (kind, members, _) in enumerate(self._group_specs):
            cols = getattr(self, f"group{g}_cols")  # (G, n_b)
            xs = x[:, cols].permute(1, 0, 2)  # (G, batch, n_b)
            if kind == "dense":
                out = torch.bmm(xs, getattr(self, f"group{g}_D").transpose(1, 2))
            else:
                V, mask = getattr(self, f"group{g}_V"), getattr(self, f"group{g}_mask")
                if mask is not None:
                    V = V * mask
                out = torch.bmm(torch.bmm(xs, V), getattr(self, f"group{g}_U").transpose(1, 2))
            y = y.index_add(1, getattr(self, f"group{g}_rows"), out.permute(1, 0, 2).reshape(batch, -1))
        if self.inverse_row_order is not None:
            y = y.index_select(1, self.inverse_row_order)
        return y

    # ---------------------------------------------------------------- matrices
    def to_matrix(self) -> HMatrix:
        table = self.leaves.cpu().numpy()
        payload: list = [None] * len(table)
        for g, (kind, members, _) in enumerate(self._group_specs):
            if kind == "dense":
                D = getattr(self, f"group{g}_D").detach().cpu().double().numpy()
                for j, i in enumerate(members):
                    payload[i] = D[j]
            else:
                U = getattr(self, f"group{g}_U").detach().cpu().double().numpy()
                V = getattr(self, f"group{g}_V").detach().cpu().double().numpy()
                for j, i in enumerate(members):
                    payload[i] = (U[j, :, : table[i, 4]], V[j, :, : table[i, 4]])
        blocks = []
        for i, (r0, r1, c0, c1, r) in enumerate(table.tolist()):
            if payload[i] is None:  # a rank-0 leaf
                payload[i] = (np.zeros((r1 - r0, 0)), np.zeros((c1 - c0, 0)))
            blocks.append(((r0, r1, c0, c1), payload[i]))
        col_order = None if self.col_order is None else self.col_order.cpu().numpy()
        row_order = None if self.inverse_row_order is None else inverse_permutation(self.inverse_row_order.cpu().numpy())
        return self._matrix_class.from_blocks((self.out_features, self.in_features), blocks, row_order=row_order,
                                              col_order=col_order, partition=self.partition, dtype=np.float64)

    @classmethod
    def _build_from_matrix(cls, M: HMatrix, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        layer._setup(M.leaves, M.partition, M.row_order, M.col_order, device, dtype)
        payload = list(M.blocks())
        with torch.no_grad():
            for g, (kind, members, rank) in enumerate(layer._group_specs):
                if kind == "dense":
                    D = np.stack([payload[i][1] for i in members])
                    getattr(layer, f"group{g}_D").copy_(torch.from_numpy(D))
                    continue
                U = np.zeros((len(members), payload[members[0]][1][0].shape[0], rank))
                V = np.zeros((len(members), payload[members[0]][1][1].shape[0], rank))
                for j, i in enumerate(members):
                    Ub, Vb = payload[i][1]
                    U[j, :, : Ub.shape[1]] = Ub
                    V[j, :, : Vb.shape[1]] = Vb
                getattr(layer, f"group{g}_U").copy_(torch.from_numpy(U))
                getattr(layer, f"group{g}_V").copy_(torch.from_numpy(V))
        return layer

    def _structure_repr(self) -> str:
        ranks = self.leaves[:, 4]
        text = f"leaves={len(ranks)} ({int((ranks < 0).sum())} dense), groups={len(self._group_specs)}"
        details = ", ".join(f"{k}={v}" for k, v in self.partition.items() if k != "kind")
        return text + (f", {details}" if details else "")


class HODLRLinear(HMatrixLinear):
    """A linear layer whose weight is a HODLR matrix (family ``"hodlr"``).

    A fresh layer has depth ``depth`` (default: ``min(4, max_depth(out, in, 32))``), dense diagonal leaves and
    rank-``rank`` off-diagonal leaves (capped where dense would be cheaper).
    """

    family = "hodlr"
    _matrix_class = HODLRMatrix

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8, depth=None,
                 device=None, dtype=None) -> None:
        StructuredLinear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_positive_int(rank, "rank")
        depth = min(4, max_depth(out_features, in_features, 32)) if depth is None else depth
        blocks = hodlr_blocks(out_features, in_features, depth)
        self._setup(_fresh_table(blocks, rank), {"kind": "hodlr", "depth": int(depth)}, None, None, device, dtype)
        self.reset_parameters()


class HEDLRLinear(HMatrixLinear):
    """A linear layer whose weight is a HEDLR (block low-rank) matrix (family ``"hedlr"``).

    A fresh layer is a ``2^depth × 2^depth`` grid (default depth: ``min(2, max_depth(out, in, 32))``) of rank-``rank``
    blocks (dense where that is cheaper).
    """

    family = "hedlr"
    _matrix_class = HEDLRMatrix

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int = 8, depth=None,
                 device=None, dtype=None) -> None:
        StructuredLinear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_positive_int(rank, "rank")
        depth = min(2, max_depth(out_features, in_features, 32)) if depth is None else depth
        blocks = hedlr_blocks(out_features, in_features, depth)
        self._setup(_fresh_table(blocks, rank), {"kind": "hedlr", "depth": int(depth)}, None, None, device, dtype)
        self.reset_parameters()
