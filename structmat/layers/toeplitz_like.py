"""``ToeplitzLikeLinear``: ``y = x Mᵀ + b`` with ``M = [½ Σ_j Z_1(g_j) Z_{-1}(J h_j)][:out, :in]``, by FFTs.

The forward never forms the dense weight: per row of the batch it costs one forward transform of ``x``, ``r``
inverse transforms (the skew-circulant stage), ``r`` real transforms (the circulant stage) and one inverse,
``O(r N log N)`` against ``out · in`` for ``nn.Linear`` (``N = max(in, out)``). Autograd runs through
``torch.fft``. For even ``N`` the skew-circulant stage uses the half-length complex transform of a real
negacyclic convolution (``a mod (z^N + 1)`` packed as ``a_low + i a_high``, twisted by ``e^{iπk/N}``, FFT of
length N/2), so every transform has length about N/2 complex; odd ``N`` uses the twisted full-length transform.
The batch is processed in chunks so that the ``(chunk, r, N)`` intermediates stay in cache. See
:mod:`structmat.matrices.toeplitz_like` for the structure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers.base import StructuredLinear
from structmat.matrices.toeplitz_like import ToeplitzLike

__all__ = ["ToeplitzLikeLinear"]

#: Complex numbers per chunk of the batch in the forward pass (chunk · r · N/2), sized for the L2/L3 caches.
_CHUNK_ELEMENTS = 1 << 18


class ToeplitzLikeLinear(StructuredLinear):
    """A linear layer whose weight is Toeplitz-like with displacement rank ``rank`` (f-circulant operators).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rank : int
        Displacement rank r; ``G`` and ``H`` have shape ``(N, rank)``, ``N = max(in_features, out_features)``.

    Notes
    -----
    ``nparams = 2 · rank · max(in_features, out_features)``. Fitted matrices are float64; the layer stores
    ``dtype`` (float32 by default) and computes its FFTs in the matching complex type.
    """

    family = "toeplitz_like"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rank: int,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rank = check_positive_int(rank, "rank")
        size = max(in_features, out_features)
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
        """Entries of M get ``nn.Linear``'s variance ``1 / (3 in_features)``: an entry sums ``r N`` products of one
        ``g`` and one ``h`` entry with weight ½, so ``Var g = Var h = (4 / (3 in r N))^{1/2}``."""
        std = (4.0 / (3.0 * self.in_features * self.rank * self.size)) ** 0.25
        bound = math.sqrt(3.0) * std
        nn.init.uniform_(self.G, -bound, bound)
        nn.init.uniform_(self.H, -bound, bound)
        self.reset_bias()

    def _weight_product(self, x):
        N, K = self.size, self.size // 2
        if x.shape[1] < N:
            x = nn.functional.pad(x, (0, N - x.shape[1]))
        V = self.H.flip(0).T  # (r, N): v_j = J h_j
        G_hat = torch.fft.rfft(self.G.T, dim=-1)  # (r, N/2 + 1)
        if N % 2 == 0:
            twist = _twist(K, N, self.G)
            V_hat = torch.fft.fft(_pack(V, K) * twist, dim=-1)
            X_hat = torch.fft.fft(_pack(x, K) * twist, dim=-1)
        else:
            twist = _twist(N, N, self.G)
            V_hat = torch.fft.fft(V * twist, dim=-1)
            X_hat = torch.fft.fft(x * twist, dim=-1)
        step = max(1, _CHUNK_ELEMENTS // (self.rank * max(K, 1)))
        outputs = []
        for start in range(0, x.shape[0], step):
            # stage 1: u_j = Z_{-1}(v_j) x (negacyclic convolutions), for the r generators at once
            U = torch.fft.ifft(X_hat[start:start + step, None, :] * V_hat, dim=-1) * twist.conj()
            U = torch.cat([U.real, U.imag], dim=-1) if N % 2 == 0 else U.real
            # stage 2: Σ_j Z_1(g_j) u_j (cyclic convolutions), summed in frequency space
            outputs.append((torch.fft.rfft(U, dim=-1) * G_hat).sum(dim=1))
        y = torch.fft.irfft(torch.cat(outputs), n=N, dim=-1)
        return 0.5 * y[:, : self.out_features]

    def to_matrix(self) -> ToeplitzLike:
        return ToeplitzLike(self.G.detach().cpu().double().numpy(), self.H.detach().cpu().double().numpy(),
                            shape=(self.out_features, self.in_features))

    @classmethod
    def _build_from_matrix(cls, M: ToeplitzLike, bias, device, dtype):
        layer = cls(M.shape[1], M.shape[0], bias, rank=M.rank, device=device, dtype=dtype)
        with torch.no_grad():
            layer.G.copy_(torch.from_numpy(np.array(M.G)))
            layer.H.copy_(torch.from_numpy(np.array(M.H)))
        return layer

    def _structure_repr(self) -> str:
        return f"rank={self.rank}"


def _twist(length: int, N: int, like: torch.Tensor) -> torch.Tensor:
    """``e^{iπk/N}`` for k < length, in the complex type matching ``like``."""
    complex_dtype = torch.complex128 if like.dtype == torch.float64 else torch.complex64
    angle = torch.arange(length, dtype=torch.float64, device=like.device) * (math.pi / N)
    return torch.polar(torch.ones_like(angle), angle).to(complex_dtype)


def _pack(a: torch.Tensor, K: int) -> torch.Tensor:
    """``a mod (z^K - i)`` for real ``a`` of length 2K along the last axis: ``a_low + i a_high``."""
    return torch.complex(a[..., :K], a[..., K:])
