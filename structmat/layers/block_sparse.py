"""``BlockSparseLinear``: ``y = x Mᵀ + b`` with ``M`` block sparse: trainable ``br × bc`` blocks at fixed positions.

The blocks are one parameter of shape ``(nblocks, br, bc)``; their positions are the BSR index buffers ``crow``
(block-row pointers, ``⌈m/br⌉ + 1``) and ``col`` (block-columns, ``nblocks``), int16 when the grid allows, else
int32: the state dict holds what ``nbytes`` counts. The three paths of
:class:`~structmat.layers.base.StructuredLinear`:

* plain (exports, bfloat16/float16): the input's column blocks are gathered, multiplied by the blocks and summed
  into their block-rows with a scatter-add; while tracing, each block-row is padded to the longest one in the graph
  instead (ELLPACK, as the sparse layers export), which ONNX Runtime runs far faster than a scatter-add. The dense
  weight is never formed.
* training: the blocks are placed on the grid with ``index_put`` and the weight multiplied densely. On a CPU this
  beat the gathered products at any batch above one: 1000×1280 with 1×8 blocks at a quarter of the weights, one
  thread, forward and backward took 3 ms against 34 ms at batch 32 (``torch.sparse_bsr_tensor`` runs only square
  blocks, through MKL, and has no gradient for its values).
* inference on the CPU (float32): compiled kernels on the parameters' memory (:mod:`structmat.layers.native`, built
  with the system C compiler at first use), the bias added in the same call. Up to :data:`ROWS_MAX_BATCH` input
  rows, a row kernel: per block and block row, one vector of ``bc`` contiguous inputs times one vector of values
  (for the default 8-column blocks, an 8-lane load and a multiply-add; the C runner's ``kernel_block_sparse.c``);
  from :data:`PANEL_MIN_BATCH` rows on, a panel kernel: 64 input rows transposed into a cache-resident scratch
  (allocated per call), each stored value a multiply-add of a 64-wide scratch row, a block's columns consecutive
  scratch rows, loaded once for up to four block rows, the blocks taken in tiles of 128 columns so that the
  scratch rows they read stay in L1. Float64, or without a compiler: the dense weight, cached until the
  blocks change (torch has no CPU kernel for rectangular blocks; its dense product beats a Numba loop over them).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from structmat.layers import native
from structmat.layers.base import StructuredLinear, compact_index, is_tracing
from structmat.matrices.block_sparse import BlockSparse, _check_block_shape, block_grid

__all__ = ["BlockSparseLinear", "ROWS_MAX_BATCH", "PANEL_MIN_BATCH"]

#: Input rows up to which the fast path runs the compiled row kernel (one pass over the blocks per row). Measured with
#: one thread on the 1000×1280 classifier with 1×8 blocks at a quarter of its weights: about 17 µs per row (0.35 of
#: ``nn.Linear``'s time at one row, 0.57 at 16), where a panel of up to 64 rows takes 350–420 µs.
ROWS_MAX_BATCH = 20
#: Input rows from which the fast path runs the compiled panel kernel (0.41 of ``nn.Linear``'s time at 32 rows, 0.28
#: at 256, measured as above).
PANEL_MIN_BATCH = ROWS_MAX_BATCH + 1


def _block_row_of_each_block(crow: torch.Tensor, nblocks: int) -> torch.Tensor:
    """The block-row of every block (int64, nblocks), from the block-row pointers with torch operations only."""
    marks = torch.zeros(nblocks + 1, dtype=torch.int64, device=crow.device)
    starts = crow[1:-1].to(torch.int64)
    marks = marks.index_add(0, starts, torch.ones_like(starts))
    return marks.cumsum(0)[:nblocks]


class BlockSparseLinear(StructuredLinear):
    """A linear layer whose weight is block sparse with a fixed support of ``br × bc`` blocks.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    block_shape : (int, int)
        ``(br, bc)`` rows and columns of a block (default 1×8).
    share : float in (0, 1]
        For a fresh layer: the share of the block grid that is kept, at random positions (``seed``) with at least
        one block in every block-row.
    seed : int
        Seeds the support and the values of a fresh layer.

    Notes
    -----
    ``nparams = nblocks · br · bc``. Entries of edge blocks that lie past the weight's last row or column are
    stored but never used (their gradient is zero); ``to_matrix`` returns them as zeros.
    """

    family = "block_sparse"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, block_shape=(1, 8),
                 share: float = 0.25, seed: int = 0, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        block_shape = _check_block_shape(block_shape)
        if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0 < share <= 1):
            raise ValueError(f"share must be a float in (0, 1]; got {share!r}")
        mb, nb = block_grid((out_features, in_features), block_shape)
        rng = np.random.default_rng(seed)
        keep = np.zeros((mb, nb), dtype=bool)
        keep[np.arange(mb), rng.integers(0, nb, mb)] = True
        free = np.flatnonzero(~keep.ravel())
        extra = min(max(mb, math.floor(share * mb * nb)) - mb, free.size)
        keep.ravel()[rng.choice(free, extra, replace=False)] = True
        rows, cols = np.nonzero(keep)
        crow = np.zeros(mb + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=mb), out=crow[1:])
        self._set_structure(block_shape, crow, cols, device, dtype)
        self.reset_parameters(seed)

    def _set_structure(self, block_shape, crow, cols, device, dtype) -> None:
        self.block_shape = tuple(int(b) for b in block_shape)
        self.grid_shape = block_grid((self.out_features, self.in_features), self.block_shape)
        mb, nb = self.grid_shape
        crow, cols = np.asarray(crow), np.asarray(cols)
        self.values = nn.Parameter(torch.zeros(len(cols), *self.block_shape, device=device, dtype=dtype))
        self.register_buffer("crow", compact_index(crow, len(cols) + 1, device=device))
        self.register_buffer("col", compact_index(cols, nb, device=device))
        self._row_width = int(np.diff(crow).max(initial=0))  # blocks in the fullest block-row (ELLPACK width)

    @property
    def nblocks(self) -> int:
        return self.values.shape[0]

    def reset_parameters(self, seed: int = 0) -> None:
        """Uniform values with ``Var(y) = Var(x) / 3`` like ``nn.Linear``: ``Var = 1 / (3 p)`` for ``p`` stored
        values per output row on average."""
        generator = torch.Generator().manual_seed(seed)
        per_row = max(self.nblocks * self.block_shape[1] / self.grid_shape[0], 1e-12)
        bound = math.sqrt(1.0 / per_row)
        with torch.no_grad():
            sample = torch.empty(self.values.shape, dtype=torch.float64).uniform_(-bound, bound, generator=generator)
            self.values.copy_(sample.to(self.values.dtype))
        self.reset_bias()

    # ---------------------------------------------------------------- the three paths
    def _column_blocks(self, x):
        """``x`` zero-padded to whole column blocks, as ``(batch, ⌈n/bc⌉, bc)``."""
        nb, bc = self.grid_shape[1], self.block_shape[1]
        return F.pad(x, (0, nb * bc - self.in_features)).reshape(x.shape[0], nb, bc)

    def _weight_product(self, x):
        (mb, _), (br, _) = self.grid_shape, self.block_shape
        blocks = self._column_blocks(x)
        if is_tracing():  # ELLPACK: block-rows padded to the fullest one, computed from crow in the graph
            width = self._row_width
            start = self.crow[:-1].to(torch.int64).unsqueeze(1)
            position = start + torch.arange(width, dtype=torch.int64, device=x.device).unsqueeze(0)
            position = torch.where(position < self.crow[1:].to(torch.int64).unsqueeze(1), position,
                                   torch.full_like(position, self.nblocks))
            values = torch.cat([self.values, self.values.new_zeros((1,) + self.block_shape)])[position]
            cols = torch.cat([self.col.to(torch.int64), self.col.new_zeros(1, dtype=torch.int64)])[position]
            gathered = blocks.index_select(1, cols.reshape(-1)).reshape(x.shape[0], mb, width, -1)
            y = torch.einsum("bkwc,kwrc->bkr", gathered, values)
        else:
            gathered = blocks.index_select(1, self.col.to(torch.int64))              # (batch, nblocks, bc)
            products = torch.einsum("bpc,prc->bpr", gathered, self.values)           # (batch, nblocks, br)
            rows = _block_row_of_each_block(self.crow, self.nblocks)
            y = products.new_zeros((x.shape[0], mb, br)).index_add(1, rows, products)
        return y.reshape(x.shape[0], mb * br)[:, : self.out_features]

    def sparse_weight(self) -> torch.Tensor:
        """The weight as a dense ``(out_features, in_features)`` tensor placed with ``index_put``, through autograd."""
        (mb, nb), (br, bc) = self.grid_shape, self.block_shape
        rows = self._cached("block_rows", lambda: _block_row_of_each_block(self.crow, self.nblocks))
        grid = self.values.new_zeros(mb, nb, br, bc).index_put((rows, self.col.to(torch.int64)), self.values)
        return grid.permute(0, 2, 1, 3).reshape(mb * br, nb * bc)[: self.out_features, : self.in_features]

    def _train_product(self, x):
        return x @ self.sparse_weight().T

    def _fast_product(self, x):
        weight = self._cached("dense_weight", lambda: self.sparse_weight().detach(), sources=[self.values])
        return x @ weight.T

    def _fast_forward(self, x):
        batch = x.shape[0]
        if x.dtype == torch.float32 and (batch <= ROWS_MAX_BATCH or batch >= PANEL_MIN_BATCH):
            plan = self._native_plan()
            if plan is not None:
                y = torch.empty((batch, self.out_features), dtype=x.dtype)
                plan(x, y, panels=batch > ROWS_MAX_BATCH)
                return y
        return super()._fast_forward(x)

    def _native_plan(self):
        """The layer for the compiled kernels (:class:`~structmat.layers.native.BlockSparsePlan`: int32 copies of
        the index buffers, the parameters read in place), cached until the module's tensors are moved or reloaded;
        None without a compiled library."""
        library = native.block_sparse_library()
        if library is None:
            return None
        return self._cached("native_plan", lambda: native.BlockSparsePlan(
            library, (self.out_features, self.in_features), self.block_shape, self.crow.to(torch.int32).contiguous(),
            self.col.to(torch.int32).contiguous(), self.values, self.bias))

    # ---------------------------------------------------------------- matrices
    def to_matrix(self, dtype=np.float64) -> BlockSparse:
        m, n = self.out_features, self.in_features
        (mb, nb), (br, bc) = self.grid_shape, self.block_shape
        crow = self.crow.detach().cpu().numpy().astype(np.int64)
        cols = self.col.detach().cpu().numpy().astype(np.int64)
        rows = np.repeat(np.arange(mb), np.diff(crow))
        values = self.values.detach().cpu().double().numpy().copy()
        values[(rows + 1) * br > m, m - (mb - 1) * br:, :] = 0.0  # unused entries past the edges (see Notes)
        values[(cols + 1) * bc > n, :, n - (nb - 1) * bc:] = 0.0
        return BlockSparse((m, n), crow, cols, values, dtype=dtype)

    @classmethod
    def _build_from_matrix(cls, M: BlockSparse, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        layer._set_structure(M.block_shape, M.indptr, M.indices, device, dtype)
        with torch.no_grad():
            layer.values.copy_(torch.from_numpy(np.array(M.values, dtype=np.float64)))
        return layer

    def _structure_repr(self) -> str:
        return f"block_shape={self.block_shape}, nblocks={self.nblocks}"
