"""PyTorch autograd functions for LDR matrices: Krylov recurrences and Horner sums through the Numba kernels.

Both the layer (:mod:`structmat.layers.ldr`) and the fit (:mod:`structmat.approximators.ldr`) use them. Forward and
backward passes apply the periodic tridiagonal operators N times to a block of vectors; operator powers are never
formed. CPU tensors only (float32 or float64).

* :func:`ldr_product` — ``M_N X = Σ_k A^k G Hᵀ (Bᵀ)^k X`` for ``X`` (N, s): the Krylov block ``U[k] = (Bᵀ)^k X``,
  two batched GEMMs with ``Hᵀ`` and ``G``, and Horner's rule in ``A``; ``(10 + 4 r) N² s`` flops, ``2 N² s`` memory.
* :func:`ldr_dense` — ``M_N = Σ_k (A^k G)(B^k H)ᵀ`` from the two Krylov blocks and one GEMM; ``2 r N³`` flops,
  cheaper than the product when ``s > N / 2``.
"""

from __future__ import annotations

import torch

from structmat.matrices._ldr_kernels import _horner, _horner_backward, _krylov, _krylov_backward

__all__ = ["ldr_product", "ldr_dense"]


def _numpy(t: torch.Tensor):
    return t.detach().contiguous().numpy()


class _Krylov(torch.autograd.Function):
    """``U[:, k] = A^k X`` (``transpose``: ``(Aᵀ)^k X``), k < N; op (3, N), X (N, s) → U (N, N, s)."""

    @staticmethod
    def forward(ctx, op, X, transpose):
        U = torch.from_numpy(_krylov(_numpy(op), _numpy(X), transpose))
        ctx.transpose = transpose
        ctx.save_for_backward(op, U)
        return U

    @staticmethod
    def backward(ctx, dU):
        op, U = ctx.saved_tensors
        dX, d_op = _krylov_backward(_numpy(op), U.numpy(), _numpy(dU), ctx.transpose)
        return torch.from_numpy(d_op).to(op.dtype), torch.from_numpy(dX), None


class _Horner(torch.autograd.Function):
    """``y = Σ_k A^k Z[:, k]``; op (3, N), Z (N, N, s) → y (N, s)."""

    @staticmethod
    def forward(ctx, op, Z):
        y, states = _horner(_numpy(op), _numpy(Z))
        ctx.save_for_backward(op, torch.from_numpy(states))
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, dy):
        op, states = ctx.saved_tensors
        dZ, d_op = _horner_backward(_numpy(op), states.numpy(), _numpy(dy))
        return torch.from_numpy(d_op).to(op.dtype), torch.from_numpy(dZ)


def ldr_product(A: torch.Tensor, G: torch.Tensor, B: torch.Tensor, H: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Σ_k A^k G Hᵀ (Bᵀ)^k X`` for operators (3, N), generators (N, r) and ``X`` (N, s); differentiable."""
    N, s = X.shape
    U = _Krylov.apply(B, X, True).reshape(N, N * s)  # columns (Bᵀ)^k X
    Z = G @ (H.T @ U)  # two GEMMs: G Hᵀ (Bᵀ)^k X for every k
    return _Horner.apply(A, Z.reshape(N, N, s))


def ldr_dense(A: torch.Tensor, G: torch.Tensor, B: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """The N×N matrix ``Σ_j K(A, g_j) K(B, h_j)ᵀ``; differentiable."""
    N, r = G.shape
    KA = _Krylov.apply(A, G, False).reshape(N, N * r)  # columns A^k g_j
    KB = _Krylov.apply(B, H, False).reshape(N, N * r)
    return KA @ KB.T
