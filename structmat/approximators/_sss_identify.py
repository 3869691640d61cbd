"""SSS identification from a dense matrix: the one-sweep construction, its error identity, and state-dim allocation.

The causal sweep factors, for k = 0..K-2, only ``M_k = [O_rest | W[r_{k+1}:, c_k:c_{k+1}]]`` (the future rows of
the current compressed column basis and of the next column block), keeps Σ in the observability factor and an
orthonormal ``[A_k B_k]``, and so costs ``Σ_k (m - r_{k+1}) (d_k + n_k)²`` instead of one SVD per Hankel block.
With ``s(M_k)`` the singular values it truncates,

.. math:: \\|L - \\hat L\\|_F^2 = \\sum_k \\sum_{i > d_{k+1}} s_i(M_k)^2 \\quad\\text{exactly},

where ``L`` is the strictly block-lower part (the truncation errors are mutually orthogonal), and
``s_i(M_k) <= σ_i(H_{k+1})`` for the Hankel block ``H_{k+1} = W[r_{k+1}:, :c_{k+1}]``. The anticausal part is
the same sweep on ``Wᵀ``; ``D_k`` is the diagonal block, so ``‖W - Ŵ‖² = lower + upper`` (structmat's
implementation note on SSS, §1.4-1.5; Chandrasekaran et al. 2005; Dewilde & van der Veen 1998, ch. 3).

Two ways to factor ``M_k``: ``exact=True`` takes a QR of the tall ``M_k`` then the SVD of its triangle (accurate
to machine precision, used for the returned matrix); ``exact=False`` takes the eigen-decomposition of the Gram
matrix ``M_kᵀ M_k`` (about 3x faster, singular values accurate to ``eps·s_1²`` in the squares: used to rank
candidates during the budget search).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from structmat.matrices.sss import cap_causal_dims, cap_dims, sss_nparams

__all__ = ["CausalPart", "causal_sweep", "greedy_dims", "uniform_dims", "max_uniform_dim"]

#: Singular values below this share of ‖W‖_F are treated as zero and not kept (exact sweep only).
TRIM_TOLERANCE = 1e-13


@dataclass
class CausalPart:
    """Result of one causal sweep: stage matrices A, B, C (lists of K), realized dims ``d`` (K+1),
    ``dropped[b]`` = squared singular values truncated at boundary b, and (optionally) the squared spectra."""

    A: list
    B: list
    C: list
    dims: np.ndarray
    dropped: np.ndarray
    spectra: list | None

    @property
    def error2(self) -> float:
        return float(self.dropped.sum())


def _factor(M: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
    """Squared singular values (descending) and right singular vectors (columns) of ``M``."""
    if exact:
        R = M
        if M.shape[0] > M.shape[1]:
            R = scipy.linalg.qr(M, mode="r", check_finite=False)[0]
        try:
            _, s, Vt = scipy.linalg.svd(R, full_matrices=False, check_finite=False, lapack_driver="gesdd")
        except np.linalg.LinAlgError:  # gesdd can fail to converge on rare inputs
            _, s, Vt = scipy.linalg.svd(R, full_matrices=False, check_finite=False, lapack_driver="gesvd")
        return s * s, Vt.T
    gram = M.T @ M
    if gram.shape[0] > 128:  # LAPACK's divide and conquer through SciPy is faster there than NumPy's eigh
        w, V = scipy.linalg.eigh(gram, driver="evd", check_finite=False)
    else:
        w, V = np.linalg.eigh(gram)
    return np.maximum(w[::-1], 0.0), V[:, ::-1]


def causal_sweep(W: np.ndarray, m_sizes, n_sizes, dims, *, exact: bool = True, keep_spectra: bool = False,
                 scale: float | None = None) -> CausalPart:
    """The causal part of ``W`` with state dims at most ``dims`` (K+1 entries; ``dims[b]`` for boundary b).

    ``W`` is float64 and C-contiguous; ``scale`` (default ‖W‖_F) sets the trimming threshold of the exact sweep.
    """
    m_sizes = np.asarray(m_sizes, np.int64)
    n_sizes = np.asarray(n_sizes, np.int64)
    K = m_sizes.shape[0]
    m = int(m_sizes.sum())
    r = np.concatenate([[0], np.cumsum(m_sizes)])
    c = np.concatenate([[0], np.cumsum(n_sizes)])
    threshold = (TRIM_TOLERANCE * (np.linalg.norm(W) if scale is None else scale)) ** 2
    d = np.zeros(K + 1, dtype=np.int64)
    dropped = np.zeros(K + 1)
    spectra = [np.zeros(0)] * (K + 1) if keep_spectra else None
    A, B, C = [], [], [np.zeros((int(m_sizes[0]), 0))]
    O_rest = np.zeros((m - int(r[1]), 0))
    for k in range(K - 1):
        block = W[r[k + 1]:, c[k]:c[k + 1]]
        M = np.concatenate([O_rest, block], axis=1) if O_rest.shape[1] else np.ascontiguousarray(block)
        s2, V = _factor(M, exact)
        keep = min(int(dims[k + 1]), s2.shape[0])
        if exact:
            keep = min(keep, int(np.count_nonzero(s2 > threshold)))
        dropped[k + 1] = float(np.sum(s2[keep:]))
        if keep_spectra:
            spectra[k + 1] = s2
        Vk = V[:, :keep]
        A.append(np.ascontiguousarray(Vk[: d[k]].T))
        B.append(np.ascontiguousarray(Vk[d[k]:].T))
        O = M @ Vk
        d[k + 1] = keep
        C.append(np.ascontiguousarray(O[: m_sizes[k + 1]]))
        O_rest = O[m_sizes[k + 1]:]
    A.append(np.zeros((0, int(d[K - 1]))))
    B.append(np.zeros((0, int(n_sizes[K - 1]))))
    return CausalPart(A, B, C, d, dropped, spectra)


def uniform_dims(m_sizes, n_sizes, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal and anticausal dims ``dim`` at every boundary, capped (:func:`structmat.matrices.sss.cap_dims`)."""
    K = len(m_sizes)
    return cap_dims(m_sizes, n_sizes, np.full(K + 1, dim), np.full(K + 1, dim))


