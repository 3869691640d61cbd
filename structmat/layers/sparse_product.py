"""``SparseProductLinear``: ``y = x (S_1 ⋯ S_J)ᵀ + b`` with each factor's values a dense parameter vector.

Each factor keeps its CSR indices in two int32 buffers, ``crow_j`` (rows + 1) and ``col_j`` (nnz), fixed, and its
values in an ``nn.Parameter`` of shape ``(nnz,)``, so every optimiser (Adam included) updates it like any dense
tensor; the state dict holds exactly the ``nbytes`` the matrix counts. The factors apply right to left and the
dense weight is never formed:

* training (float32/float64): custom autograd functions whose backward is ``∂x = ∂y S`` (the transposed
  structure is derived once and cached, not stored) and ``∂values = ∂yᵀ x`` sampled on the support. In float32 on
  the CPU from :data:`PANEL_MIN_BATCH` rows, the compiled panel kernel below computes the product and ``∂x``, and
  the values' gradient is a dense product and a gather where at least :data:`DENSE_GRADIENT_FILL` of the entries
  are stored (a distillation step of MiniLM with half its weights sparse: 2.1 times faster than with torch's CSR
  products); otherwise ``torch.sparse_csr_tensor`` products and ``torch.sparse.sampled_addmm``;
* inference on the CPU: compiled kernels on the parameters' memory (:mod:`structmat.layers.native`, float32, built
  with the system C compiler at first use) where they beat torch's CSR kernels, else those (MKL; int32 indices, no
  copies of the values), the whole layer described once to C (:class:`~structmat.layers.native.SparseLayerPlan`) so
  that a forward pass is one call that also adds the bias (and a subclass's low-rank part at small batches). From
  :data:`PANEL_MIN_BATCH` input rows on, a panel kernel (64 input rows transposed into a cache-resident scratch,
  four vector multiply-adds per stored value, no gathers); up to :data:`ROWS_MAX_BATCH` rows, a row kernel: with
  AVX-512 and at least :data:`CHUNK_MIN_FILL` values per chunk, chunks of up to 16 values within 64 columns, each two
  two-source permutes of four vector loads of the input, a blend and one FMA against its zero-padded values (a
  derived copy, rebuilt after an optimiser step: about 1.5 times the values' bytes at a quarter density); else runs
  of 8 values against vectors of the inputs they name (16-bit column indices, a derived copy); in between, torch's
  CSR product. Scratch is per call (no state shared between threads);
* the plain path (exports, bfloat16/float16, other devices): a gather of the input columns, a multiplication by
  the values and a scatter-add into the output rows, whose row of each value is rebuilt from ``crow`` in the graph.

Column indices stay int32 although a dimension below 2**15 would fit int16: the CSR kernels take int32 or int64.
``SparseLinear`` is the one-factor case (the ``"sparse"`` family).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers import native
from structmat.layers.base import FAST_DTYPES, StructuredLinear, check_structure_size, is_tracing
from structmat.matrices.sparse_product import Sparse, SparseProduct

__all__ = ["SparseProductLinear", "SparseLinear", "PANEL_MIN_BATCH", "ROWS_MAX_BATCH", "CHUNK_MIN_FILL",
           "DENSE_GRADIENT_FILL"]

#: Input rows from which the fast path runs the compiled panel kernel. Measured with one thread on the 1000×1280
#: classifier at a quarter of its weights: at 32 rows 0.48–0.55 of ``nn.Linear``'s time against 0.58–0.63 for torch's
#: CSR product, at 16 rows 0.97–1.0 against 0.66–0.67; at 256 rows 0.34 against 1.1.
PANEL_MIN_BATCH = 32
#: Input rows up to which the fast path runs a compiled row kernel (one pass over the matrix per row). Measured as
#: above: at one row 0.76 of ``nn.Linear``'s time against 3.1 for torch's CSR product, at two rows 0.70 against
#: 1.29, at three 0.73 against 1.35, at four 0.81 against 0.82, at six 0.81 against 0.62.
ROWS_MAX_BATCH = 3
#: Mean stored values per chunk (16 values within 64 columns) from which a factor runs the AVX-512 chunk kernel rather
#: than the CSR row kernel. Per row: about 1.05 ns per chunk against 0.15–0.18 ns per stored value (formats.c in
#: docs/benchmarks/sparse-gemv/), so the two meet near 6–7 values per chunk (a quarter of a 1000×1280 matrix: 14 per
#: chunk, 23 against 49 µs; a fifth: 12 per chunk, 23 against 41 µs; 7 %: 5 per chunk, 20 against 16 µs). The C
#: runner's sparse kernels use the same threshold (``SM_CHUNK_MIN_FILL`` in ``native/sparse_rows.h``).
CHUNK_MIN_FILL = 6.5
#: Stored share of a factor's entries from which training takes the values' gradient from a dense product ``∂yᵀ x``
#: and a gather rather than torch's sampled product. Measured with one thread, 384×1536 and 1536×384 factors at
#: 1,000 rows: at 0.5, 24 ms against 32–50 ms; at 0.3, 23–24 against 21–26; at 0.15, 23 against 9–26.
DENSE_GRADIENT_FILL = 0.3


def _csr(crow, col, values, shape):
    with warnings.catch_warnings():  # torch flags CSR tensors as beta on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class _CSRProduct(torch.autograd.Function):
    """``S @ X`` for a CSR factor with trainable values; ``X`` of shape (cols, batch)."""

    @staticmethod
    def forward(ctx, values, X, crow, col, crow_t, col_t, order_t, shape):
        ctx.save_for_backward(values, X, crow, col, crow_t, col_t, order_t)
        ctx.shape = shape
        return _csr(crow, col, values, shape) @ X

    @staticmethod
    def backward(ctx, grad):
        values, X, crow, col, crow_t, col_t, order_t = ctx.saved_tensors
        rows, cols = ctx.shape
        grad_values = grad_X = None
        grad = grad.contiguous()
        if ctx.needs_input_grad[1]:
            grad_X = _csr(crow_t, col_t, values[order_t], (cols, rows)) @ grad
        if ctx.needs_input_grad[0]:
            if values.numel() == 0:
                grad_values = torch.zeros_like(values)
            else:
                pattern = _csr(crow, col, torch.zeros_like(values), (rows, cols))
                grad_values = torch.sparse.sampled_addmm(pattern, grad, X.T.contiguous(), beta=0.0).values()
        return grad_values, grad_X, None, None, None, None, None, None


class _PanelProduct(torch.autograd.Function):
    """``x Sᵀ`` for a CSR factor with trainable values; ``x`` of shape (batch, cols), float32 on the CPU, by the
    compiled panel kernel (:func:`structmat.layers.native.csr_panels`). Backward: ``∂x = ∂y S`` by the same kernel on
    the transpose's structure with the values permuted; ``∂values`` is ``∂yᵀ x`` sampled on the support, from a dense
    product and a gather when at least :data:`DENSE_GRADIENT_FILL` of the entries are stored, else from
    ``torch.sparse.sampled_addmm``."""

    @staticmethod
    def forward(ctx, values, x, crow, col, crow_t, col_t, order_t, row_of_value, col_of_value, shape, library):
        rows, cols = shape
        y = x.new_empty((x.shape[0], rows))
        native.csr_panels(library, crow, col, values.detach(), cols, x, y,
                          native.aligned_scratch(native.PANEL_ROWS * (rows + cols)))
        ctx.save_for_backward(values, x, crow, col, crow_t, col_t, order_t, row_of_value, col_of_value)
        ctx.shape, ctx.library = shape, library
        return y

    @staticmethod
    def backward(ctx, grad):
        values, x, crow, col, crow_t, col_t, order_t, row_of_value, col_of_value = ctx.saved_tensors
        rows, cols = ctx.shape
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = grad.new_empty((grad.shape[0], cols))
            native.csr_panels(ctx.library, crow_t, col_t, values.detach()[order_t].contiguous(), rows, grad, grad_x,
                              native.aligned_scratch(native.PANEL_ROWS * (rows + cols)))
        if ctx.needs_input_grad[0]:
            if values.numel() == 0:
                grad_values = torch.zeros_like(values)
            elif values.numel() >= DENSE_GRADIENT_FILL * rows * cols:
                grad_values = (grad.T @ x)[row_of_value, col_of_value]
            else:
                pattern = _csr(crow, col, torch.zeros_like(values), (rows, cols))
                grad_values = torch.sparse.sampled_addmm(pattern, grad.T.contiguous(), x, beta=0.0).values()
        return grad_values, grad_x, None, None, None, None, None, None, None, None, None


def _transpose_structure(crow: np.ndarray, col: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR structure of ``Sᵀ`` and the order taking ``S``'s values to ``Sᵀ``'s (int32)."""
    rows, cols = shape
    row = np.repeat(np.arange(rows, dtype=np.int32), np.diff(crow))
    order = np.lexsort((row, col))
    crow_t = np.zeros(cols + 1, dtype=np.int32)
    np.cumsum(np.bincount(col, minlength=cols), out=crow_t[1:])
    return crow_t, row[order], order.astype(np.int32)


