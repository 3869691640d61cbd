"""Monarch approximation under a budget: the closed-form projection of Dao et al. (2022), rank ``t`` per block.

For fixed block counts ``(K, J)`` the entries of ``W`` split into ``J·K`` disjoint blocks
``B_{j,k} = W_pad.reshape(L_r, J, K, I)[:, j, k, :]`` (shape ``(L_r, I)``), and block ``(j, k)`` owns its own
parameters (column block ``k`` of ``L_j`` and row block ``j`` of ``R_k``). So ``‖W − M‖² = Σ ‖B_{j,k} − L_j^{(k)}
R_k^{(j)}‖²`` and the best Monarch matrix of rank ``t`` is the rank-``t`` truncated SVD of every block
(Eckart–Young per block; Dao et al. 2022, Sec. 3.3, Algorithm 1, for ``t = 1``). Zero padding is harmless: the
truncated SVD of a block with zero rows or columns is zero there, so cropping keeps it optimal.

The search runs over block counts ``(K, J)`` (:func:`block_candidates` per side, 1 included) at the largest rank
the budget allows. ``K = J = 1`` is low rank: that candidate is :func:`~structmat.approximators.lowrank.fit_lowrank`
itself, so a Monarch fit is never worse than ``lowrank`` at the same budget. Every other pair is scored from the
eigenvalues of its blocks' Gram matrices (the squared singular values, about twice as fast as an SVD) and only the
best one is built. The error of each pair is non-increasing in its rank and the rank in the budget, so over the
full grid a larger budget never gives a larger error. Above ``EXHAUSTIVE_MAX_ENTRIES`` entries the grid is searched
coarse to fine instead (every other count per side, then the neighbours of the best until none improves), which
keeps a 4096×4096 fit within seconds; the error surface over ``(log K, log J)`` is smooth on the matrices measured.

With ``inputs``, :mod:`structmat.approximators._monarch_weighted` fits the output error instead.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.lowrank import fit_lowrank, lowrank_error2
from structmat.approximators.palm4msa import blas_threads_for
from structmat.matrices.monarch import Monarch, default_blocks, monarch_nparams
from structmat.statistics import DEFAULT_RIDGE

__all__ = ["fit_monarch", "monarch_projection", "block_candidates", "block_pairs", "search_pairs"]

logger = logging.getLogger(__name__)

#: The search skips block-count pairs with more than this many blocks (unless both counts are given).
MAX_BLOCKS = 4096
#: Up to this many entries ``m·n`` every pair of block counts is scored; beyond, the coarse-to-fine search.
EXHAUSTIVE_MAX_ENTRIES = 2**21


def block_candidates(side: int) -> list[int]:
    """Block counts tried for one side: 1, then about one per power of two from 2 to ``side / 2`` (the nearest
    divisor within a factor √2, else the count with least padding), plus :func:`default_blocks`. One block on
    both sides is low rank, one block on one side a stack of low-rank row (or column) groups."""
    if side < 2:
        return [1]
    divisors = [k for k in range(2, side + 1) if side % k == 0]
    out = {1, default_blocks(side)}
    q = 2
    while q <= side // 2:
        near = min(divisors, key=lambda k: abs(math.log(k / q)))
        out.add(near if abs(math.log(near / q)) <= math.log(math.sqrt(2)) else math.ceil(side / math.ceil(side / q)))
        q *= 2
    return sorted(out)


def _blocks(W: np.ndarray, K: int, J: int) -> np.ndarray:
    """The ``J·K`` blocks of the zero-padded ``W``, shape ``(J, K, L_r, I)``."""
    m, n = W.shape
    I, Lr = math.ceil(n / K), math.ceil(m / J)
    padded = np.zeros((Lr * J, K * I))
    padded[:m, :n] = W
    return padded.reshape(Lr, J, K, I).transpose(1, 2, 0, 3)


def _block_tail2(W: np.ndarray, K: int, J: int, t: int) -> float:
    """``Σ_blocks Σ_{i>t} σ_i²``: the squared error of the best rank-``t`` Monarch matrix with these block counts,
    from the eigenvalues of each block's Gram matrix on its smaller side (float64; the squares carry an absolute
    rounding error of about ``1e-16 ‖W‖²``)."""
    B = _blocks(W, K, J)
    J_, K_, Lr, I = B.shape
    B = B.reshape(J_ * K_, Lr, I)
    gram = np.matmul(B.transpose(0, 2, 1), B) if I <= Lr else np.matmul(B, B.transpose(0, 2, 1))
    eig = np.linalg.eigvalsh(gram)                      # ascending
    kept = float(np.sum(np.clip(eig[:, eig.shape[1] - t:], 0.0, None)))
    return max(float(np.einsum("ij,ij->", W, W)) - kept, 0.0)


def block_pairs(shape, limit: int, *, in_blocks=None, out_blocks=None, rank=None) -> list[tuple[int, int, int]]:
    """The ``(K, J, t)`` the search may try for a budget of ``limit`` parameters: every pair of counts from
    :func:`block_candidates` (or the given ones) with at most ``MAX_BLOCKS`` blocks (unless both are given), at the
    largest rank that fits (or ``rank``)."""
    m, n = shape
    Ks = block_candidates(n) if in_blocks is None else [check_positive_int(in_blocks, "in_blocks")]
    Js = block_candidates(m) if out_blocks is None else [check_positive_int(out_blocks, "out_blocks")]
    if any(K > n for K in Ks) or any(J > m for J in Js):
        raise ValueError(f"in_blocks must be <= n={n} and out_blocks <= m={m}; got {Ks} and {Js}")
    fixed_rank = None if rank is None else check_positive_int(rank, "rank")
    pairs = []
    for K in Ks:
        for J in Js:
            if J * K > MAX_BLOCKS and (in_blocks is None or out_blocks is None):
                continue  # tens of thousands of tiny SVDs: slow, and never the best on the matrices measured
            I, Lr = math.ceil(n / K), math.ceil(m / J)
            unit = monarch_nparams((m, n), K, J, 1)
            t = min(limit // unit, I, Lr) if fixed_rank is None else fixed_rank
            if 1 <= t <= min(I, Lr) and t * unit <= limit:
                pairs.append((K, J, t))
    return pairs


def _smallest(shape, in_blocks, out_blocks, rank) -> int:
    m, n = shape
    Ks = block_candidates(n) if in_blocks is None else [in_blocks]
    Js = block_candidates(m) if out_blocks is None else [out_blocks]
    t = 1 if rank is None else rank
    return min(t * monarch_nparams(shape, K, J, 1) for K in Ks for J in Js
               if J * K <= MAX_BLOCKS or (in_blocks is not None and out_blocks is not None))


def search_pairs(pairs, score, *, exhaustive: bool) -> dict:
    """Score ``pairs`` (``(K, J, t)``) with ``score(K, J, t) -> float`` and return ``{pair: score}``.

    ``exhaustive`` scores every pair. Otherwise the pairs whose counts have an even index in their side's sorted
    list are scored first (a grid twice as coarse), then, repeatedly, the unscored neighbours (adjacent counts on
    either side, diagonals included) of the best pair so far, until the best pair's neighbours are all scored.
    """
    if exhaustive or len(pairs) <= 4:
        return {p: score(*p) for p in pairs}
    Ks = sorted({p[0] for p in pairs})
    Js = sorted({p[1] for p in pairs})
    at = {(Ks.index(K), Js.index(J)): (K, J, t) for K, J, t in pairs}
    scores = {}
    for (a, b), p in at.items():
        if a % 2 == 0 and b % 2 == 0:
            scores[p] = score(*p)
    if not scores:
        first = next(iter(at.values()))
        scores[first] = score(*first)
    while True:
        best = min(scores, key=lambda p: (scores[p], p))
        a, b = Ks.index(best[0]), Js.index(best[1])
        fresh = [at[(a + da, b + db)] for da in (-1, 0, 1) for db in (-1, 0, 1)
                 if (a + da, b + db) in at and at[(a + da, b + db)] not in scores]
        if not fresh:
            return scores
        for p in fresh:
            scores[p] = score(*p)


def monarch_projection(W, in_blocks: int, out_blocks: int, rank: int) -> Monarch:
    """The Monarch matrix with ``K = in_blocks``, ``J = out_blocks`` and rank ``t`` closest to ``W`` in Frobenius
    norm: the rank-``t`` truncated SVD of each ``(L_r, I)`` block, ``√σ`` on each side (Dao et al. 2022,
    Algorithm 1, generalised to rank ``t``).

    Examples
    --------
    >>> import numpy as np
    >>> M = Monarch.random((16, 16), in_blocks=4, out_blocks=4, rank=1, seed=0)
    >>> P = monarch_projection(M.to_dense(), 4, 4, 1)
    >>> bool(np.allclose(P.to_dense(), M.to_dense()))
    True
    """
    W = check_weight(W)
    m, n = W.shape
    K, J = check_positive_int(in_blocks, "in_blocks"), check_positive_int(out_blocks, "out_blocks")
    t = check_positive_int(rank, "rank")
    if K > n or J > m:
        raise ValueError(f"in_blocks must be <= n={n} and out_blocks <= m={m}; got {K} and {J}")
    I, Lr = math.ceil(n / K), math.ceil(m / J)
    if t > min(I, Lr):
        raise ValueError(f"rank must be <= min(block sizes) = {min(I, Lr)} for shape {W.shape} with "
                         f"in_blocks={K}, out_blocks={J}; got {t}")
    return _projection(W, K, J, t)[0]


def _projection(W: np.ndarray, K: int, J: int, t: int) -> tuple[Monarch, float]:
    """:func:`monarch_projection` without checks, and its squared error ``Σ_blocks Σ_{i>t} σ_i²``."""
    m, n = W.shape
    I, Lr = math.ceil(n / K), math.ceil(m / J)
    U, s, Vt = np.linalg.svd(_blocks(W, K, J), full_matrices=False)   # (J, K, Lr, r), (J, K, r), (J, K, r, I)
    root = np.sqrt(s[..., :t])
    left = U[..., :t] * root[..., None, :]                              # (J, K, Lr, t)
    right = Vt[..., :t, :] * root[..., :, None]                         # (J, K, t, I)
    L = left.transpose(0, 2, 1, 3).reshape(J, Lr, K * t)
    R = right.transpose(1, 0, 2, 3).reshape(K, J * t, I)
    return Monarch(R, L, shape=(m, n)), float(np.sum(s[..., t:] ** 2))


@guarded_fit
def fit_monarch(W, budget, *, in_blocks=None, out_blocks=None, rank=None, inputs=None, ridge: float = DEFAULT_RIDGE,
                iterations: int | None = None) -> Monarch:
    """Best Monarch approximation with ``nparams <= budget`` over block counts and ranks.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
    in_blocks, out_blocks : int, optional
        Fix ``K`` (blocks of the input) or ``J`` (groups of the output); by default every count of
        :func:`block_candidates` is tried (``K = J = 1`` is low rank).
    rank : int, optional
        Fix ``t``; by default the largest rank the budget allows for each ``(K, J)``.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the output error ``‖(W − M) Xᵀ‖_F`` on these inputs instead of ``‖W − M‖_F``: block-wise whitened
        starts, then alternating weighted least squares on the two block-diagonal factors
        (:func:`structmat.approximators._monarch_weighted.fit_monarch_to_inputs`).
    ridge : float
        Relative regularisation of the inputs' second moment (with ``inputs``).
    iterations : int, optional
        Alternating least-squares iterations of the data-aware fit (None: its default).

    Returns
    -------
    Monarch
        The candidate with the smallest error: in Frobenius norm, the optimal projection of the best ``(K, J, t)``
        (scored from the blocks' singular values without building it), or the truncated SVD for ``K = J = 1``.

    Raises
    ------
    ValueError
        if no candidate fits the budget; the message gives the smallest Monarch size tried.

    Notes
    -----
    ``nparams = t · J · K · (⌈n/K⌉ + ⌈m/J⌉)``. ``K = J = 1`` is the rank-``t`` truncated SVD (the ``lowrank``
    family) and is always a candidate, so the fit is never worse than ``lowrank`` at the same budget.

    References
    ----------
    T. Dao et al., "Monarch: expressive structured matrices for efficient and accurate training", ICML 2022,
    Sec. 3.3 (projection onto Monarch matrices).

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> M = fit_monarch(W, 0.75)
    >>> M.nparams <= 36
    True
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    options = dict(in_blocks=in_blocks, out_blocks=out_blocks, rank=rank)
    pairs = block_pairs(W.shape, limit, **options)
    if not pairs:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest Monarch matrix tried for shape "
            f"{W.shape}: {_smallest(W.shape, in_blocks, out_blocks, rank)} parameters"
            + ("" if rank is None else f" at rank {rank}")
        )
    with blas_threads_for(W):
        if inputs is not None:
            from structmat.approximators._monarch_weighted import fit_monarch_to_inputs

            return fit_monarch_to_inputs(W, budget, pairs, inputs, ridge=ridge, iterations=iterations,
                                         options=options)
        return _search(W, pairs)