def max_uniform_dim(m_sizes, n_sizes, budget: int) -> int:
    """The largest uniform state dim whose exact capped count fits ``budget``; -1 if not even 0 fits.

    Starts from the closed form ``d₀ = ⌊(−S + √(S² + 8(K−2)(B − Σ m_k n_k))) / (4(K−2))⌋`` of the uncapped count
    ``Σ m_k n_k + 2(K−2)d² + S d`` (a lower bound, since caps only lower the count) and raises it while it fits.
    """
    m_sizes, n_sizes = np.asarray(m_sizes, np.int64), np.asarray(n_sizes, np.int64)
    K = m_sizes.shape[0]
    diagonal = int(np.sum(m_sizes * n_sizes))
    if diagonal > budget:
        return -1
    if K == 1:
        return 0
    S = 2 * int(m_sizes.sum() + n_sizes.sum()) - int(m_sizes[0] + m_sizes[-1] + n_sizes[0] + n_sizes[-1])
    spare = budget - diagonal
    if K > 2:
        d0 = int((-S + np.sqrt(float(S) ** 2 + 8.0 * (K - 2) * spare)) / (4 * (K - 2)))
    else:
        d0 = spare // max(S, 1)
    d0 = max(d0 - 1, 0)
    ceiling = int(min(m_sizes.sum(), n_sizes.sum()))

    def fits(dim):
        return sss_nparams(m_sizes, n_sizes, *uniform_dims(m_sizes, n_sizes, dim)) <= budget

    if not fits(d0):  # the closed form is a lower bound up to rounding; step down if needed
        while d0 > 0 and not fits(d0):
            d0 -= 1
        return d0
    lo, hi = d0, ceiling  # largest fitting dim by bisection (the count is non-decreasing in dim)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def greedy_dims(m_sizes, n_sizes, causal_spectra, anticausal_spectra, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy allocation of causal and anticausal state dims by (gain / cost) under ``budget``.

    One more causal state at boundary b costs ``d[b-1] + d[b+1] + n_{b-1} + m_b`` parameters (exactly: the
    count is linear in each dim) and is worth the next squared singular value of ``M`` at b from a previous
    sweep; likewise ``e[b-1] + e[b+1] + n_b + m_{b-1}`` for an anticausal state. Increments that would break
    the caps of :func:`structmat.matrices.sss.cap_causal_dims` are skipped. Costs couple neighbours and the
    gains bound the error from above, so this is a heuristic, not an exact knapsack (note §1.6).
    """
    ms, ns = np.asarray(m_sizes, np.int64), np.asarray(n_sizes, np.int64)
    K = ms.shape[0]
    big = np.full(K + 1, 1 << 40)
    caps = (cap_causal_dims(ms, ns, big), cap_causal_dims(ns, ms, big))
    sizes = ((ms, ns), (ns, ms))  # the anticausal side is the causal side of the transpose
    spectra = (causal_spectra, anticausal_spectra)
    dims = (np.zeros(K + 1, np.int64), np.zeros(K + 1, np.int64))
    used = int(np.sum(ms * ns))

    def cost(side, b):
        x, (mm, nn) = dims[side], sizes[side]
        return int(x[b - 1] + x[b + 1] + nn[b - 1] + mm[b])

    def gain(side, b):
        x, spec = dims[side], spectra[side][b]
        if x[b] >= caps[side][b] or x[b] >= spec.shape[0]:
            return 0.0
        return float(spec[x[b]])

    def allowed(side, b):
        x, (mm, nn) = dims[side], sizes[side]
        return x[b] + 1 <= x[b - 1] + nn[b - 1] and x[b] + 1 <= x[b + 1] + mm[b]

    heap: list = []
    version: dict = {}

    def push(side, b):
        version[side, b] = version.get((side, b), 0) + 1
        g = gain(side, b)
        if g > 0.0:
            heapq.heappush(heap, (-g / max(cost(side, b), 1), side, b, version[side, b]))

    for b in range(1, K):
        push(0, b)
        push(1, b)
    waiting: list = []  # increments blocked by a neighbour's cap; retried when that neighbour grows
    while heap:
        _, side, b, ver = heapq.heappop(heap)
        if ver != version[side, b]:
            continue
        step = cost(side, b)
        if used + step > budget:
            continue  # does not fit now, and costs only grow: drop it
        if not allowed(side, b):
            waiting.append((side, b))
            continue
        used += step
        dims[side][b] += 1
        for bb in (b - 1, b, b + 1):
            if 1 <= bb <= K - 1:
                push(side, bb)
        retry, waiting = waiting, []
        for item in retry:
            push(*item)
    return dims[0], dims[1]
