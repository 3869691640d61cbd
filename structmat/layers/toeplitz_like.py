"""``ToeplitzLikeLinear``: ``y = x Mᵀ + b`` with ``M = [½ Σ_j Z_1(g_j) Z_{-1}(J h_j)][:out, :in]``, by FFTs.

The forward never forms the dense weight: per row of the batch it costs one forward transform of ``x``, ``r``
inverse transforms (the skew-circulant stage), ``r`` real transforms (the circulant stage) and one inverse,
``O(r N log N)`` against ``out · in`` for ``nn.Linear`` (``N = max(in, out)``). Autograd runs through
``torch.fft``. For even ``N`` the skew-circulant stage uses the half-length complex transform of a real
negacyclic convolution (``a mod (z^N + 1)`` packed as ``a_low + i a_high``, twisted by ``e^{iπk/N}``, FFT of
length N/2), so every transform has length about N/2 complex; odd ``N`` uses the twisted full-length transform.
The batch is processed in chunks so that the ``(chunk, r, N)`` intermediates stay in cache. That is the training
path; without autograd the generator spectra are cached until a parameter changes.

The plain path (exports, other devices) uses real FFTs only and keeps complex numbers as (real, imaginary) pairs,
which the ONNX exporter maps to the ``DFT`` operator: both stages as linear convolutions of a power-of-two length
``L >= 2N`` (ONNX Runtime's radix-2 transforms; other lengths lost float32 accuracy), folded to length N with a
sign (``c[:N] - c[N:]`` for the skew-circulant stage, ``c[:N] + c[N:]`` for the circulant one). bfloat16 and float16
layers compute in float32 (torch's FFTs have no reduced-precision CPU kernels) and return their own dtype. See
:mod:`structmat.matrices.toeplitz_like` for the structure.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from structmat._validation import check_positive_int
from structmat.layers.base import FAST_DTYPES, StructuredLinear, check_structure_size, is_tracing
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
        size = max(in_features, out_features)
        rank = check_structure_size(check_positive_int(rank, "rank"), "rank", size,
                                    "the displacement rank of an N x N matrix, N = max(in_features, out_features)")
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

    def _train_product(self, x):
        if x.dtype not in FAST_DTYPES:
            return self._weight_product(x)
        return _ToeplitzLikeProduct.apply(x, self.G, self.H, self.out_features)

    def _fast_product(self, x):
        G_hat, V_neg = self._cached("spectra", lambda: _spectra(self.G.detach(), self.H.detach()), [self.G, self.H])
        N = self.size
        x = nn.functional.pad(x, (0, N - x.shape[1]))
        X_neg = _negacyclic_forward(x)
        Y_hats = [(torch.fft.rfft(_negacyclic_inverse(X_neg[rows, None, :] * V_neg, N), dim=-1) * G_hat).sum(dim=1)
                  for rows in _chunks(x.shape[0], self.rank * V_neg.shape[-1])]
        return torch.fft.irfft(torch.cat(Y_hats), n=N, dim=-1)[:, : self.out_features].contiguous()

    def _weight_product(self, x):
        """The plain path: real FFTs and (real, imaginary) pairs only; the batch in chunks unless tracing."""
        dtype = x.dtype
        compute = dtype if dtype in FAST_DTYPES else torch.float32
        G, H, x = self.G.to(compute), self.H.to(compute), x.to(compute)
        N = max(self.in_features, self.out_features)  # a Python int (a traced shape would be a tensor)
        x = nn.functional.pad(x, (0, N - x.shape[1]))
        L = _power_of_two_at_least(2 * N)
        V_hat = torch.view_as_real(torch.fft.rfft(H.flip(0).T, n=L, dim=-1))  # (r, L/2 + 1, 2): v_j = J h_j
        G_hat = 0.5 * torch.view_as_real(torch.fft.rfft(G.T, n=L, dim=-1))  # the ½ of the formula folded in
        if is_tracing() or x.shape[0] == 0:
            y = _plain_rows(x, V_hat, G_hat, N)
        else:
            y = torch.cat([_plain_rows(x[rows], V_hat, G_hat, N) for rows in _chunks(x.shape[0], G.shape[1] * L)])
        return y[:, : self.out_features].to(dtype)

    def to_matrix(self, dtype=np.float64) -> ToeplitzLike:
        return ToeplitzLike(self.G.detach().cpu().double().numpy().astype(dtype),
                            self.H.detach().cpu().double().numpy().astype(dtype),
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


class _ToeplitzLikeProduct(torch.autograd.Function):
    """``y = x Mᵀ`` for ``x`` (B, in) with a hand-written backward of the same FFT cost as the forward.

    With ``u_{bj} = Z_{-1}(v_j) x_b`` and ``w_{bj} = ½ Z_1(g_j)ᵀ ∂y_b`` (``Z_f(a)ᵀ = Z_f(τ_f a)``):
    ``∂x_b = Σ_j Z_{-1}(τ v_j) w_{bj}``, ``∂v_j = Σ_b Z_{-1}(τ x_b) w_{bj}``, ``∂g_j = ½ Σ_b Z_1(τ u_{bj}) ∂y_b``,
    each a sum of products in the transformed domains. The forward saves the spectra of the ``u_{bj}``.
    """

    @staticmethod
    def forward(ctx, x, G, H, out_features):
        N, r = G.shape
        ctx.in_features = x.shape[1]
        x = nn.functional.pad(x, (0, N - x.shape[1]))
        G_hat, V_neg = _spectra(G, H)  # the ½ of the formula folded into G_hat; v_j = J h_j
        X_neg = _negacyclic_forward(x)
        U_hats, Y_hats, chunks = [], [], _chunks(x.shape[0], r * V_neg.shape[-1])
        for rows in chunks:
            # stage 1: u_j = Z_{-1}(v_j) x (negacyclic convolutions); stage 2: Σ_j Z_1(g_j) u_j in frequency space
            U_hats.append(torch.fft.rfft(_negacyclic_inverse(X_neg[rows, None, :] * V_neg, N), dim=-1))
            Y_hats.append((U_hats[-1] * G_hat).sum(dim=1))
        ctx.save_for_backward(x, G, H)
        ctx.U_hats, ctx.chunks = U_hats, chunks  # the spectra of the u_bj per chunk of rows (for the gradient of G)
        return torch.fft.irfft(torch.cat(Y_hats), n=N, dim=-1)[:, :out_features]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, G, H = ctx.saved_tensors
        U_hats = ctx.U_hats
        N, r = G.shape
        need_x, need_G, need_H = ctx.needs_input_grad[:3]
        Y_hat = torch.fft.rfft(nn.functional.pad(grad_y, (0, N - grad_y.shape[1])), dim=-1)
        grad_x = grad_G = grad_H = None
        if need_G:
            correlation = sum((U.conj() * Y_hat[rows, None, :]).sum(dim=0) for U, rows in zip(U_hats, ctx.chunks))
            grad_G = 0.5 * torch.fft.irfft(correlation, n=N, dim=-1).T
        if need_x or need_H:
            G_hat = 0.5 * torch.fft.rfft(G.T, dim=-1)
            Vt_neg = _negacyclic_forward(_tau_skew(H.flip(0).T))
            Xt_neg = _negacyclic_forward(_tau_skew(x)) if need_H else None
            grad_x_neg = torch.empty((x.shape[0], Vt_neg.shape[-1]), dtype=Vt_neg.dtype) if need_x else None
            grad_v_neg = torch.zeros_like(Vt_neg) if need_H else None
            for rows in _chunks(x.shape[0], r * Vt_neg.shape[-1]):
                W = torch.fft.irfft(G_hat.conj() * Y_hat[rows, None, :], n=N, dim=-1)  # w_bj = ½ Z_1(g_j)ᵀ ∂y_b
                W_neg = _negacyclic_forward(W)
                if need_x:
                    grad_x_neg[rows] = (W_neg * Vt_neg).sum(dim=1)
                if need_H:
                    grad_v_neg += (W_neg * Xt_neg[rows, None, :]).sum(dim=0)
            if need_x:
                grad_x = _negacyclic_inverse(grad_x_neg, N)
            if need_H:
                grad_H = _negacyclic_inverse(grad_v_neg, N).flip(-1).T
        if grad_x is not None:
            grad_x = grad_x[:, : ctx.in_features]
        return grad_x, grad_G, grad_H, None


def _complex_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The product of complex numbers held as (real, imaginary) pairs in the last axis."""
    ar, ai = a.unbind(-1)
    br, bi = b.unbind(-1)
    return torch.stack([ar * br - ai * bi, ar * bi + ai * br], dim=-1)


