"""``SSSLinear``: a linear layer whose weight is a sequentially semiseparable matrix, run as two sweeps.

The parameters are the seven flat generator arrays of :class:`structmat.matrices.SSS` (same layout, float32 by
default), so ``nparams`` is exactly the matrix's. The forward pass never forms the dense weight. For an input
batch ``x`` of shape ``(b, n)`` it

1. gathers ``x`` into stage blocks zero-padded to the largest stage, ``U`` of shape ``(K, b, n_max)``
   (the stored column permutation is folded into this gather);
2. computes every stage's input terms at once with batched matmuls (``torch.bmm``):
   ``U B_kᵀ`` (causal), ``U F_kᵀ`` (anticausal) and ``U D_kᵀ`` (diagonal blocks);
3. runs the two recurrences over the K stages, batched over the rows of ``x``:
   ``s_{k+1} = s_k A_kᵀ + u_k B_kᵀ`` forward and ``z_{k-1} = z_k E_kᵀ + u_k F_kᵀ`` backward;
4. adds ``S C_kᵀ + Z G_kᵀ`` to the diagonal terms with two more batched matmuls and gathers the output rows
   (the stored row permutation is folded into this gather).

The padded generator tensors are built from the flat parameters by a scatter each call, so padding entries
are always zero and receive no gradient; the cost is ``nparams`` plus padding multiply-adds per row. That is the
training path. Without autograd on the CPU, a batch of a few rows runs one Numba sweep per row over the flat
generators (:func:`structmat.layers._fast_kernels.sss_rows`) and larger batches reuse cached padded generators. When
padding to the largest stage would multiply the work by more than :data:`PADDING_LIMIT` (unequal stages), training
and large batches run the plain path's stage-by-stage products instead. The
plain path (exports, other devices, reduced precision) runs the stages one after another on slices of the flat
parameters: no padding and no index tensor beyond the two stored permutations (int16 or int32 buffers).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers._fast_kernels import sss_rows
from structmat.layers.base import StructuredLinear, check_structure_size, compact_index
from structmat.matrices._sss_kernels import sss_offsets
from structmat.matrices.permutation import check_permutation, inverse_permutation
from structmat.matrices.sss import GENERATORS, SSS, _shapes, cap_dims, stage_sizes

__all__ = ["SSSLinear"]

#: Spectral norm of the transition matrices of a freshly initialised layer (keeps states bounded over stages).
_INIT_TRANSITION_NORM = 0.7
#: Batches up to this many rows take the per-row Numba sweep on the fast path; larger ones the batched products.
FAST_SWEEP_MAX_BATCH = 8
#: The batched products pad every stage to the largest one. When that multiplies the work per input row by more than
#: this (padded multiply-adds over ``nparams``), the stages run one after another on slices instead (the plain path,
#: no padding), in training and on the fast path alike. Measured with one thread at batch 32 and 256 on 1000×1280
#: layers: eight equal stages (factor 1.07–1.11) run faster batched (0.34 against 0.56 of ``nn.Linear`` at batch 32),
#: five unequal ones (factor 2.3) and the EfficientNet-Lite0 classifier's two-stage fit (all rows in one stage, all
#: columns in the other: factor 10) faster stage by stage (0.42 against 0.93 and 0.31 against 3.1 at batch 256).
PADDING_LIMIT = 1.5


class _RowGather(torch.autograd.Function):
    """``x.index_select(0, index)`` whose backward is another row gather, ``grad.index_select(0, inverse)``.

    Valid when every row of ``x`` appears exactly once among the output rows that carry gradient, and the other
    output rows (padding) receive zero gradient or are never read back: then the scatter-add autograd would use
    equals this gather, which is much faster on one core.
    """

    @staticmethod
    def forward(ctx, x, index, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class _Scatter(torch.autograd.Function):
    """A zero buffer of ``size`` with ``buffer[index] = flat`` (distinct positions); backward gathers."""

    @staticmethod
    def forward(ctx, flat, index, size: int):
        ctx.save_for_backward(index)
        return flat.new_zeros(size).scatter_(0, index, flat)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


def _padded_index(shapes, rows: int, cols: int) -> np.ndarray:
    """Positions, in a (K, rows, cols) zero-padded tensor, of the flat row-major stage matrices of ``shapes``."""
    out = []
    for k, (r, c) in enumerate(shapes):
        i, j = np.meshgrid(np.arange(r), np.arange(c), indexing="ij")
        out.append((k * rows * cols + i * cols + j).ravel())
    return np.concatenate(out + [np.zeros(0, np.int64)]).astype(np.int64)


class SSSLinear(StructuredLinear):
    """A linear layer ``y = x Wᵀ + b`` with ``W`` sequentially semiseparable (see :mod:`structmat.matrices.sss`).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    num_stages : int
        K, with proportional stage sizes (ignored when ``stage_sizes`` is given).
    state_dim : int
        Causal and anticausal state dim at every boundary, capped to a minimal realization.
    stage_sizes : pair (m_sizes, n_sizes), optional
        Rows (output features) and columns (input features) per stage.
    causal_dims, anticausal_dims : int sequences of length K+1, optional
        Explicit state dims (with zero ends), as stored by :class:`~structmat.matrices.SSS`.
    row_order, col_order : permutations, optional
        Stored output/input feature orders (``W[row_order][:, col_order]`` is the SSS core).

    Notes
    -----
    ``nparams`` is the SSS count ``Σ m_k n_k + Σ (d_{k+1} d_k + d_{k+1} n_k + m_k d_k) + Σ (e_k e_{k+1} + e_k n_k
    + m_k e_{k+1})``; the parameters ``A`` … ``G`` are the flat arrays of the matrix layout.
    """

    family = "sss"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, num_stages: int = 8,
                 state_dim: int = 16, stage_sizes=None, causal_dims=None, anticausal_dims=None, row_order=None,
                 col_order=None, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if stage_sizes is None:
            K = check_positive_int(num_stages, "num_stages")
            check_structure_size(K, "num_stages", min(in_features, out_features),
                                 "every stage needs at least one input and one output feature")
            m_sizes, n_sizes = _proportional(out_features, K), _proportional(in_features, K)
        else:
            m_sizes, n_sizes = (np.asarray(s, dtype=np.int64) for s in stage_sizes)
            if m_sizes.shape != n_sizes.shape or m_sizes.sum() != out_features or n_sizes.sum() != in_features:
                raise ValueError(f"stage_sizes must be two sequences of equal length summing to (out_features, "
                                 f"in_features) = ({out_features}, {in_features}); got {m_sizes.tolist()} and "
                                 f"{n_sizes.tolist()}")
        K = int(m_sizes.shape[0])
        if causal_dims is None or anticausal_dims is None:
            dim = check_positive_int(state_dim, "state_dim", minimum=0)
            d, e = cap_dims(m_sizes, n_sizes, np.full(K + 1, dim), np.full(K + 1, dim))
            d = d if causal_dims is None else np.asarray(causal_dims, np.int64)
            e = e if anticausal_dims is None else np.asarray(anticausal_dims, np.int64)
        else:
            d, e = np.asarray(causal_dims, np.int64), np.asarray(anticausal_dims, np.int64)
        if d.shape != (K + 1,) or e.shape != (K + 1,) or d[0] or d[K] or e[0] or e[K] or min(d.min(), e.min()) < 0:
            raise ValueError(f"causal_dims and anticausal_dims must have K+1={K + 1} entries >= 0 with zero ends; "
                             f"got {d.tolist()} and {e.tolist()}")
        limit = max(in_features, out_features)
        if max(d.max(), e.max()) > limit:
            raise ValueError(f"causal_dims and anticausal_dims must be <= max(in_features, out_features) = {limit}; "
                             f"got {d.tolist()} and {e.tolist()}")
        self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims = m_sizes, n_sizes, d, e
        self._offsets = sss_offsets(m_sizes, n_sizes, d, e)
        # the same structure as Python ints for the plain path (a traced graph must not read NumPy arrays)
        self._stages = [tuple(int(v) for v in row) for row in
                        np.column_stack([m_sizes, n_sizes, d[:-1], d[1:], e[:-1], e[1:], self._offsets[:, :-1].T,
                                         self._offsets[:, 1:].T])]
        row_order = check_permutation(row_order, out_features, "row_order")
        col_order = check_permutation(col_order, in_features, "col_order")
        # the permutations are buffers only when stored (torch.export mishandles None buffers)
        if col_order is not None:
            self.register_buffer("col_order", compact_index(col_order, in_features, device=device))
        if row_order is not None:
            self.register_buffer("inverse_row_order", compact_index(inverse_permutation(np.asarray(row_order)),
                                                                    out_features, device=device))
        shapes = _shapes(m_sizes, n_sizes, d, e)
        for kind in GENERATORS:
            size = sum(r * c for r, c in shapes[kind])
            setattr(self, kind, nn.Parameter(torch.empty(size, device=device, dtype=dtype)))
        self._plan_padding(shapes)
        self.reset_parameters()

    @property
    def row_order(self) -> np.ndarray | None:
        """The stored output order (int64 NumPy), or None."""
        inv = self._buffers.get("inverse_row_order")
        return None if inv is None else inverse_permutation(inv.cpu().numpy().astype(np.int64))

    def _plan_padding(self, shapes) -> None:
        """The layout of the zero-padded generators of the batched path: ``[D_k; B_k; F_k]`` (K, m_max + d_max +
        e_max, n_max) and ``A_k``, ``C_k``, ``E_k``, ``G_k`` ((K, d_max, d_max), (K, m_max, d_max), …) back to back
        in one buffer, and where each flat parameter goes in it (NumPy; index tensors are derived per device)."""
        m_max, n_max = int(self.m_sizes.max()), int(self.n_sizes.max())
        d_max, e_max = int(self.causal_dims.max()), int(self.anticausal_dims.max())
        self._sizes = (m_max, n_max, d_max, e_max)
        K = len(self.m_sizes)
        rows_in = m_max + d_max + e_max
        blocks = {"P_in": (rows_in, n_max), "A": (d_max, d_max), "C": (m_max, d_max), "E": (e_max, e_max),
                  "G": (m_max, e_max)}
        self._blocks, start = {}, 0
        for name, (r, c) in blocks.items():
            self._blocks[name] = (start, r, c)
            start += K * r * c
        self._buffer_size = start
        where = {"D": ("P_in", 0), "B": ("P_in", m_max), "F": ("P_in", m_max + d_max),
                 "A": ("A", 0), "C": ("C", 0), "E": ("E", 0), "G": ("G", 0)}
        index = []
        for kind in GENERATORS:
            name, row0 = where[kind]
            offset, r, c = self._blocks[name]
            index.append(offset + row0 * c + _padded_index(shapes[kind], r, c))
        self._index_params_np = np.concatenate(index)
        padded = K * (rows_in * n_max + d_max * d_max + e_max * e_max + m_max * (d_max + e_max))
        #: padded multiply-adds of the batched path per input row, over the stored numbers
        self.padding_factor = padded / max(sum(r * c for kind in GENERATORS for r, c in shapes[kind]), 1)

    def _batched_indices(self) -> dict[str, torch.Tensor]:
        """int64 index tensors of the batched path on the parameters' device (derived, cached, never saved)."""
        def build():
            K, n = len(self.m_sizes), self.in_features
            m_max, n_max, _, _ = self._sizes
            # input gather: padded stage row (k, j) <- original feature col_order[c_k + j]. Padding rows read
            # feature 0: they meet only the zero padding columns of [D_k; B_k; F_k], so they add nothing.
            core_cols = np.arange(n) if self._buffers.get("col_order") is None else self._buffers.get("col_order").cpu().numpy().astype(np.int64)
            cols = np.zeros((K, n_max), dtype=np.int64)
            c = np.concatenate([[0], np.cumsum(self.n_sizes)])
            inverse_in = np.empty(n, dtype=np.int64)  # feature -> its (unique) padded row
            for k in range(K):
                cols[k, : self.n_sizes[k]] = core_cols[c[k]:c[k + 1]]
                inverse_in[core_cols[c[k]:c[k + 1]]] = k * n_max + np.arange(self.n_sizes[k])
            # output gather: original feature j <- padded position of core row inv_row[j]
            position = np.concatenate([k * m_max + np.arange(self.m_sizes[k]) for k in range(K)]).astype(np.int64)
            if self._buffers.get("inverse_row_order") is not None:
                position = position[self._buffers.get("inverse_row_order").cpu().numpy().astype(np.int64)]
            # backward of the output gather: padded row -> the output feature it feeds (padding rows reuse feature
            # 0; their gradient only meets zero padding in the generators, so it is never read back)
            inverse_out = np.zeros(K * m_max, dtype=np.int64)
            inverse_out[position] = np.arange(self.out_features)
            arrays = {"params": self._index_params_np, "gather_in": cols.ravel(), "scatter_in": inverse_in,
                      "gather_out": position, "scatter_out": inverse_out}
            return {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.D.device) for k, v in arrays.items()}

        return self._cached("batched_indices", build)

    @property
    def num_stages(self) -> int:
        return int(self.m_sizes.shape[0])

    def reset_parameters(self) -> None:
        """An initialisation with about ``nn.Linear``'s output scale: D like ``nn.Linear``; B, F with unit-norm
        rows on average; transitions A, E scaled to spectral norm 0.7; C, G scaled so that the off-diagonal
        blocks add about the variance dense entries would."""
        bound = 1.0 / math.sqrt(self.in_features)
        shapes = _shapes(self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims)
        with torch.no_grad():
            nn.init.uniform_(self.D, -bound, bound)
            for kind in "BF":
                for view, (r, c) in zip(_views(getattr(self, kind), shapes[kind]), shapes[kind]):
                    nn.init.normal_(view, 0.0, 1.0 / math.sqrt(max(c, 1)))
            for kind in "AE":
                for view, (r, c) in zip(_views(getattr(self, kind), shapes[kind]), shapes[kind]):
                    if view.numel():
                        nn.init.orthogonal_(view, gain=_INIT_TRANSITION_NORM)
            for kind, dims in (("C", self.causal_dims), ("G", self.anticausal_dims)):
                scale = math.sqrt((1 - _INIT_TRANSITION_NORM ** 2) / (6 * max(int(dims.max()), 1) * 3))
                nn.init.normal_(getattr(self, kind), 0.0, scale)
        self.reset_bias()

    def _padded_generators(self, differentiable: bool) -> dict[str, torch.Tensor]:
        """The zero-padded stacked generators, from one scatter of the concatenated flat parameters: through
        autograd for training, else cached until a parameter changes."""
        params = [getattr(self, kind) for kind in GENERATORS]
        index = self._batched_indices()["params"]

        def build():
            flat = torch.cat(params)
            if differentiable:
                buffer = _Scatter.apply(flat, index, self._buffer_size)
            else:
                buffer = flat.new_zeros(self._buffer_size).scatter_(0, index, flat)
            K = self.num_stages
            parts = buffer.split([K * r * c for _, r, c in self._blocks.values()])
            return {name: part.view(K, r, c) for (name, (_, r, c)), part in zip(self._blocks.items(), parts)}

        return build() if differentiable else self._cached("padded_generators", build, params)

    def _batched_product(self, x: torch.Tensor, differentiable: bool) -> torch.Tensor:
        """The batched path on features × batch (``xᵀ``), so every stage block is a contiguous (rows, b) slab."""
        K, b = self.num_stages, x.shape[0]
        m_max, n_max, d_max, e_max = self._sizes
        P = self._padded_generators(differentiable)
        index = self._batched_indices()
        if differentiable:
            U = _RowGather.apply(x.T.contiguous(), index["gather_in"], index["scatter_in"])
        else:
            U = x.T.contiguous().index_select(0, index["gather_in"])  # a row gather: 3x faster than on the view
        # (K, m_max + d_max + e_max, b): D_k u_k, B_k u_k and F_k u_k for every stage at once
        Y, BU, FU = torch.bmm(P["P_in"], U.view(K, n_max, b)).split([m_max, d_max, e_max], dim=1)
        if K > 1 and d_max:  # s_0 = 0, s_{k+1} = A_k s_k + B_k u_k; y_k += C_k s_k
            A, BU = P["A"].unbind(0), BU.unbind(0)
            states = [BU[0].new_zeros(d_max, b)]
            for k in range(K - 1):
                states.append(torch.addmm(BU[k], A[k], states[k]))
            Y = torch.baddbmm(Y, P["C"], torch.stack(states))
        if K > 1 and e_max:  # z_{K-1} = 0, z_{k-1} = E_k z_k + F_k u_k; y_k += G_k z_k
            E, FU = P["E"].unbind(0), FU.unbind(0)
            states = [FU[0].new_zeros(e_max, b)]
            for k in range(K - 1, 0, -1):
                states.append(torch.addmm(FU[k], E[k], states[-1]))
            Y = torch.baddbmm(Y, P["G"], torch.stack(states[::-1]))
        Y = Y.reshape(K * m_max, b)
        if differentiable:
            return _RowGather.apply(Y, index["gather_out"], index["scatter_out"]).T
        return Y.index_select(0, index["gather_out"]).T

    def _train_product(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_factor > PADDING_LIMIT:
            return self._weight_product(x)
        return self._batched_product(x, differentiable=True)

    def _fast_product(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > FAST_SWEEP_MAX_BATCH:
            if self.padding_factor > PADDING_LIMIT:
                return self._weight_product(x).contiguous()
            return self._batched_product(x, differentiable=False).contiguous()
        y = x.new_empty((x.shape[0], self.out_features))
        sss_rows(self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims, self._offsets,
                 *self._sweep_arrays(), x.numpy(), y.numpy(), *self._scratch(x.dtype))
        return y

    def _sweep_arrays(self) -> list[np.ndarray]:
        """NumPy views of the flat generators (the parameters' memory) and the two permutations for the sweep."""
        def build():
            views = [getattr(self, kind).detach().numpy() for kind in GENERATORS]
            cols = np.arange(self.in_features, dtype=np.int32) if self._buffers.get("col_order") is None else self._buffers.get("col_order").numpy()
            rows = self.row_order
            rows = np.arange(self.out_features, dtype=np.int32) if rows is None else rows.astype(np.int32)
            return views + [cols, rows]

        return self._cached("sweep_arrays", build)  # views of the parameters' memory

    def _scratch(self, dtype) -> tuple[np.ndarray, ...]:
        def build():
            width = max(int(self.causal_dims.max()), int(self.anticausal_dims.max()), 1)
            np_dtype = np.float32 if dtype == torch.float32 else np.float64
            return np.empty(self.in_features, np_dtype), np.zeros(width, np_dtype), np.zeros(width, np_dtype)

        return self._cached(f"scratch_{dtype}", build)

    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        """The plain path: the stages one after another on slices of the flat parameters (no padding)."""
        u = x if self._buffers.get("col_order") is None else x.index_select(1, self._buffers.get("col_order").to(torch.int32))
        K = len(self._stages)

        def block(kind, k, rows, cols):  # generator ``kind`` of stage k as a (rows, cols) view of its flat array
            row = "ABCDEFG".index(kind) + 2
            start, stop = self._stages[k][6 + row], self._stages[k][15 + row]
            return getattr(self, kind)[start:stop].view(rows, cols)

        inputs = [u[:, st[7]:st[16]] for st in self._stages]
        outputs, state = [], None
        for k, (m, n, d0, d1, e0, e1) in enumerate(st[:6] for st in self._stages):
            # causal sweep: y_k = C_k s + D_k u_k, s <- A_k s + B_k u_k
            y = inputs[k] @ block("D", k, m, n).T
            if d0:
                y = y + state @ block("C", k, m, d0).T
            if d1:
                nxt = inputs[k] @ block("B", k, d1, n).T
                state = nxt + state @ block("A", k, d1, d0).T if d0 else nxt
            outputs.append(y)
        state = None
        for k in range(K - 1, -1, -1):  # anticausal sweep: y_k += G_k z, z <- E_k z + F_k u_k
            m, n, _, _, e0, e1 = self._stages[k][:6]
            if e1:
                outputs[k] = outputs[k] + state @ block("G", k, m, e1).T
            if e0:
                nxt = inputs[k] @ block("F", k, e0, n).T
                state = nxt + state @ block("E", k, e0, e1).T if e1 else nxt
        y = torch.cat(outputs, dim=1) if K > 1 else outputs[0]
        return y if self._buffers.get("inverse_row_order") is None else y.index_select(1, self._buffers.get("inverse_row_order").to(torch.int32))

    def to_matrix(self, dtype=np.float64) -> SSS:
        flats = {kind: getattr(self, kind).detach().cpu().double().numpy().astype(dtype, copy=False)
                 for kind in GENERATORS}
        col_order = None if self._buffers.get("col_order") is None else self._buffers.get("col_order").cpu().numpy().astype(np.int64)
        return SSS.from_flat(self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims, **flats,
                             row_order=self.row_order, col_order=col_order)

    @classmethod
    def _build_from_matrix(cls, M: SSS, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, stage_sizes=(M.m_sizes, M.n_sizes), causal_dims=M.causal_dims,
                    anticausal_dims=M.anticausal_dims, row_order=M.row_order, col_order=M.col_order,
                    device=device, dtype=dtype)
        with torch.no_grad():
            for kind in GENERATORS:
                getattr(layer, kind).copy_(torch.from_numpy(M.flat(kind).copy()))
        return layer

    def _structure_repr(self) -> str:
        return (f"num_stages={self.num_stages}, max_causal_dim={int(self.causal_dims.max())}, "
                f"max_anticausal_dim={int(self.anticausal_dims.max())}"
                + (", permuted" if self._buffers.get("inverse_row_order") is not None or self._buffers.get("col_order") is not None else ""))


def _proportional(total: int, num_stages: int) -> np.ndarray:
    return stage_sizes(total, num_stages)


def _views(flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    out, start = [], 0
    for r, c in shapes:
        out.append(flat[start:start + r * c].view(r, c))
        start += r * c
    return out