def _search(W: np.ndarray, pairs) -> Monarch:
    """Score the pairs by their blocks' singular values; build the best; compare with low rank (``K = J = 1``)."""
    m, n = W.shape
    total2 = float(np.einsum("ij,ij->", W, W))
    lowrank_pair = next((p for p in pairs if p[:2] == (1, 1)), None)
    others = [p for p in pairs if p[:2] != (1, 1)]
    candidates = []
    if lowrank_pair is not None:
        L = fit_lowrank(W, lowrank_pair[2] * (m + n))
        candidates.append((lowrank_error2(W, L, total2), 0, Monarch.from_lowrank(L)))
    if others:
        scores = search_pairs(others, lambda K, J, t: _block_tail2(W, K, J, t),
                              exhaustive=W.size <= EXHAUSTIVE_MAX_ENTRIES)
        for (K, J, t), error2 in sorted(scores.items(), key=lambda kv: kv[1]):
            logger.debug("fit_monarch: K=%d J=%d t=%d error=%.6g", K, J, t, math.sqrt(error2 / max(total2, 1e-300)))
        K, J, t = min(scores, key=lambda p: (scores[p], p))
        M, tail2 = _projection(W, K, J, t)
        candidates.append((tail2, 1, M))
    return min(candidates, key=lambda c: (c[0], c[1]))[2]
