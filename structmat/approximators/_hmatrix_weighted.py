"""Hierarchical matrices fitted to a layer's outputs: ranks allocated by output-error reduction, leaves refitted
by weighted least squares.

With ``C`` the regularised input second moment, the output objective ``tr((W − M) C (W − M)ᵀ)`` couples the leaves
that share rows through ``C``'s off-diagonal blocks. Two steps (structmat's note ``data-aware.md``):

1. **Allocation** under the block-diagonal part of ``C`` (one block per column cluster ``J``, ``T_J T_Jᵀ = C_JJ``):
   then leaf ``b`` contributes ``‖(W_b − X_b) T_J‖²`` alone, so its best rank-``r`` block is ``[W_b T_J]_r T_J⁻¹``
   and its squared singular values are the output-error reductions of each rank. The rank allocation of the plain
   fit (:mod:`structmat.approximators.hmatrix_allocation`) runs unchanged on these whitened spectra. For a
   column tiling by clusters of one level the whitened leaves are blocks of ``W · blockdiag(T_J)``, so the leaf SVDs
   (exact or randomized, :mod:`structmat.approximators._hmatrix_spectra`) are computed as in the plain fit.
2. **Refinement** with the full ``C``: block coordinate descent over the leaves, each replaced by its exact
   weighted least-squares optimum at its rank given all the others,
   ``X_b = [(P_{I,J} + X_b^{old} C_{JJ}) T_J^{-⊤}]_r T_J⁻¹`` with ``P = (W − M) C`` (:mod:`structmat.approximators.
   _weighted`; a dense leaf is ``(P_{I,J} + D_b C_JJ) C_JJ⁻¹``); ``P`` is updated by the leaf's change. The objective
   never increases (block coordinate descent with exact block minimisation: Bertsekas, *Nonlinear Programming*,
   1999, §2.7).

Candidates: the plain Frobenius fit, the whitened low-rank optimum (the one-leaf partition under the full ``C``), and
the partition whose allocation has the smallest output error under the block-diagonal ``C``, refined by ``sweeps``
sweeps unless it starts too far behind the best candidate (:func:`~structmat.approximators._weighted.
worth_refining`); the best on the output objective is returned.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.linalg

from structmat.approximators._hmatrix_spectra import LeafSpectra
from structmat._validation import check_positive_int
from structmat.approximators._weighted import (WeightedProblem, cholesky_factor, lowrank_in_weighted_norm,
                                                worth_refining)
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators.ordering import order_rows_and_columns
from structmat.matrices.hmatrix_partition import blocks_for
from structmat.matrices.permutation import permute

__all__ = ["fit_partitions_to_inputs", "refine_leaves", "DEFAULT_SWEEPS", "REFINED_CANDIDATES"]

logger = logging.getLogger(__name__)

#: Block coordinate sweeps over all leaves of each refined candidate.
DEFAULT_SWEEPS = 2
#: How many partition candidates (by output error under the block-diagonal C after allocation) are built and, if
#: :func:`~structmat.approximators._weighted.worth_refining`, refined.
REFINED_CANDIDATES = 1


def _cluster_levels(size: int) -> dict[tuple[int, int], int]:
    """``{(a, b): level}`` for the clusters of the midpoint bisection of ``[0, size)`` (the first level where an
    interval appears; the same interval at a deeper level has the same whitening)."""
    levels: dict[tuple[int, int], int] = {}
    intervals, level = [(0, size)], 0
    while True:
        for a, b in intervals:
            levels.setdefault((a, b), level)
        if all(b - a <= 1 for a, b in intervals):
            return levels
        intervals = [half for a, b in intervals for half in ((a, (a + b) // 2), ((a + b) // 2, b)) if half[1] > half[0]]
        level += 1


class _WhitenedSpectra:
    """Leaf spectra of ``W_b T_J`` for every leaf ``b`` on column cluster ``J``: one :class:`LeafSpectra` per
    cluster level, over ``W · blockdiag(T_J)`` with the level's clusters (computed on first use)."""

    def __init__(self, W: np.ndarray, C: np.ndarray, limit: int, *, power_iterations: int, oversamples: int,
                 seed_base: int):
        self.W, self.C, self.limit = W, C, limit
        self.options = dict(power_iterations=power_iterations, oversamples=oversamples, seed_base=seed_base)
        self.levels = _cluster_levels(W.shape[1])
        self.factors: dict[tuple[int, int], np.ndarray] = {}
        self.by_level: dict[int, LeafSpectra] = {}

    def factor(self, c0: int, c1: int) -> np.ndarray:
        if (c0, c1) not in self.factors:
            self.factors[c0, c1] = cholesky_factor(self.C[c0:c1, c0:c1])
        return self.factors[c0, c1]

    def _for(self, box) -> LeafSpectra:
        level = self.levels.get((int(box[2]), int(box[3])))
        if level is None:
            raise ValueError(f"leaf {tuple(box)} is not on a column cluster of the bisection of [0, {self.W.shape[1]})")
        if level not in self.by_level:
            whitened = np.empty_like(self.W)
            for (a, b), lv in self.levels.items():
                if lv == level or (lv < level and b - a <= 1):
                    whitened[:, a:b] = self.W[:, a:b] @ self.factor(a, b)
            self.by_level[level] = LeafSpectra(whitened, self.limit, **self.options)
        return self.by_level[level]

    def prefetch(self, boxes: np.ndarray) -> None:
        groups: dict[int, list] = {}
        for box in boxes.tolist():   # one pass: boxes grouped by the level of their column cluster
            groups.setdefault(self.levels.get((box[2], box[3]), -1), []).append(box)
        for level in sorted(groups):
            group = np.array(groups[level])
            self._for(group[0]).prefetch(group)

    def spectrum(self, box):
        return self._for(box).spectrum(box)

    def extend(self, box) -> None:
        self._for(box).extend(box)

    def leaf(self, box):
        return self._for(box).leaf(box)


