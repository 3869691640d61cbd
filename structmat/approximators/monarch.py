"""Monarch approximation under a budget: the closed-form projection of Dao et al. (2022), rank ``t`` per block.

For fixed block counts ``(K, J)`` the entries of ``W`` split into ``J·K`` disjoint blocks
``B_{j,k} = W_pad.reshape(L_r, J, K, I)[:, j, k, :]`` (shape ``(L_r, I)``), and block ``(j, k)`` owns its own
parameters (column block ``k`` of ``L_j`` and row block ``j`` of ``R_k``). So ``‖W − M‖² = Σ ‖B_{j,k} − L_j^{(k)}
R_k^{(j)}‖²`` and the best Monarch matrix of rank ``t`` is the rank-``t`` truncated SVD of every block
(Eckart–Young per block; Dao et al. 2022, Sec. 3.3, Algorithm 1, for ``t = 1``). Zero padding is harmless: the
truncated SVD of a block with zero rows or columns is zero there, so cropping keeps it optimal.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.palm4msa import blas_threads_for
from structmat.matrices.monarch import Monarch, default_blocks, monarch_nparams

__all__ = ["fit_monarch", "monarch_projection", "block_candidates"]

logger = logging.getLogger(__name__)

#: The search skips block-count pairs with more than this many blocks (unless both counts are given).
MAX_BLOCKS = 4096


def block_candidates(side: int) -> list[int]:
    """Block counts tried for one side: about one per power of two from 2 to ``side / 2`` (the nearest divisor
    within a factor √2, else the count with least padding), plus :func:`default_blocks`. A count of 1 (which makes Monarch low
    rank, a family of its own) only for a side of 1; pass ``in_blocks=1`` / ``out_blocks=1`` to force it."""
    if side < 2:
        return [1]
    divisors = [k for k in range(2, side + 1) if side % k == 0]
    out = {default_blocks(side)}
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
    U, s, Vt = np.linalg.svd(_blocks(W, K, J), full_matrices=False)   # (J, K, Lr, r), (J, K, r), (J, K, r, I)
    root = np.sqrt(s[..., :t])
    left = U[..., :t] * root[..., None, :]                              # (J, K, Lr, t)
    right = Vt[..., :t, :] * root[..., :, None]                         # (J, K, t, I)
    L = left.transpose(0, 2, 1, 3).reshape(J, Lr, K * t)
    R = right.transpose(1, 0, 2, 3).reshape(K, J * t, I)
    return Monarch(R, L, shape=(m, n))


@guarded_fit
def fit_monarch(W, budget, *, in_blocks=None, out_blocks=None, rank=None) -> Monarch:
    """Best Monarch approximation with ``nparams <= budget`` over block counts and ranks.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
    in_blocks, out_blocks : int, optional
        Fix ``K`` (blocks of the input) or ``J`` (groups of the output); by default every count of
        :func:`block_candidates` is tried.
    rank : int, optional
        Fix ``t``; by default the largest rank the budget allows for each ``(K, J)``.

    Returns
    -------
    Monarch
        The candidate with the smallest Frobenius error (each candidate is the optimal projection for its
        ``(K, J, t)``, scored from the blocks' singular values without building it).

    Raises
    ------
    ValueError
        if no candidate fits the budget; the message gives the smallest Monarch size tried.

    Notes
    -----
    ``nparams = t · J · K · (⌈n/K⌉ + ⌈m/J⌉)``. ``K = J = 1`` would be the rank-``t`` truncated SVD (the
    ``lowrank`` family), so the default search starts at two blocks per side.

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
    m, n = W.shape
    Ks = block_candidates(n) if in_blocks is None else [check_positive_int(in_blocks, "in_blocks")]
    Js = block_candidates(m) if out_blocks is None else [check_positive_int(out_blocks, "out_blocks")]
    if any(K > n for K in Ks) or any(J > m for J in Js):
        raise ValueError(f"in_blocks must be <= n={n} and out_blocks <= m={m}; got {Ks} and {Js}")
    fixed_rank = None if rank is None else check_positive_int(rank, "rank")
    with blas_threads_for(W):
        return _search(W, limit, budget, Ks, Js, fixed_rank, in_blocks, out_blocks)


def _search(W, limit, budget, Ks, Js, fixed_rank, in_blocks, out_blocks) -> Monarch:
    """Score every ``(K, J)`` by its blocks' singular values; project onto the best."""
    m, n = W.shape
    best, smallest = None, None
    for K in Ks:
        for J in Js:
            if J * K > MAX_BLOCKS and (in_blocks is None or out_blocks is None):
                continue  # tens of thousands of tiny SVDs: slow, and never the best on the matrices measured
            I, Lr = math.ceil(n / K), math.ceil(m / J)
            unit = monarch_nparams((m, n), K, J, 1)
            smallest = unit if smallest is None else min(smallest, unit)
            t = min(limit // unit, I, Lr) if fixed_rank is None else fixed_rank
            if t < 1 or t > min(I, Lr) or t * unit > limit:
                continue
            s = np.linalg.svd(_blocks(W, K, J), compute_uv=False)
            error = float(np.sqrt(np.sum(s[..., t:] ** 2)))
            logger.debug("fit_monarch: K=%d J=%d t=%d nparams=%d error=%.6g", K, J, t, t * unit, error)
            if best is None or error < best[0] - 1e-12 * max(1.0, error):
                best = (error, K, J, t)
    if best is None:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest Monarch matrix tried for shape "
            f"({m}, {n}): {smallest} parameters"
            + ("" if fixed_rank is None else f" at rank {fixed_rank}")
        )
    _, K, J, t = best
    return monarch_projection(W, K, J, t)