def _row_of_each_value(crow: torch.Tensor, nnz: int) -> torch.Tensor:
    """The row of every stored value (int64, nnz), from the CSR row pointers with torch operations only: a mark
    where each row after the first starts (empty rows mark the same place twice), then a running sum."""
    marks = torch.zeros(nnz + 1, dtype=torch.int64, device=crow.device)
    starts = crow[1:-1].to(torch.int64)
    marks = marks.index_add(0, starts, torch.ones_like(starts))
    return marks.cumsum(0)[:nnz]


def _ell_product(Z: torch.Tensor, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                 width: int) -> torch.Tensor:
    """``Z Sᵀ`` with S's rows padded to ``width`` entries (ELLPACK) in the graph: position ``crow[i] + k`` of row
    i, or a zero appended after the values where the row is shorter."""
    rows, nnz = crow.shape[0] - 1, col.shape[0]
    start = crow[:-1].to(torch.int64).unsqueeze(1)
    position = start + torch.arange(width, dtype=torch.int64, device=crow.device).unsqueeze(0)  # (rows, width)
    position = torch.where(position < crow[1:].to(torch.int64).unsqueeze(1), position, torch.full_like(position, nnz))
    padded_values = torch.cat([values, values.new_zeros(1)])[position]  # (rows, width)
    padded_cols = torch.cat([col.to(torch.int64), col.new_zeros(1, dtype=torch.int64)])[position]
    gathered = Z.index_select(1, padded_cols.reshape(-1)).reshape(Z.shape[0], rows, width)
    return (gathered * padded_values).sum(dim=-1)