def _build_whitened(matrix_class, shape, boxes, ranks, spectra: _WhitenedSpectra, W, order, partition):
    """The hierarchical matrix of an allocation on whitened spectra: low-rank leaves ``[W_b T_J]_r T_J⁻¹``, dense
    leaves ``W_b`` (their weighted optimum under the block-diagonal ``C``)."""
    blocks = []
    for box, rank in zip(boxes.tolist(), ranks.tolist()):
        r0, r1, c0, c1 = box
        if rank < 0:
            blocks.append((box, W[r0:r1, c0:c1]))
            continue
        svd = spectra.leaf(box)
        root = np.sqrt(svd.s[:rank])
        right = scipy.linalg.solve_triangular(spectra.factor(c0, c1), svd.Vt[:rank].T * root, lower=True,
                                              trans="T", check_finite=False)
        blocks.append((box, (svd.U[:, :rank] * root, right)))
    rows, cols = order
    return matrix_class.from_blocks(shape, blocks, row_order=rows, col_order=cols, partition=partition,
                                    dtype=np.float64)


def refine_leaves(H, W: np.ndarray, C: np.ndarray, *, sweeps: int = DEFAULT_SWEEPS, factors=None):
    """Block coordinate descent on the output objective over the leaves of ``H`` (ranks and partition kept).

    ``W`` and ``C`` are the weight and regularised second moment in ``H``'s own order (``W[row_order][:,
    col_order]``, ``C[col_order][:, col_order]``). Returns a new matrix of the same class; the objective
    ``tr((W − H) C (W − H)ᵀ)`` is non-increasing (each leaf step is exact; leaves larger than 1024 on both sides
    use a randomized SVD, whose step is checked by the caller's final comparison).
    """
    factors = {} if factors is None else factors

    def factor(c0, c1):
        if (c0, c1) not in factors:
            factors[c0, c1] = cholesky_factor(C[c0:c1, c0:c1])
        return factors[c0, c1]

    blocks = [(box, (p[0].copy(), p[1].copy()) if isinstance(p, tuple) else p.copy()) for box, p in H.blocks()]
    P = (W - H.core_dense()) @ C
    for _ in range(sweeps):
        for index, ((r0, r1, c0, c1), payload) in enumerate(blocks):
            CJJ, CJ = C[c0:c1, c0:c1], C[c0:c1, :]
            T = factor(c0, c1)
            if isinstance(payload, tuple):
                U, V = payload
                r = U.shape[1]
                if r == 0:
                    continue
                Q = P[r0:r1, c0:c1] + U @ (V.T @ CJJ)
                G = scipy.linalg.solve_triangular(T, Q.T, lower=True, check_finite=False).T   # Q T^{-⊤}
                U_new, V_new, _ = lowrank_in_weighted_norm(G, T, r, method="auto")
                P[r0:r1] -= U_new @ (V_new.T @ CJ) - U @ (V.T @ CJ)
                blocks[index] = ((r0, r1, c0, c1), (U_new, V_new))
            else:
                Q = P[r0:r1, c0:c1] + payload @ CJJ
                D_new = scipy.linalg.cho_solve((T, True), Q.T, check_finite=False).T
                P[r0:r1] -= (D_new - payload) @ CJ
                blocks[index] = ((r0, r1, c0, c1), D_new)
    return type(H).from_blocks(H.shape, blocks, row_order=H.row_order, col_order=H.col_order,
                               partition=H.partition, dtype=np.float64)


