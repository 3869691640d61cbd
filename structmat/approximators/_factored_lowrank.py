"""Low rank written as a product of two sparse factors, ``S_1 = U``, ``S_2 = Vᵀ`` (``r (m + n)`` non-zeros).

A product of two sparse factors contains every rank-``r`` matrix at ``r (m + n)`` non-zeros (``S_1 = [U 0]``,
``S_2 = [V 0]ᵀ`` with the inner dimension cut to ``r``), so the sparse-product fits take the best low-rank matrix
the budget allows (plain or whitened) as a candidate: they are never worse than ``lowrank`` and recover an exactly
low-rank matrix at its own count. The SVD is skipped when it cannot win: the energy the best rank-``r`` matrix keeps
is the sum of the top ``r`` eigenvalues of the Gram matrix, computed exactly for small matrices; for large ones it
is at most ``σ_1² + … + σ_p² + (r − p) σ_p²`` (Ky Fan), with the leading ``p`` singular values from a randomized
subspace iteration and a safety margin.
"""

from __future__ import annotations

import logging

import numpy as np

from structmat.approximators.lowrank import fit_lowrank, max_rank_for_budget
from structmat.matrices.sparse_product import SparseProduct

__all__ = ["lowrank_product", "lowrank_could_win"]

logger = logging.getLogger(__name__)

#: Relative margin on the estimated eigenvalues beyond ``EXACT_GRAM_MAX_SIZE`` (Ritz values lie below them).
SIGMA_MARGIN = 0.05
#: Randomized subspace iteration for the leading eigenvalues of large Gram matrices.
SUBSPACE_OVERSAMPLES, SUBSPACE_ITERATIONS = 16, 6
#: Leading eigenvalues of the Gram matrix used by the bound.
TOP_EIGENVALUES = 32
#: Gram matrices up to this size are formed and their spectrum computed exactly.
EXACT_GRAM_MAX_SIZE = 1536


def _top_eigenvalues(apply, n: int, count: int) -> np.ndarray:
    """The ``count`` largest eigenvalues (descending) of a symmetric positive semi-definite ``n × n`` operator
    ``apply`` (which takes ``(n, k)`` blocks): dense for small ``n``, else Ritz values of a randomized subspace
    iteration (Halko, Martinsson & Tropp 2011, Algorithm 4.4) with a fixed seed, which approach them from below."""
    if n <= 4 * count + 64:
        dense = apply(np.eye(n))
        return np.linalg.eigvalsh((dense + dense.T) / 2.0)[::-1][:count]
    block = min(n, count + SUBSPACE_OVERSAMPLES)
    Q = np.linalg.qr(apply(np.random.default_rng(0).standard_normal((n, block))))[0]
    for _ in range(SUBSPACE_ITERATIONS):
        Q = np.linalg.qr(apply(Q))[0]
    T = Q.T @ apply(Q)
    return np.linalg.eigvalsh((T + T.T) / 2.0)[::-1][:count]


def lowrank_could_win(gram_apply, size: int, energy: float, rank: int, error_to_beat: float) -> bool:
    """Whether a rank-``rank`` matrix could have a relative error below ``error_to_beat``.

    ``gram_apply`` is the Gram operator (``W Wᵀ``, or ``W H Wᵀ`` for the output norm) of the given ``size`` and
    trace ``energy``. Up to ``EXACT_GRAM_MAX_SIZE`` the Gram matrix is formed and the energy the best rank-``r``
    matrix keeps is exact (the sum of the top ``r`` eigenvalues); beyond, with the top ``p = min(r,
    TOP_EIGENVALUES)`` eigenvalues ``μ_1 ≥ … ≥ μ_p``, it keeps at most ``μ_1 + … + μ_p + (r − p) μ_p`` (Ky Fan)."""
    if energy <= 0.0 or error_to_beat <= 0.0:
        return False
    if size <= EXACT_GRAM_MAX_SIZE:
        gram = gram_apply(np.eye(size))
        values = np.clip(np.linalg.eigvalsh((gram + gram.T) / 2.0), 0.0, None)
        kept = float(np.sort(values)[::-1][:rank].sum()) * (1.0 + 1e-9)
        return kept > (1.0 - error_to_beat ** 2) * energy
    count = min(rank, TOP_EIGENVALUES, size)
    top = np.clip(_top_eigenvalues(gram_apply, size, count), 0.0, None) * (1.0 + SIGMA_MARGIN)
    kept = float(top.sum()) + (rank - count) * float(top[-1])
    return kept > (1.0 - error_to_beat ** 2) * energy


def lowrank_product(W: np.ndarray, limit: int, *, error_to_beat: float = np.inf, norm=None, stats=None,
                    ridge=None) -> SparseProduct | None:
    """The best rank-``r`` matrix with ``r (m + n) <= limit`` as the product ``U · Vᵀ``, in Frobenius norm, or in
    the output norm when ``norm`` (an :class:`OutputNorm`) and ``stats`` are given; None when no rank fits the budget
    or when the bound shows it cannot beat ``error_to_beat`` (relative, in the same norm)."""
    m, n = W.shape
    rank = max_rank_for_budget(W.shape, limit)
    if rank < 1:
        return None
    if np.isfinite(error_to_beat):
        if norm is None:
            small = W.T if n < m else W
            could = lowrank_could_win(lambda v: small @ (small.T @ v), small.shape[0], float(np.vdot(W, W)), rank,
                                      error_to_beat)
        else:
            could = lowrank_could_win(lambda v: norm.WH @ (W.T @ v), m, norm.energy, rank, error_to_beat)
        if not could:
            logger.debug("low-rank candidate (rank %d) skipped: it cannot beat %.6g", rank, error_to_beat)
            return None
    M = fit_lowrank(W, limit) if norm is None else fit_lowrank(W, limit, inputs=stats, ridge=ridge)
    return SparseProduct([M.U, M.V.T])
