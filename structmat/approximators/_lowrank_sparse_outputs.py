"""Low rank plus sparse fitted to a layer's outputs: ``min ‖(W − U Vᵀ − S) L‖_F`` with ``L Lᵀ = C``.

OATS (Zhang & Papyan, ICLR 2025, §3) runs the plain alternation on ``W D`` with ``D = diag(C)^½`` and undoes the
scaling; that weighs each input by its energy but ignores the correlations between inputs. Here both steps are
exact minimisers of the full objective instead:

- rank step: for fixed ``S``, the best rank-``r`` part is the whitened truncated SVD
  ``[(W − S) L]_r L⁻¹`` (reduced-rank regression; Wang et al., "SVD-LLM", ICLR 2025, §3.1);
- sparse step: for fixed ``U Vᵀ``, the support is the ``k`` entries of largest saliency ``r_ij² / (C⁻¹)_jj`` of the
  residual ``R = W − U Vᵀ`` (optimal brain surgeon, Hassibi & Stork 1993), and the values on it are the least-squares
  optimum per row (:class:`~structmat.approximators.sparse_least_squares.SecondMoment`).

A round whose new support is worse keeps the previous support with re-solved values (an exact step, so the
objective never rises) and ends the rounds. Every candidate rank gets one round, the best one more. The steps use
the regularised moment ``C + λI``; the result is compared with the plain fit on ``C`` itself, the output error on
the rows the statistics came from, and the better is returned.
"""

from __future__ import annotations

import logging

import numpy as np

from structmat.approximators.lowrank import truncated_svd
from structmat.approximators.sparse_least_squares import SecondMoment, top_mask
from structmat.matrices.lowrank_sparse import LowRankSparse

__all__ = ["fit_to_outputs"]

logger = logging.getLogger(__name__)

#: Rounds (rank step + sparse step) for every candidate rank, and in all for the best one. Each round solves a
#: least-squares problem per row (``k_i³ / 3`` for ``k_i`` kept entries: 90 GFlop for 1000×1280 at half the weights);
#: a second and third round gained 0.5-1 % of the output error on EfficientNet-Lite0's classifier.
FIRST_ROUNDS, FINAL_ROUNDS = 1, 2


class _OutputSplit:
    """The alternation at one (rank, k) on the output objective."""

    def __init__(self, W, moment: SecondMoment, inverse_diagonal, rank: int, k: int):
        self.W, self.moment, self.inverse_diagonal = W, moment, inverse_diagonal
        self.rank, self.k = rank, k
        self.rounds = 0
        self.left = self.right = None
        self.P = np.zeros_like(W)
        self.mask = np.zeros(W.shape, dtype=bool)
        self.S = np.zeros_like(W)
        self.error2 = moment.output_error2(W)
        self.done = False

    def _rank_step(self, target):
        """The whitened best rank-r approximation of ``target``: ``(left, right, left @ right.T)``."""
        mu, V = self.moment.mu, self.moment.V
        U, s, Vt = truncated_svd(target @ self.moment.L, self.rank, method="auto", seed=0)
        left, right = U * s, V @ (Vt.T / np.sqrt(mu)[:, None])
        return left, right, left @ right.T

    def _sparse_step(self, residual, mask):
        groups = [(np.array([i]), np.flatnonzero(mask[i])) for i in range(mask.shape[0]) if mask[i].any()]
        return self.moment.least_squares(residual, groups)

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            if self.done:
                return
            if self.rank:
                left, right, P = self._rank_step(self.W - self.S)
            else:
                left = right = None
                P = np.zeros_like(self.W)
            residual = self.W - P
            mask = top_mask(residual ** 2 / self.inverse_diagonal, self.k)
            S = self._sparse_step(residual, mask)
            error2 = self.moment.output_error2(residual - S)
            if error2 >= self.error2 and self.rounds:
                S = self._sparse_step(residual, self.mask)  # the previous support, values re-solved: exact
                error2 = self.moment.output_error2(residual - S)
                mask = self.mask
                self.done = True
            if error2 < self.error2 or not self.rounds:
                self.left, self.right, self.P, self.mask, self.S, self.error2 = left, right, P, mask, S, error2
            else:
                self.done = True
            self.rounds += 1
            if self.rank == 0:
                self.done = True  # nothing alternates

    def matrix(self) -> LowRankSparse:
        m, n = self.W.shape
        rows, cols = np.nonzero(self.mask)
        indptr = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
        if self.rank:
            balance = np.sqrt(np.linalg.norm(self.right, axis=0) / np.maximum(np.linalg.norm(self.left, axis=0),
                                                                              1e-300))
            balance = np.where(np.isfinite(balance) & (balance > 0), balance, 1.0)
            U, V = self.left * balance, self.right / balance
        else:
            U, V = np.zeros((m, 0)), np.zeros((n, 0))
        return LowRankSparse.from_csr(U, V, indptr, cols, self.S[rows, cols])


def fit_to_outputs(W, limit: int, unit: str, stats, ridge: float, ranks, plain: LowRankSparse) -> LowRankSparse:
    """The output-fitted low rank plus sparse matrix over candidate ``ranks``, or ``plain`` if that is better.

    Parameters
    ----------
    W : ndarray of shape (m, n), float64
    limit, unit :
        The budget in parameters or 4-byte words (see :func:`~structmat.approximators.lowrank_sparse.split_for_rank`).
    stats : InputStatistics
    ridge : float
    ranks : sequence of int
        Candidate ranks (each leaves at least one non-zero, or is 0).
    plain : LowRankSparse
        The plain fit under the same budget.
    """
    from structmat.approximators.lowrank_sparse import split_for_rank

    moment = SecondMoment.from_statistics(stats, ridge)
    inverse_diagonal = moment.inverse_diagonal_blocks(1)[:, 0, 0]
    splits = {}
    for r in ranks:
        k = split_for_rank(W.shape, limit, r, unit)
        if k < (0 if r else 1) or r > min(W.shape):
            continue
        splits[r] = _OutputSplit(W, moment, inverse_diagonal, r, max(k, 0))
        splits[r].run(FIRST_ROUNDS)
    for r in sorted(splits, key=lambda r: (splits[r].error2, r))[:1]:
        splits[r].run(FINAL_ROUNDS - splits[r].rounds)
    energy = moment.output_error2(W)
    plain_error2 = moment.fitting_rows_error2(W - plain.to_dense())
    logger.debug("fit_lowrank_sparse with inputs: regularised output error by rank %s",
                 {r: round(float(np.sqrt(s.error2 / energy)), 6) for r, s in sorted(splits.items())})
    if not splits:
        return plain
    best = min(splits.values(), key=lambda s: (s.error2, s.rank))
    candidate = best.matrix()
    if moment.fitting_rows_error2(W - candidate.to_dense()) < plain_error2:  # compared on the rows, no ridge
        return candidate
    return plain
