"""Numba kernels of the layers' inference fast path: products on row-major batches, ``Y = X Wᵀ``.

Torch holds a batch as ``X`` of shape ``(batch, in_features)``, row-major; these kernels read it and write ``Y`` of
shape ``(batch, out_features)`` in place, so a layer hands them the tensors' memory without a copy or a transpose.
Each batch row is one sweep over the stored numbers in storage order: every small block product is a dot product
accumulated in a register or an AXPY over a contiguous run, written over slices so that indices start at 0 and LLVM
vectorizes them (``fastmath`` lets it reassociate the sums into SIMD lanes, as BLAS does; the tests bound the
difference from the plain path). One sweep per row re-reads the stored numbers, so these kernels serve small batches
(a few rows: at one row on the 1000×1280 classifier at a quarter of the parameters they take about a third of
``nn.Linear``'s time); larger batches go through the layers' batched torch products. Permutations (int16 or int32) are folded
into the input gather and the output scatter. Serial: the benchmarks time one core.
"""

from __future__ import annotations

from numba import njit

__all__ = ["sss_rows", "hmatrix_rows"]


@njit(cache=True, fastmath=True, inline="always")
def _dot(a, b, zero):
    """``Σ a[i] b[i]`` over two equal-length contiguous runs (indices from 0, so LLVM vectorizes)."""
    acc = zero
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, fastmath=True, inline="always")
def _axpy(alpha, a, out):
    """``out += alpha a`` over two equal-length contiguous runs."""
    for i in range(a.shape[0]):
        out[i] += alpha * a[i]


@njit(cache=True, fastmath=True)
def sss_rows(m_sizes, n_sizes, d, e, off, A, B, C, D, E, F, G, col_order, row_order, X, Y, u, s, s2):
    """``Y = X Mᵀ`` for an SSS matrix in the flat layout of :mod:`structmat.matrices.sss` (``off`` from
    ``sss_offsets``): X (b, n), Y (b, m); ``M[row_order[i], col_order[j]] = core[i, j]``; scratch u (n,), s and s2
    (max state dim,)."""
    K = m_sizes.shape[0]
    zero = Y.dtype.type(0)
    for r in range(X.shape[0]):
        x = X[r]
        y = Y[r]
        for j in range(u.shape[0]):
            u[j] = x[col_order[j]]
        for k in range(K):  # causal: y_k = C_k s + D_k u_k;  s <- A_k s + B_k u_k
            r0, c0, mk, nk, dk, dk1 = off[0, k], off[1, k], m_sizes[k], n_sizes[k], d[k], d[k + 1]
            uk = u[c0:c0 + nk]
            for i in range(mk):
                y[row_order[r0 + i]] = (_dot(C[off[4, k] + i * dk:off[4, k] + (i + 1) * dk], s, zero)
                                        + _dot(D[off[5, k] + i * nk:off[5, k] + (i + 1) * nk], uk, zero))
            for p in range(dk1):
                s2[p] = (_dot(A[off[2, k] + p * dk:off[2, k] + (p + 1) * dk], s, zero)
                         + _dot(B[off[3, k] + p * nk:off[3, k] + (p + 1) * nk], uk, zero))
            s, s2 = s2, s
        for k in range(K - 1, -1, -1):  # anticausal: y_k += G_k z;  z <- E_k z + F_k u_k
            r0, c0, mk, nk, ek, ek1 = off[0, k], off[1, k], m_sizes[k], n_sizes[k], e[k], e[k + 1]
            uk = u[c0:c0 + nk]
            if ek1 > 0:
                for i in range(mk):
                    y[row_order[r0 + i]] += _dot(G[off[8, k] + i * ek1:off[8, k] + (i + 1) * ek1], s, zero)
            for p in range(ek):
                s2[p] = (_dot(E[off[6, k] + p * ek1:off[6, k] + (p + 1) * ek1], s, zero)
                         + _dot(F[off[7, k] + p * nk:off[7, k] + (p + 1) * nk], uk, zero))
            s, s2 = s2, s


@njit(cache=True, fastmath=True)
def hmatrix_rows(leaves, values, col_order, row_order, X, Y, u, t, core):
    """``Y = X Hᵀ`` for a hierarchical matrix (leaf table (L, 6) and flat ``values`` of
    :mod:`structmat.matrices.hmatrix`): X (b, n), Y (b, m), ``M[row_order[i], col_order[j]] = H[i, j]``; scratch
    u (n,), t (max rank,), core (m,)."""
    zero = Y.dtype.type(0)
    for r in range(X.shape[0]):
        x = X[r]
        for j in range(u.shape[0]):
            u[j] = x[col_order[j]]
        for i in range(core.shape[0]):
            core[i] = zero
        for b in range(leaves.shape[0]):
            r0, r1, c0, c1, rank, offset = (leaves[b, 0], leaves[b, 1], leaves[b, 2], leaves[b, 3], leaves[b, 4],
                                             leaves[b, 5])
            mb, nb = r1 - r0, c1 - c0
            ub = u[c0:c1]
            if rank < 0:  # dense D_b (mb, nb), row-major: one dot product per row
                for i in range(mb):
                    core[r0 + i] += _dot(values[offset + i * nb:offset + (i + 1) * nb], ub, zero)
            elif rank > 0:  # U_b (mb, r) then V_b (nb, r): t = V_bᵀ u (AXPYs over V's rows), core += U_b t
                tb = t[:rank]
                tb[:] = zero
                vbase = offset + mb * rank
                for j in range(nb):
                    _axpy(ub[j], values[vbase + j * rank:vbase + (j + 1) * rank], tb)
                for i in range(mb):
                    core[r0 + i] += _dot(values[offset + i * rank:offset + (i + 1) * rank], tb, zero)
        y = Y[r]
        for i in range(core.shape[0]):
            y[row_order[i]] = core[i]



@njit(cache=True, fastmath=True)
def monarch_rows(R, L, X, Y, U, u):
    """``Y = X Mᵀ`` for a Monarch matrix: R (K, J t, I), L (J, L_r, K t), X (b, n), Y (b, m) with n <= K I and
    m <= J L_r (the zero padding is skipped); scratch U (K J t,), u (K t,). Output entry ``r J + j`` comes from
    out-block j, row r (the layout of :class:`structmat.matrices.Monarch`)."""
    K, Jt, I = R.shape
    J, Lr, Kt = L.shape
    t = Jt // J
    n, m = X.shape[1], Y.shape[1]
    zero = Y.dtype.type(0)
    for row in range(X.shape[0]):
        x = X[row]
        y = Y[row]
        for k in range(K):
            width = min(I, n - k * I)
            xk = x[k * I:k * I + width]
            for p in range(Jt):
                U[k * Jt + p] = _dot(R[k, p, :width], xk, zero)
        for j in range(J):
            for k in range(K):  # the Monarch permutation: u_j = (U[k, j, :] for every k)
                u[k * t:(k + 1) * t] = U[k * Jt + j * t:k * Jt + (j + 1) * t]
            for r in range(Lr):
                out = r * J + j
                if out < m:
                    y[out] = _dot(L[j, r], u, zero)
