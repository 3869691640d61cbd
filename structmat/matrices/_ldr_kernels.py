"""Numba kernels of the LDR family: periodic tridiagonal operators, Krylov recurrences, Horner sums.

An operator is stored as ``op`` of shape (3, N): ``(A x)[i] = op[0, i] x[i-1] + op[1, i] x[i] + op[2, i] x[i+1]``
with indices mod N, i.e. the subdiagonal (``op[0, 1:]``), the diagonal, the superdiagonal (``op[2, :-1]``) and the
two corners ``A[0, N-1] = op[0, 0]`` and ``A[N-1, 0] = op[2, N-1]``. No operator power is ever formed: every
kernel applies the operator ``N`` times to a block of vectors. ``*_backward`` kernels return the gradients of a
scalar loss given the gradient of the output (used by the PyTorch autograd functions of the fit and the layer).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "_apply", "_apply_transpose", "_ldr_matmat", "_ldr_dense", "_krylov", "_krylov_backward", "_horner",
    "_horner_backward", "_operator_dense",
]


@njit(cache=True)
def _apply(op, X, out):
    """``out = A X`` for ``X`` and ``out`` of shape (N, k)."""
    N, k = X.shape
    for i in range(N):
        below = i - 1 if i > 0 else N - 1
        above = i + 1 if i < N - 1 else 0
        a, b, c = op[0, i], op[1, i], op[2, i]
        for s in range(k):
            out[i, s] = a * X[below, s] + b * X[i, s] + c * X[above, s]


@njit(cache=True)
def _apply_transpose(op, X, out):
    """``out = Aᵀ X`` for ``X`` and ``out`` of shape (N, k)."""
    N, k = X.shape
    for i in range(N):
        below = i - 1 if i > 0 else N - 1
        above = i + 1 if i < N - 1 else 0
        a, b, c = op[0, above], op[1, i], op[2, below]
        for s in range(k):
            out[i, s] = a * X[above, s] + b * X[i, s] + c * X[below, s]


@njit(cache=True)
def _operator_dense(op):
    """The dense N×N operator (for tests and checks)."""
    N = op.shape[1]
    A = np.zeros((N, N), dtype=op.dtype)
    for i in range(N):
        A[i, (i - 1) % N] += op[0, i]
        A[i, i] += op[1, i]
        A[i, (i + 1) % N] += op[2, i]
    return A


@njit(cache=True)
def _ldr_matmat(opA, G, opB, H, X):
    """``Σ_k A^k G Hᵀ (Bᵀ)^k X`` for ``G, H`` (N, r) and ``X`` (N, k): O(r N² k) time, O(r N k) memory."""
    N, r = G.shape
    k = X.shape[1]
    HT = np.ascontiguousarray(H.T)
    C = np.empty((N, r, k), dtype=X.dtype)
    u = X.copy()
    tmp = np.empty_like(u)
    for step in range(N):
        C[step] = HT @ u
        if step < N - 1:
            _apply_transpose(opB, u, tmp)
            u, tmp = tmp, u
    y = G @ C[N - 1]
    tmp = np.empty_like(y)
    for step in range(N - 2, -1, -1):
        _apply(opA, y, tmp)
        y = tmp + G @ C[step]
    return y


@njit(cache=True)
def _ldr_dense(opA, opB, Q):
    """``Σ_{k<N} A^k Q (Bᵀ)^k`` by Horner (``S ← A S Bᵀ + Q``, N−1 times): O(N³) flops, O(N²) memory, any r."""
    N = Q.shape[0]
    S = Q.copy()
    if N < 3:  # the periodic neighbours coincide: apply the dense operators
        A = _operator_dense(opA)
        B = _operator_dense(opB)
        for _ in range(N - 1):
            S = A @ S @ B.T + Q
        return S
    T = np.empty_like(Q)
    b0, b1, b2 = opB[0], opB[1], opB[2]
    for _ in range(N - 1):
        for i in range(N):  # T = S Bᵀ, row by row: T[i, l] = b0[l] S[i, l-1] + b1[l] S[i, l] + b2[l] S[i, l+1]
            row, out = S[i], T[i]
            out[0] = b0[0] * row[N - 1] + b1[0] * row[0] + b2[0] * row[1]
            for l in range(1, N - 1):
                out[l] = b0[l] * row[l - 1] + b1[l] * row[l] + b2[l] * row[l + 1]
            out[N - 1] = b0[N - 1] * row[N - 2] + b1[N - 1] * row[N - 1] + b2[N - 1] * row[0]
        for i in range(N):  # S = A T + Q, row by row
            below = T[i - 1] if i > 0 else T[N - 1]
            above = T[i + 1] if i < N - 1 else T[0]
            middle, out, q = T[i], S[i], Q[i]
            a, b, c = opA[0, i], opA[1, i], opA[2, i]
            for l in range(N):
                out[l] = a * below[l] + b * middle[l] + c * above[l] + q[l]
    return S


@njit(cache=True)
def _krylov(op, X, transpose):
    """``U[:, k] = A^k X`` (or ``(Aᵀ)^k X``) for k < N; ``X`` (N, s) → ``U`` (N, N, s), Krylov index in the middle
    so that ``U.reshape(N, N s)`` feeds one GEMM."""
    N, s = X.shape
    U = np.empty((N, N, s), dtype=X.dtype)
    U[:, 0, :] = X
    current = X.copy()
    nxt = np.empty_like(current)
    for k in range(N - 1):
        if transpose:
            _apply_transpose(op, current, nxt)
        else:
            _apply(op, current, nxt)
        U[:, k + 1, :] = nxt
        current, nxt = nxt, current
    return U


@njit(cache=True)
def _accumulate_operator_gradient(lam, u, transpose, d_op):
    """Add the gradient of ``<lam, A u>`` (or ``<lam, Aᵀ u>``) with respect to ``op`` to ``d_op``."""
    N, k = u.shape
    for i in range(N):
        below = i - 1 if i > 0 else N - 1
        above = i + 1 if i < N - 1 else 0
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for s in range(k):
            if transpose:  # (Aᵀu)[i] = op[0,i+1] u[i+1] + op[1,i] u[i] + op[2,i-1] u[i-1]: op[·, j] meets u[j]
                s0 += lam[below, s] * u[i, s]
                s1 += lam[i, s] * u[i, s]
                s2 += lam[above, s] * u[i, s]
            else:  # (Au)[i] = op[0,i] u[i-1] + op[1,i] u[i] + op[2,i] u[i+1]
                s0 += lam[i, s] * u[below, s]
                s1 += lam[i, s] * u[i, s]
                s2 += lam[i, s] * u[above, s]
        d_op[0, i] += s0
        d_op[1, i] += s1
        d_op[2, i] += s2


@njit(cache=True)
def _krylov_backward(op, U, dU, transpose):
    """Gradients ``(dX, d_op)`` of :func:`_krylov` given ``dU`` (N, N, s)."""
    N = op.shape[1]
    d_op = np.zeros((3, N), dtype=np.float64)
    lam = dU[:, N - 1, :].copy()
    tmp = np.empty_like(lam)
    for k in range(N - 2, -1, -1):
        _accumulate_operator_gradient(lam, U[:, k, :], transpose, d_op)
        if transpose:  # adjoint of Aᵀ is A
            _apply(op, lam, tmp)
        else:
            _apply_transpose(op, lam, tmp)
        lam = tmp + dU[:, k, :]
    return lam, d_op


@njit(cache=True)
def _horner(op, Z):
    """``y = Σ_k A^k Z[:, k]`` for ``Z`` (N, N, s) by Horner; also the states ``y_{k+1}`` that A multiplies."""
    N = op.shape[1]
    states = np.empty_like(Z)
    y = Z[:, N - 1, :].copy()
    tmp = np.empty_like(y)
    for k in range(N - 2, -1, -1):
        states[:, k, :] = y
        _apply(op, y, tmp)
        y = tmp + Z[:, k, :]
    return y, states


@njit(cache=True)
def _horner_backward(op, states, dy):
    """Gradients ``(dZ, d_op)`` of :func:`_horner` given ``dy`` (N, s): ``dZ[:, k] = (Aᵀ)^k dy``."""
    N = op.shape[1]
    d_op = np.zeros((3, N), dtype=np.float64)
    dZ = np.empty((N, N, dy.shape[1]), dtype=dy.dtype)
    mu = dy.copy()
    dZ[:, 0, :] = mu
    tmp = np.empty_like(mu)
    for k in range(N - 1):
        _accumulate_operator_gradient(mu, states[:, k, :], False, d_op)
        _apply_transpose(op, mu, tmp)
        mu, tmp = tmp, mu
        dZ[:, k + 1, :] = mu
    return dZ, d_op