def _plain_rows(x: torch.Tensor, V_hat: torch.Tensor, G_hat: torch.Tensor, N: int) -> torch.Tensor:
    """``y = Σ_j ½ Z_1(g_j) Z_{-1}(v_j) x`` for x (b, N), both stages as linear convolutions by real FFTs of a
    power-of-two length ``L >= 2N`` (radix-2 transforms, accurate in float32), folded to length N: ``c[:N] - c[N:]``
    for the skew-circulant stage (``z^N = -1``), ``c[:N] + c[N:]`` for the circulant one (``z^N = 1``)."""
    L = _power_of_two_at_least(2 * N)
    X = torch.view_as_real(torch.fft.rfft(x, n=L, dim=-1))  # (b, L/2 + 1, 2)
    C = torch.fft.irfft(torch.view_as_complex(_complex_product(X.unsqueeze(1), V_hat)), n=L, dim=-1)
    U = C[..., :N] - C[..., N:2 * N]  # (b, r, N): u_j = Z_{-1}(v_j) x
    U_hat = torch.view_as_real(torch.fft.rfft(U, n=L, dim=-1))  # (b, r, L/2 + 1, 2)
    Y = _complex_product(U_hat, G_hat).sum(dim=1)
    c = torch.fft.irfft(torch.view_as_complex(Y), n=L, dim=-1)
    return c[..., :N] + c[..., N:2 * N]


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _spectra(G: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(½ rfft(g_j), negacyclic transform of v_j = J h_j)`` for all j: what the forward needs of the generators."""
    return 0.5 * torch.fft.rfft(G.T, dim=-1), _negacyclic_forward(H.flip(0).T)


def _chunks(rows: int, per_row: int):
    """Row slices of the batch, each with about ``_CHUNK_ELEMENTS`` complex numbers in its intermediates."""
    step = max(1, _CHUNK_ELEMENTS // max(per_row, 1))
    return [slice(s, min(rows, s + step)) for s in range(0, rows, step)]


def _tau_skew(a: torch.Tensor) -> torch.Tensor:
    """``τ_{-1} a = (a_0, -a_{N-1}, …, -a_1)`` along the last axis: ``Z_{-1}(a)ᵀ = Z_{-1}(τ_{-1} a)``."""
    return torch.cat([a[..., :1], -a[..., 1:].flip(-1)], dim=-1)


def _negacyclic_forward(a: torch.Tensor) -> torch.Tensor:
    """A transform turning negacyclic convolution (``Z_{-1}(a) b``) into a pointwise product, along the last axis.

    Even N: ``a mod (z^{N/2} - i)`` packed as ``a_low + i a_high``, twisted by ``e^{iπk/N}``, FFT of length N/2
    (for real ``a`` the other half of the roots of ``z^N + 1`` carry the conjugate values). Odd N: the twisted
    FFT of length N, ``fft(e^{iπk/N} a)``."""
    N = a.shape[-1]
    if N % 2 == 0:
        return torch.fft.fft(torch.complex(a[..., : N // 2], a[..., N // 2:]) * _twist(N // 2, N, a), dim=-1)
    return torch.fft.fft(a * _twist(N, N, a), dim=-1)


def _negacyclic_inverse(spectrum: torch.Tensor, N: int) -> torch.Tensor:
    """The real vector of length N whose :func:`_negacyclic_forward` is ``spectrum``."""
    values = torch.fft.ifft(spectrum, dim=-1).mul_(_twist(spectrum.shape[-1], N, spectrum).conj())
    if N % 2 == 0:
        return torch.cat([values.real, values.imag], dim=-1)
    return values.real.contiguous()


def _twist(length: int, N: int, like: torch.Tensor) -> torch.Tensor:
    """``e^{iπk/N}`` for k < length, in the complex type matching ``like`` (real or complex)."""
    complex_dtype = torch.complex128 if like.dtype in (torch.float64, torch.complex128) else torch.complex64
    angle = torch.arange(length, dtype=torch.float64, device=like.device) * (math.pi / N)
    return torch.polar(torch.ones_like(angle), angle).to(complex_dtype)