def fit_partitions_to_inputs(W: np.ndarray, budget, partitions, matrix_class, stats, *, orderings, allocation: str,
                             power_iterations: int, oversamples: int, min_block: int, seed, ridge: float,
                             sweeps=None, plain_options: dict, family_name: str):
    """The data-aware fit behind ``fit_hodlr`` / ``fit_hedlr`` / ``fit_hmatrix`` with ``inputs`` (module docstring).

    ``plain_options`` are passed to :func:`~structmat.approximators.hmatrix.fit_partitions` for the plain candidate.
    """
    from structmat._validation import resolve_budget
    from structmat.approximators.hmatrix import _allocate, _smallest_leaf_cost, fit_partitions

    sweeps = DEFAULT_SWEEPS if sweeps is None else check_positive_int(sweeps, "sweeps", minimum=0)
    m, n = W.shape
    limit = resolve_budget(budget, W.shape)
    problem = WeightedProblem(W, stats, ridge)
    candidates = [fit_partitions(W, budget, partitions, matrix_class, **plain_options)]   # the plain fit
    seed_base = int(np.random.default_rng(seed).integers(2**31))
    allocated = []
    spectra: dict[str, _WhitenedSpectra] = {}
    orders: dict[str, tuple] = {}
    for ordering_name in orderings:
        for partition in partitions:
            boxes = blocks_for(m, n, partition)[:, :4]
            if _smallest_leaf_cost(boxes) > limit:
                continue
            if len(boxes) == 1:
                if ordering_name == orderings[0] and m * n > limit:
                    whitened = fit_lowrank(W, limit, inputs=stats, ridge=ridge, seed=seed)
                    candidates.append(matrix_class.from_blocks(
                        (m, n), [((0, m, 0, n), (whitened.U, whitened.V))], partition=partition, dtype=np.float64))
                continue
            if ordering_name not in spectra:
                rows, cols = order_rows_and_columns(W, ordering_name, min_size=min_block, seed=seed)
                orders[ordering_name] = (rows, cols)
                Wp, Cp = problem.permuted(cols)
                spectra[ordering_name] = _WhitenedSpectra(permute(Wp, rows, None), Cp, limit,
                                                          power_iterations=power_iterations, oversamples=oversamples,
                                                          seed_base=seed_base)
            alloc = _allocate(spectra[ordering_name], boxes, limit, allocation)
            allocated.append((alloc.error2, len(allocated), ordering_name, partition, boxes, alloc))
            logger.debug("%s (inputs) ordering=%s %s: output error under block-diagonal C %.5f", family_name,
                         ordering_name, partition, math.sqrt(alloc.error2 / max(problem.energy, 1e-300)))
    allocated.sort(key=lambda item: item[:2])
    scored = [(problem.error2(M), M) for M in candidates]
    for _, _, ordering_name, partition, boxes, alloc in allocated[:REFINED_CANDIDATES]:
        H = _build_whitened(matrix_class, (m, n), boxes, alloc.ranks, spectra[ordering_name],
                            spectra[ordering_name].W, orders[ordering_name], partition)
        scored.append((problem.error2(H), H))
        if not worth_refining(scored[-1][0], min(e for e, _ in scored)):
            continue
        rows, cols = orders[ordering_name]
        Wp, Cp = problem.permuted(cols)
        refined = refine_leaves(H, permute(Wp, rows, None), Cp, sweeps=sweeps,
                                factors=dict(spectra[ordering_name].factors))
        scored.append((problem.error2(refined), refined))
        logger.debug("%s (inputs) %s: refined output error %.5f -> %.5f", family_name, H.partition,
                     math.sqrt(scored[-2][0]), math.sqrt(scored[-1][0]))
    best, error2 = problem.best([], scored)
    logger.debug("%s (inputs): %r, output error %.5f", family_name, best, math.sqrt(error2))
    return best
