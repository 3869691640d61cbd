"""``LDRLinear``: a linear layer whose weight is an LDR matrix with learned tridiagonal-plus-corner operators.

Two forward paths, both through autograd functions over the Numba kernels (:mod:`structmat.layers._ldr_functions`),
neither forming an operator power:

* ``"krylov"`` (matrix-free): ``y = Σ_k A^k G Hᵀ (Bᵀ)^k x`` for the batch, ``(10 + 4r) N²`` flops per row;
* ``"dense"``: form ``W = Σ_j K(A, g_j) K(B, h_j)ᵀ`` once per forward (``2 r N³`` flops), then ``x Wᵀ``
  (``2 N²`` per row).

``path="auto"`` (the default) takes ``"dense"`` when that is cheaper: by flops once the batch exceeds ``N / 2``
rows, but the matrix-free path runs at a small fraction of GEMM speed (measured: forming W costs as much as about
15 rows at 1000×1280, r = 8), so the switch uses the flop counts weighted by ``KRYLOV_FLOP_PENALTY``. Either way this family saves parameters, not time: its layers are
slower than ``nn.Linear`` (implementation note ldr-sparse-monarch.md §2.2). Fitted matrices are float64; the layer
stores ``dtype`` (float32 by default); bfloat16 and float16 layers compute in float32 and return their dtype.

Exports (``torch.export``, ``torch.jit.trace``, ONNX) cannot call Numba, so while tracing the layer forms the
weight with torch operations by Horner's rule ``S ← A S Bᵀ + G Hᵀ``, N steps, each two applications of a
tridiagonal operator (two shifts, three products and two sums) to an N × N block: N² memory, about 16 N graph nodes
(N = max(in, out)) and ``O(N³)`` work. The exported graph stores only ``A``, ``B``, ``G``, ``H`` and the bias but
forms the N × N weight when run (ONNX Runtime folds it once, when it loads the model, since it depends on constants
only); at N = 1280 the graph has about 20,000 nodes and the export takes minutes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers._ldr_functions import ldr_dense, ldr_product
from structmat.layers.base import FAST_DTYPES, StructuredLinear, check_structure_size, is_tracing
from structmat.matrices.ldr import LDR, shift_operator

__all__ = ["LDRLinear"]

_PATHS = ("auto", "krylov", "dense")
#: Measured cost of a matrix-free flop over a GEMM flop of the formed-W path (sequential Numba recurrences on a few
#: columns against one large GEMM): 1000x1280, r = 8, one thread, forward+backward: matrix-free 0.27 s at batch 1
#: and 5.7 s at 32, forming W 3.0-3.6 s at any batch, i.e. about 40 (20 here, leaning to the matrix-free path).
KRYLOV_FLOP_PENALTY = 20
#: Numbers held by the Krylov block of one chunk of the batch on the matrix-free path (N · N · chunk).
_CHUNK_ELEMENTS = 1 << 23


class LDRLinear(StructuredLinear):
    """A linear layer with weight ``[Σ_j K(A, g_j) K(B, h_j)ᵀ][:out, :in]`` (see :class:`~structmat.matrices.LDR`).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rank : int
        r; ``G``, ``H`` have shape ``(N, rank)`` and ``A``, ``B`` shape ``(3, N)``, ``N = max(in, out)``.
    path : {"auto", "krylov", "dense"}
        How the forward computes (module docstring).

    Notes
    -----
    ``nparams = 2 · rank · N + 6 N``.
    """

    family = "ldr"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int, path: str = "auto",
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_structure_size(check_positive_int(rank, "rank"), "rank", max(in_features, out_features),
                                    "the displacement rank of an N x N matrix, N = max(in_features, out_features)")
        if path not in _PATHS:
            raise ValueError(f"path must be one of {_PATHS}; got {path!r}")
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"LDRLinear runs on the CPU (Numba kernels); got device {device!r}")
        self.path = path
        size = max(in_features, out_features)
        self.A = nn.Parameter(torch.empty(3, size, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.empty(3, size, device=device, dtype=dtype))
        self.G = nn.Parameter(torch.empty(size, rank, device=device, dtype=dtype))
        self.H = nn.Parameter(torch.empty(size, rank, device=device, dtype=dtype))
        self.reset_parameters()

    @property
    def rank(self) -> int:
        return self.G.shape[1]

    @property
    def size(self) -> int:
        return self.G.shape[0]

    def reset_parameters(self) -> None:
        """Operators ``Z_1`` and ``Z_{-1}`` (orthogonal shifts: powers neither explode nor vanish) and uniform
        generators giving entries of W ``nn.Linear``'s variance ``1 / (3 in)``: ``Var g = Var h = (3 in r N)^{-1/2}``."""
        with torch.no_grad():
            self.A.copy_(torch.from_numpy(shift_operator(self.size, 1.0)))
            self.B.copy_(torch.from_numpy(shift_operator(self.size, -1.0)))
        bound = np.sqrt(3.0) * (3.0 * self.in_features * self.rank * self.size) ** -0.25
        nn.init.uniform_(self.G, -bound, bound)
        nn.init.uniform_(self.H, -bound, bound)
        self.reset_bias()

    def chosen_path(self, batch: int) -> str:
        """The path the forward takes for a batch of ``batch`` rows: ``"dense"`` once the matrix-free flops
        ``batch (10 + 4r) N²``, weighted by ``KRYLOV_FLOP_PENALTY``, exceed the ``2 r N³`` of forming W."""
        if self.path != "auto":
            return self.path
        krylov = KRYLOV_FLOP_PENALTY * batch * (10 + 4 * self.rank) * self.size**2
        return "dense" if krylov > 2 * self.rank * self.size**3 else "krylov"

    def dense_weight(self) -> torch.Tensor:
        return ldr_dense(self.A, self.G, self.B, self.H)[: self.out_features, : self.in_features]

    def _train_product(self, x):
        if x.dtype not in FAST_DTYPES:  # the Numba kernels run float32/float64
            A, G, B, H = (p.float() for p in (self.A, self.G, self.B, self.H))
            return self._numba_product(x.float(), A, G, B, H).to(x.dtype)
        return self._numba_product(x, self.A, self.G, self.B, self.H)

    def _fast_product(self, x):
        return self._numba_product(x, self.A, self.G, self.B, self.H).contiguous()

    def _numba_product(self, x, A, G, B, H):
        if self.chosen_path(x.shape[0]) == "dense":
            return x @ ldr_dense(A, G, B, H)[: self.out_features, : self.in_features].T
        N = self.size
        X = nn.functional.pad(x, (0, N - x.shape[1])).T
        step = max(1, _CHUNK_ELEMENTS // (N * N))
        columns = [ldr_product(A, G, B, H, X[:, s:s + step].contiguous()) for s in range(0, X.shape[1], step)]
        return torch.cat(columns, dim=1)[: self.out_features].T

    def _weight_product(self, x):
        """Plain torch operations while tracing (module docstring); otherwise the Numba paths in float32/64."""
        if not is_tracing():
            with torch.no_grad():
                return self._train_product(x)
        W = _horner_weight(self.A, self.G, self.B, self.H, max(self.in_features, self.out_features))
        return x @ W[: self.out_features, : self.in_features].T

    def to_matrix(self, dtype=np.float64) -> LDR:
        arrays = [p.detach().cpu().double().numpy().astype(dtype) for p in (self.A, self.B, self.G, self.H)]
        return LDR(*arrays, shape=(self.out_features, self.in_features))

    @classmethod
    def _build_from_matrix(cls, M: LDR, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, rank=M.rank, device=device, dtype=dtype)
        with torch.no_grad():
            for name in "ABGH":
                getattr(layer, name).copy_(torch.from_numpy(np.array(getattr(M, name))))
        return layer

    def _structure_repr(self) -> str:
        return f"rank={self.rank}, path={self.path!r}"


def _apply_operator(op: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``A X`` for a periodic tridiagonal operator (3, N) and X (N, s): ``(A x)_i = a_0i x_{i-1} + a_1i x_i +
    a_2i x_{i+1}``, indices mod N, with two shifts."""
    return op[0, :, None] * X.roll(1, 0) + op[1, :, None] * X + op[2, :, None] * X.roll(-1, 0)


def _horner_weight(A: torch.Tensor, G: torch.Tensor, B: torch.Tensor, H: torch.Tensor, N: int) -> torch.Tensor:
    """``Σ_{k<N} A^k G Hᵀ (Bᵀ)^k`` by Horner's rule ``S ← A S Bᵀ + G Hᵀ`` (N steps), in torch operations; ``N`` is a
    Python int (a traced shape would be a tensor)."""
    C = G @ H.T
    S = C
    for _ in range(N - 1):
        S = _apply_operator(B, _apply_operator(A, S).T).T + C
    return S
