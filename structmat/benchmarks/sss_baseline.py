"""The plain SSS approach the fast fit is measured against: a full SVD of every Hankel block, a uniform grid of K,
one uniform state dim.

For each K on the grid (proportional stage sizes) and the largest uniform state dim whose exact capped count fits
the budget, every causal Hankel block ``H_b = W[r_b:, :c_b]`` (and every anticausal one, on ``Wᵀ``) gets its own
full SVD, truncated to ``d`` and split as ``O_b = U_d Σ_d``, ``R_b = V_dᵀ``; then ``C_b = O_b[:m_b]``,
``B_b = R_{b+1}[:, c_b:c_{b+1}]`` and ``A_b = O_{b+1}⁺ O_b[m_b:]`` (tvsclib's ``system_identification_svd``, as
described in structmat's SSS implementation note §1.4). Its cost is ``O(K m n min(m, n))`` per K, and as the
truncations are not nested it has no error identity: the error is measured on the dense product. It does not
reorder rows and columns, allocate dims per boundary, move stage boundaries or refine.

The Hankel SVDs do not depend on the budget, so :class:`PlainSSS` computes them once per (matrix, K) and reuses them
across budgets.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg

from structmat._validation import check_weight, resolve_budget
from structmat.approximators._sss_identify import max_uniform_dim, uniform_dims
from structmat.matrices.sss import SSS, stage_sizes
from structmat.metrics import relative_error

__all__ = ["PlainSSS", "PLAIN_STAGE_GRID"]

#: The plain approach's grid of K: 2, then 4 to 32 in steps of 4.
PLAIN_STAGE_GRID = (2, 4, 8, 12, 16, 20, 24, 28, 32)


def _svd(H: np.ndarray):
    try:
        return scipy.linalg.svd(H, full_matrices=False, check_finite=False, lapack_driver="gesdd")
    except np.linalg.LinAlgError:
        return scipy.linalg.svd(H, full_matrices=False, check_finite=False, lapack_driver="gesvd")


def _hankel_svds(W: np.ndarray, m_sizes, n_sizes) -> list:
    """Full SVDs of the causal Hankel blocks ``W[r_b:, :c_b]``, b = 1..K-1 (index 0 and K are None)."""
    r, c = np.concatenate([[0], np.cumsum(m_sizes)]), np.concatenate([[0], np.cumsum(n_sizes)])
    K = len(m_sizes)
    return [None] + [_svd(W[r[b]:, : c[b]]) for b in range(1, K)] + [None]


def _causal_generators(svds, m_sizes, n_sizes, dims):
    """A, B, C of the straightforward realization from the per-boundary SVDs truncated to ``dims``."""
    K = len(m_sizes)
    c = np.concatenate([[0], np.cumsum(n_sizes)])
    O, R = [None] * (K + 1), [None] * (K + 1)
    for b in range(1, K):
        U, s, Vt = svds[b]
        d = int(dims[b])
        O[b], R[b] = U[:, :d] * s[:d], Vt[:d]
    A, B, C = [], [], [np.zeros((int(m_sizes[0]), 0))]
    for b in range(K):
        d_in, d_out = int(dims[b]), int(dims[b + 1])
        if b == 0 or b == K - 1:
            A.append(np.zeros((d_out, d_in)))
        else:  # A_b = O_{b+1}⁺ O_b[m_b:], with O_{b+1} = U Σ so that O⁺ = Σ⁻¹ Uᵀ
            U, s, _ = svds[b + 1]
            inv = np.where(s[:d_out] > 0, 1.0 / np.where(s[:d_out] > 0, s[:d_out], 1.0), 0.0)
            A.append((U[:, :d_out].T @ O[b][m_sizes[b]:]) * inv[:, None])
        B.append(R[b + 1][:, c[b]:c[b + 1]] if b < K - 1 else np.zeros((0, int(n_sizes[b]))))
        if b >= 1:
            C.append(O[b][: m_sizes[b]])
    return A, B, C


class PlainSSS:
    """The plain approach on one matrix, with its Hankel SVDs cached across budgets.

    Parameters
    ----------
    W : array_like of shape (m, n)
    stage_grid : sequence of int
        The K tried (those with ``K <= min(m, n)``).
    """

    def __init__(self, W, stage_grid=PLAIN_STAGE_GRID) -> None:
        self.W = check_weight(W)
        self.WT = np.ascontiguousarray(self.W.T)
        m, n = self.W.shape
        self.stage_grid = [int(K) for K in stage_grid if 2 <= K <= min(m, n)]
        self._svds: dict[int, tuple] = {}
        self._svd_seconds: dict[int, float] = {}

    def svds(self, K: int):
        if K not in self._svds:
            start = time.perf_counter()
            m, n = self.W.shape
            ms, ns = stage_sizes(m, K), stage_sizes(n, K)
            self._svds[K] = (ms, ns, _hankel_svds(self.W, ms, ns), _hankel_svds(self.WT, ns, ms))
            self._svd_seconds[K] = time.perf_counter() - start
        return self._svds[K]

    def realize(self, K: int, dim: int) -> SSS:
        """The straightforward realization with K proportional stages and uniform (capped) state dim ``dim``."""
        ms, ns, causal, anticausal = self.svds(K)
        d, e = uniform_dims(ms, ns, dim)
        A, B, C = _causal_generators(causal, ms, ns, d)
        A2, B2, C2 = _causal_generators(anticausal, ns, ms, e)
        r, c = np.concatenate([[0], np.cumsum(ms)]), np.concatenate([[0], np.cumsum(ns)])
        D = [self.W[r[k]:r[k + 1], c[k]:c[k + 1]] for k in range(K)]
        return SSS(A, B, C, D, [x.T for x in A2], [x.T for x in C2], [x.T for x in B2])

    def fit(self, budget) -> tuple[SSS, dict]:
        """The best grid point for ``budget``: returns the matrix and ``{"num_stages", "state_dim", "error",
        "seconds"}``, where seconds is what the fit costs on its own: every grid point's Hankel SVDs (timed once,
        cached across budgets) plus this call's realizations (the dense error measurements excluded)."""
        assembly, tried = 0.0, []
        limit = resolve_budget(budget, self.W.shape)
        m, n = self.W.shape
        best = None
        for K in self.stage_grid:
            ms, ns = stage_sizes(m, K), stage_sizes(n, K)
            dim = max_uniform_dim(ms, ns, limit)
            if dim < 0:
                continue
            self.svds(K)
            start = time.perf_counter()
            M = self.realize(K, dim)
            assembly += time.perf_counter() - start
            tried.append(K)
            error = relative_error(self.W, M)
            if best is None or error < best[1]["error"]:
                best = (M, {"num_stages": K, "state_dim": dim, "error": error})
        if best is None:
            raise ValueError(f"budget={budget} ({limit} parameters) fits no plain SSS grid point for shape {(m, n)}")
        best[1]["seconds"] = assembly + sum(self._svd_seconds[K] for K in tried)
        return best
