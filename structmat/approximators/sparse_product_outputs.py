"""Products of sparse factors fitted to a layer's outputs: ``min ‖(W − S_1 S_2) Xᵀ‖_F`` under a non-zero budget.

:func:`fit_sparse_product` calls :func:`fit_product_to_outputs` when it is given inputs. The candidates, scored by
the (regularised) output error ``tr((W − M) H (W − M)ᵀ)``, ``H = C + λI``:

- the plain fit (so the result is never worse than it on the fitting inputs);
- the output-aware sparse fit (:func:`~structmat.approximators.sparse.fit_sparse` with inputs) as one factor;
- the budget-split continuation in the output norm (:mod:`~structmat.approximators._continuation` driving
  :class:`~structmat.approximators._weighted_palm.WeightedMixing`), started from that sparse fit written as
  ``I · S`` (mixing factor the identity, ``S`` pruned for the outputs to the budget minus its ``d`` entries);
- the whitened low-rank optimum as the product ``U · Vᵀ`` (when a bound shows it could win), so the fit is never
  worse than ``lowrank`` with the same inputs.

Measured (EfficientNet-Lite0's classifier on the demo's digit features): the mixing factor does not pay in the
output norm there, the continuation turns back within a few sweeps, and the one-factor output-aware sparse fit is
returned; on a Gaussian 384×384 weight with correlated inputs the continuation lowers the output error of that
sparse fit by about 15 % (docs/benchmarks/fit-quality-sparse.md).
"""

from __future__ import annotations

import logging

import numpy as np

from structmat.approximators._continuation import follow_budget_path, start_step
from structmat.approximators._factored_lowrank import lowrank_product
from structmat.approximators._output_norm import OutputNorm
from structmat.approximators._weighted_palm import WeightedMixing, output_norm_start
from structmat.approximators.sparse import fit_sparse_values
from structmat.matrices.sparse_product import SparseProduct

__all__ = ["fit_product_to_outputs"]

logger = logging.getLogger(__name__)

#: A plain fit with this small a relative squared output error is returned as it is.
EXACT_ERROR2 = 1e-24


def fit_product_to_outputs(norm: OutputNorm, limit: int, plain: SparseProduct, *, num_factors: int, sides: list,
                           effort, stats, progress: bool = False) -> SparseProduct:
    """The best of the candidates in the module docstring, by output error.

    Parameters
    ----------
    norm : OutputNorm
        ``W`` and its regularised input second moment.
    limit : int
        Total non-zeros.
    plain : SparseProduct
        The plain fit of ``W`` at ``limit``.
    num_factors : int
        1: only the sparse candidates; 2 or more: also the continuation and low rank.
    sides : list of {"left", "right"}
        Where the continuation's mixing factor may sit (the first side that leaves room is used).
    effort : callable
        ``effort(shape, d) -> (ramp_rate, tol, max_iter)`` for the continuation.
    stats : InputStatistics
        For the whitened low-rank candidate.
    """
    W = norm.W
    m, n = W.shape
    if norm.error2(plain) <= EXACT_ERROR2:
        return plain  # the plain fit is exact (W low rank, or sparse enough)
    candidates = [plain, SparseProduct([fit_sparse_values(norm, limit)])]
    if num_factors >= 2:
        for side in sides:
            d = m if side == "left" else n
            if limit <= d + 1:
                continue          # no room for a mixing factor beyond the identity
            candidates.append(_weighted_continuation(norm, limit, side, effort, progress))
            break
    errors = [norm.error2(M) for M in candidates]
    if num_factors >= 2:
        lowrank = lowrank_product(W, limit, error_to_beat=float(np.sqrt(min(errors))), norm=norm, stats=stats,
                                  ridge=norm.ridge)
        if lowrank is not None:
            candidates.append(lowrank)
            errors.append(norm.error2(lowrank))
    logger.debug("fit_sparse_product with inputs: output errors %s (plain, sparse, continuation, low rank)",
                 [float(np.sqrt(e)) for e in errors])
    return candidates[int(np.argmin(errors))]


def _weighted_continuation(norm: OutputNorm, limit: int, side: str, effort, progress: bool) -> SparseProduct:
    """The continuation in the output norm from ``I · S`` (or ``S · I``), ``S`` the output-aware sparse fit with
    ``limit − d`` non-zeros."""
    W = norm.W
    m, n = W.shape
    d = m if side == "left" else n
    ramp_rate, tol, max_iter = effort((m, n), d)
    state = WeightedMixing(norm, output_norm_start(norm, fit_sparse_values(norm, limit - d), side), limit, side)
    best, errors = follow_budget_path(state, d, min(d * d, limit - 1), start_step(ramp_rate, limit, W.size),
                                      max_iter=max_iter, tol=tol, progress=progress,
                                      desc="fit_sparse_product (outputs)")
    error, snapshot, k_mix = best
    logger.debug("output-norm continuation: side=%s k_mix=%d error %.6g -> %.6g after %d sweeps", side, k_mix,
                 errors[0], error, len(errors) - 1)
    return SparseProduct(state.product_factors(snapshot))