def _random_support(shape, nnz: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A CSR structure with ``nnz`` entries: one per row and per column first (no dead rows), the rest uniform."""
    rows, cols = shape
    nnz = min(max(nnz, max(rows, cols)), rows * cols)
    mask = np.zeros(shape, dtype=bool)
    k = np.arange(max(rows, cols))
    mask[k % rows, rng.permutation(max(rows, cols)) % cols] = True
    free = np.flatnonzero(~mask.ravel())
    extra = nnz - int(mask.sum())
    if extra > 0:
        mask.ravel()[rng.choice(free, extra, replace=False)] = True
    r, c = np.nonzero(mask)
    crow = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=rows), out=crow[1:])
    return crow, c.astype(np.int64)


class _FastFactor:
    """One factor as the fast path uses it: ``values`` a view of the parameter's memory, ``short_columns`` the column
    indices as uint16 NumPy for the row kernels (a derived copy; None beyond 65536 columns), and :meth:`chunks`,
    the AVX-512 row kernel's padded layout, rebuilt when the parameter's version changes (an optimiser step)."""

    __slots__ = ("j", "rows", "cols", "crow", "col", "param", "values", "short_columns", "_chunks", "_key")

    def __init__(self, j, rows, cols, crow, col, param):
        self.j, self.rows, self.cols, self.crow, self.col, self.param = j, rows, cols, crow, col, param
        self.values = param.detach()
        self.short_columns = col.cpu().numpy().astype(np.uint16) if cols <= 1 << 16 else None
        self._chunks, self._key = None, None

    def chunks(self, library):
        key = (self.param._version, self.param.data_ptr())
        if key != self._key:
            self._chunks = native.chunk_plan(library, self.crow, self.col, self.param.detach(), self.cols,
                                             CHUNK_MIN_FILL)
            self._key = key
        return self._chunks


class SparseProductLinear(StructuredLinear):
    """A linear layer whose weight is a product of sparse factors ``S_1 ⋯ S_J`` with fixed supports.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    num_factors : int
        ``J`` for a fresh layer (from a matrix, the matrix's factors are used).
    share : float in (0, 1]
        For a fresh layer: total non-zeros ``≈ share · in_features · out_features``, split evenly across the
        factors; inner dimensions are ``min(in_features, out_features)``. Supports are random (``seed``) with at
        least one entry per row and column; values are uniform with the product's entries at ``nn.Linear``'s
        variance ``1 / (3 in_features)``.
    seed : int
        Seeds the random supports of a fresh layer.

    Notes
    -----
    ``nparams = Σ_j nnz(S_j)``: the value vectors ``values.0 … values.{J-1}`` are the only weight parameters; the
    CSR index buffers are fixed. A forward pass costs ``nparams`` multiply-adds per input row.
    """

    family = "sparse_product"
    _matrix_class = SparseProduct

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, num_factors: int = 2,
                 share: float = 0.25, seed: int = 0, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        num_factors = check_positive_int(num_factors, "num_factors")
        if isinstance(share, bool) or not (isinstance(share, (int, float)) and 0 < share <= 1):
            raise ValueError(f"share must be a float in (0, 1]; got {share!r}")
        widest = max(in_features, out_features)
        check_structure_size(num_factors, "num_factors", max(1, math.floor(share * in_features * out_features / widest)),
                             f"each factor keeps at least max(in_features, out_features) = {widest} values and all "
                             f"of them share * in_features * out_features")
        rng = np.random.default_rng(seed)
        d = min(in_features, out_features)
        dims = [out_features] + [d] * (num_factors - 1) + [in_features]
        per_factor = max(1, math.floor(share * in_features * out_features / num_factors))
        structure = [(*_random_support((dims[j], dims[j + 1]), per_factor, rng), (dims[j], dims[j + 1]))
                     for j in range(num_factors)]
        self._set_structure(structure, device, dtype)
        self.reset_parameters(seed)

    def _set_structure(self, structure, device, dtype) -> None:
        """Register int32 index buffers and value parameters for CSR ``(crow, col, shape)`` factors."""
        self.factor_shapes = [tuple(int(s) for s in shape) for _, _, shape in structure]
        values = []
        for j, (crow, col, shape) in enumerate(structure):
            if max(int(np.max(crow, initial=0)), shape[1]) > np.iinfo(np.int32).max:
                raise ValueError(f"factor {j} of shape {tuple(shape)} is too large for int32 CSR indices")
            for name, array in (("crow", crow), ("col", col)):
                self.register_buffer(f"{name}_{j}", torch.tensor(np.asarray(array, dtype=np.int32), device=device))
            values.append(nn.Parameter(torch.zeros(len(col), device=device, dtype=dtype)))
        self.values = nn.ParameterList(values)
        self._row_widths = [int(np.diff(np.asarray(crow)).max(initial=0)) for crow, _, _ in structure]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Read state dicts written before the transposed structures were derived (int64, with ``crow_t_j``,
        ``col_t_j`` and ``order_t_j``): the derived entries are dropped and the indices cast to int32."""
        for j in range(self.num_factors):
            for name in ("crow_t", "col_t", "order_t"):
                state_dict.pop(f"{prefix}{name}_{j}", None)
            for name in ("crow", "col"):
                key = f"{prefix}{name}_{j}"
                if key in state_dict and state_dict[key].dtype == torch.int64:
                    state_dict[key] = state_dict[key].to(torch.int32)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._row_widths = [int(torch.diff(self._factor(j)[0]).max()) if self.factor_shapes[j][0] else 0
                            for j in range(self.num_factors)]

    @property
    def num_factors(self) -> int:
        return len(self.factor_shapes)

    def reset_parameters(self, seed: int = 0) -> None:
        """Uniform values with ``Var(entry of the product) = 1 / (3 in_features)``, like ``nn.Linear``."""
        generator = torch.Generator().manual_seed(seed)
        J = self.num_factors
        for j, (rows, _) in enumerate(self.factor_shapes):
            per_row = max(self.values[j].numel() / rows, 1e-12)
            variance = (1.0 / 3.0) ** (1.0 / J) / per_row  # Var(S_j z)_i = per_row · variance · Var(z)
            bound = math.sqrt(3.0 * variance)
            with torch.no_grad():
                sample = torch.empty(self.values[j].shape, dtype=torch.float64).uniform_(-bound, bound,
                                                                                          generator=generator)
                self.values[j].copy_(sample.to(self.values[j].dtype))
        self.reset_bias()

    def _factor(self, j: int):
        return getattr(self, f"crow_{j}"), getattr(self, f"col_{j}")

    def _transposed(self, j: int):
        """``(crow_t, col_t, order_t)`` of factor j's transpose: derived when the training path first needs it."""
        crow, col = self._factor(j)

        def build():
            arrays = _transpose_structure(crow.cpu().numpy(), col.cpu().numpy(), self.factor_shapes[j])
            return tuple(torch.from_numpy(a).to(crow.device) for a in arrays)

        return self._cached(f"transposed_{j}", build)

    def _gather_indices(self, j: int):
        """``(order_t, row, col)`` as int64 for the panel training path: the order taking factor j's values to its
        transpose's, and each value's row and column."""
        def build():
            crow, col = self._factor(j)
            order_t = self._transposed(j)[2]
            return order_t.long(), _row_of_each_value(crow, col.shape[0]), col.long()

        return self._cached(f"gather_{j}", build)

    def _weight_product(self, x):
        """The plain path, per factor. While tracing (exports): the rows padded to the longest one in the graph
        (ELLPACK: a gather of the input columns, a product by the values, a sum over each row), which ONNX Runtime
        runs far faster than a scatter-add; the padded index and values are computed from ``crow``, ``col`` and
        the values in the graph, so the file stores only those. Otherwise: gather, product and a scatter-add into
        the rows, without the padding's memory."""
        Z = x
        for j in range(self.num_factors - 1, -1, -1):
            crow, col = self._factor(j)
            rows, nnz = self.factor_shapes[j][0], col.shape[0]
            if is_tracing():
                Z = _ell_product(Z, crow, col, self.values[j], self._row_widths[j])
            else:
                products = Z.index_select(1, col) * self.values[j]
                Z = Z.new_zeros((Z.shape[0], rows)).index_add(1, _row_of_each_value(crow, nnz), products)
        return Z

    def _train_product(self, x):
        if x.dtype not in FAST_DTYPES:  # torch's CSR kernels have no bfloat16/float16 versions
            return self._weight_product(x)
        library = (native.sparse_library() if x.dtype == torch.float32 and x.is_cpu and x.shape[0] >= PANEL_MIN_BATCH
                   else None)
        if library is not None:
            Z = x.contiguous()
            for j in range(self.num_factors - 1, -1, -1):
                crow, col = self._factor(j)
                crow_t, col_t, _ = self._transposed(j)
                Z = _PanelProduct.apply(self.values[j], Z, crow, col, crow_t, col_t, *self._gather_indices(j),
                                        self.factor_shapes[j], library)
            return Z
        Z = x.T
        for j in range(self.num_factors - 1, -1, -1):
            crow, col = self._factor(j)
            Z = _CSRProduct.apply(self.values[j], Z.contiguous(), crow, col, *self._transposed(j),
                                  self.factor_shapes[j])
        return Z.T

    def _fast_forward(self, x):
        """One compiled call (the factors, the low-rank part of a subclass and the bias) up to
        :data:`ROWS_MAX_BATCH` rows; the panel kernel and the bias in one call from :data:`PANEL_MIN_BATCH` rows on
        (a low-rank part added by a matrix product); else torch's CSR product."""
        batch = x.shape[0]
        rows = batch <= ROWS_MAX_BATCH
        if x.dtype == torch.float32 and (rows or batch >= PANEL_MIN_BATCH):
            plan = self._native_plan()
            if plan is not None and (plan.rows_available or not rows):
                y = torch.empty((batch, self.out_features), dtype=x.dtype)
                if rows:
                    plan.rows(x, y)
                    return y
                plan.panels(x, y)
                lowrank = self._lowrank_parameters()
                if lowrank is not None:
                    y.addmm_(x @ lowrank[1], lowrank[0].T)
                return y
        return super()._fast_forward(x)

    def _fast_product(self, x):
        """torch's CSR product, factor by factor (float64, batches between the compiled kernels' ranges, or no
        compiled library)."""
        Z = x
        for f in self._fast_factors():
            S = self._cached(f"csr_{f.j}", lambda: _csr(f.crow, f.col, f.values, (f.rows, f.cols)))
            Z = (S @ Z.T).T.contiguous()
        return Z

    def _lowrank_parameters(self):
        """``(U, V)`` of a low-rank part added to the factors' product, or None (none here)."""
        return None

    def _native_plan(self):
        """The whole layer for the compiled kernels (:class:`~structmat.layers.native.SparseLayerPlan`), rebuilt
        when a parameter changes storage or version (the chunked layouts are derived copies of the values); None
        without a compiled library."""
        library = native.sparse_library()
        if library is None:
            return None
        state = self._cached("native_plan", lambda: [[f.param for f in self._fast_factors()]
                                                     + [p for p in (self.bias, *(self._lowrank_parameters() or ()))
                                                        if p is not None], None])
        key = tuple([(p.data_ptr(), p._version) for p in state[0]])
        built = state[1]
        if built is None or built[0] != key:
            factors = [(f.rows, f.cols, f.crow, f.col, f.short_columns, f.param.detach(),
                        f.chunks(library) if f.short_columns is not None else None) for f in self._fast_factors()]
            lowrank = self._lowrank_parameters()
            U, V = (None, None) if lowrank is None else (lowrank[0].detach(), lowrank[1].detach())
            bias = None if self.bias is None else self.bias.detach()
            built = state[1] = (key, native.SparseLayerPlan(library, (self.out_features, self.in_features), factors,
                                                            bias, U, V))
        return built[1]

    def _fast_factors(self) -> list["_FastFactor"]:
        """The factors in the order they apply, with what the fast path derives from them (cached until the
        module's tensors are moved or replaced)."""
        def build():
            return [_FastFactor(j, *self.factor_shapes[j], *self._factor(j), self.values[j])
                    for j in range(self.num_factors - 1, -1, -1)]

        return self._cached("fast_factors", build)

    def _any_param(self) -> torch.Tensor:  # the forward's dtype check, without walking the parameter list
        return self._cached("any_param", lambda: self.values[0] if len(self.values) else super(
            SparseProductLinear, self)._any_param())

    def to_matrix(self, dtype=np.float64) -> SparseProduct:
        factors = []
        for j, shape in enumerate(self.factor_shapes):
            crow, col = (t.detach().cpu().numpy() for t in self._factor(j))
            data = self.values[j].detach().cpu().double().numpy()
            factors.append((crow, col, data, shape))
        out = self._matrix_class.__new__(self._matrix_class)
        out._init_from_csr(factors, dtype)
        return out

    @classmethod
    def _build_from_matrix(cls, M: SparseProduct, bias, device, dtype):
        layer = cls.__new__(cls)
        StructuredLinear.__init__(layer, M.shape[1], M.shape[0], bias, device=device, dtype=dtype)
        factors = M.csr_factors()
        layer._set_structure([(indptr, indices, shape) for indptr, indices, _, shape in factors], device, dtype)
        with torch.no_grad():
            for j, (_, _, data, _) in enumerate(factors):
                layer.values[j].copy_(torch.from_numpy(np.array(data, dtype=np.float64)))
        return layer

    def _structure_repr(self) -> str:
        return "factors=" + " · ".join(f"{s} nnz {v.numel()}" for s, v in zip(self.factor_shapes, self.values))


class SparseLinear(SparseProductLinear):
    """A linear layer with one sparse factor of fixed support (the ``"sparse"`` family): magnitude pruning with a
    trainable value vector. ``share``: the kept share of the weights for a fresh layer (random support)."""

    family = "sparse"
    _matrix_class = Sparse

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, share: float = 0.25,
                 seed: int = 0, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, num_factors=1, share=share, seed=seed, device=device,
                         dtype=dtype)
