"""Block sparsity under a parameter (or byte) budget: the blocks of largest energy, block shape searched.

For one block shape ``br × bc`` the best block-sparse approximation with ``k`` blocks in Frobenius norm keeps the
``k`` blocks of largest energy ``‖W_{IJ}‖²_F`` with their values (the error is the energy of the dropped blocks).
The fit does this for every shape of a small set and returns the smallest error; on ties (an exactly block-sparse
``W``), the shape that stores fewer bytes. The default set holds only blocks eight columns wide, whose products
the C kernel runs as one 8-lane vector per block row (see ``speed_c/kernel_block_sparse.c``): smaller or narrower
blocks fit trained weights better (finer supports) but run slower, so they are opt-in through ``block_shapes``.
Deterministic: ties between blocks of equal energy go to the earlier block.

With ``inputs`` the fit minimises the layer's output error ``‖(W − M) Xᵀ‖_F = ‖(W − M) L‖_F`` (``L Lᵀ = C``, the
inputs' second moment) instead. Blocks are chosen by output error: the optimal-brain-surgeon saliency of a block,
``Σ_{i ∈ I} w_{iJ} [(C⁻¹)_{JJ}]⁻¹ w_{iJ}ᵀ`` (Hassibi & Stork 1993, eq. (5) for a group of weights), is what zeroing it
costs when the rest of its rows compensate. Values are refitted by least squares per block-row: the ``br`` rows of
a block-row share their support ``Ω``, so one Cholesky factor of ``C_ΩΩ`` serves them all
(:mod:`structmat.approximators.sparse_least_squares`). Candidates, for every shape: the saliency support with
least-squares values, and the plain fit; the best on the objective is returned, so it is never worse than the
plain fit on the inputs it was given. (The energy support with least-squares values was always worse than the
saliency support on EfficientNet-Lite0's classifier and digit features, 0.194 against 0.142 output error at a
quarter of the weights with 1×8 blocks, and the two coincide for white inputs, so it is not tried.)
"""

from __future__ import annotations

import logging

import numpy as np

from structmat._validation import check_weight
from structmat.approximators.budget_units import limit_description, resolve_limit
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.sparse_least_squares import LEAST_SQUARES_RIDGE, SecondMoment, top_mask
from structmat.matrices._block_sparse_kernels import block_energies
from structmat.matrices.block_sparse import BlockSparse, _check_block_shape, block_grid

__all__ = ["fit_block_sparse", "blocks_for_budget", "DEFAULT_BLOCK_SHAPES"]

logger = logging.getLogger(__name__)

#: Block shapes the fit chooses from by default: eight contiguous columns, one to eight rows.
DEFAULT_BLOCK_SHAPES = ((1, 8), (2, 8), (4, 8), (8, 8))
def blocks_for_budget(shape, block_shape, limit: int, unit: str = "params") -> int:
    """How many ``block_shape`` blocks fit in ``limit`` parameters (or 4-byte words: each block then also costs its
    index, and the block-row pointers ``⌈m/br⌉ + 1`` are paid once), capped at the grid size."""
    br, bc = block_shape
    mb, nb = block_grid(shape, block_shape)
    if unit == "bytes":
        count = (limit - (mb + 1)) // (br * bc + 1)
    else:
        count = limit // (br * bc)
    return int(max(0, min(count, mb * nb)))


def _smallest_budget(shape, block_shapes, unit) -> tuple[int, tuple[int, int]]:
    costs = []
    for br, bc in block_shapes:
        mb, _ = block_grid(shape, (br, bc))
        costs.append((br * bc + (mb + 2 if unit == "bytes" else 0), (br, bc)))
    return min(costs)


@guarded_fit
def fit_block_sparse(W, budget, *, inputs=None, ridge: float = LEAST_SQUARES_RIDGE, block_shape=None,
                     block_shapes=DEFAULT_BLOCK_SHAPES, unit: str = "params", progress: bool = False) -> BlockSparse:
    """Keep the blocks of largest energy of ``W`` under ``budget``, choosing the block shape.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameters (``nblocks · br · bc``), or a share of ``m · n``. With ``unit="bytes"`` the budget limits
        ``nbytes / 4`` instead: an int counts bytes, a float is a share of the dense float32 bytes ``4 m n``.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the layer's outputs on these inputs (blocks by saliency, values by least squares; module docstring)
        instead of ``W`` itself; never worse than the plain fit on them.
    ridge : float
        Relative regularisation of the inputs' second moment for the least squares, ``λ = ridge · tr(C) / n``
        (default 1e-3, see :data:`~structmat.approximators.sparse_least_squares.LEAST_SQUARES_RIDGE`). Candidates
        are compared without it, on the inputs given.
    block_shape : (int, int), optional
        Use this block shape instead of choosing one.
    block_shapes : sequence of (int, int)
        The shapes to choose from (default :data:`DEFAULT_BLOCK_SHAPES`: 1×8, 2×8, 4×8, 8×8).
    unit : {"params", "bytes"}
        What the budget counts. Either way the result has ``nparams <= budget`` in parameters.
    progress : bool
        Unused (the fit is one pass per shape); accepted for a uniform interface.

    Returns
    -------
    BlockSparse
        float64; its blocks hold ``W``'s values (the least-squares values for the chosen support).

    Raises
    ------
    ValueError
        bad ``W``, budget or block shapes, or a budget below one block of every shape (the message gives the
        smallest budget that fits).

    Notes
    -----
    For a fixed support, ``‖W − M‖_F`` is smallest when the kept blocks equal ``W``'s, and the error is then
    ``sqrt(Σ_dropped ‖W_{IJ}‖²)``; the ``k`` blocks of largest energy minimise it. Cost: one pass over ``W`` and a
    sort of the ``⌈m/br⌉ ⌈n/bc⌉`` block energies per shape.

    Examples
    --------
    >>> import numpy as np
    >>> M = BlockSparse.random((16, 24), block_shape=(2, 8), density=0.25, seed=0)
    >>> fitted = fit_block_sparse(M.to_dense(), M.nparams)
    >>> fitted.block_shape, fitted.nblocks == M.nblocks, bool(np.array_equal(fitted.to_dense(), M.to_dense()))
    ((2, 8), True, True)
    """
    W = check_weight(W)
    limit = resolve_limit(budget, W.shape, unit)
    shapes = [_check_block_shape(block_shape)] if block_shape is not None else [
        _check_block_shape(s) for s in block_shapes]
    if not shapes:
        raise ValueError("block_shapes must hold at least one (rows, cols) pair; got none")
    stats = as_statistics(inputs, W.shape[1]) if inputs is not None else None
    moment = SecondMoment.from_statistics(stats, ridge) if stats is not None else None
    candidates = []
    for shape in dict.fromkeys(shapes):
        count = blocks_for_budget(W.shape, shape, limit, unit)
        if count < 1:
            continue
        E = block_energies(W, shape)
        keep = top_mask(E, count)
        dropped = float(E[~keep].sum())
        M = BlockSparse.from_mask(W, shape, keep)
        logger.debug("fit_block_sparse: shape=%s blocks=%s count=%d dropped energy=%.6g", W.shape, shape, count,
                     dropped)
        if moment is None:
            candidates.append((dropped, M.nbytes, shape, M))
            continue
        candidates.append((moment.fitting_rows_error2(W - M.to_dense()), M.nbytes, shape, M))
        mask = _saliency_mask(W, shape, count, moment)
        M = BlockSparse.from_mask(_block_least_squares(W, shape, mask, moment), shape, mask)
        candidates.append((moment.fitting_rows_error2(W - M.to_dense()), M.nbytes, shape, M))
    if not candidates:
        need, shape = _smallest_budget(W.shape, shapes, unit)
        raise ValueError(f"budget={budget} allows {limit_description(limit, unit)}, below the smallest block-sparse "
                         f"matrix for shape {W.shape}: {limit_description(need, unit)} (one {shape} block)")
    error, _, shape, M = min(candidates, key=lambda c: (c[0], c[1]))
    return M


def _saliency_mask(W, shape, count, moment: SecondMoment) -> np.ndarray:
    """The ``count`` blocks whose removal costs most output error (module docstring), as a grid mask."""
    (m, n), (br, bc) = W.shape, shape
    mb, nb = block_grid(W.shape, shape)
    precision = np.linalg.inv(moment.inverse_diagonal_blocks(bc))        # [(C⁻¹)_JJ]⁻¹, (nb, bc, bc)
    padded = np.zeros((mb * br, nb * bc))
    padded[:m, :n] = W
    blocks = padded.reshape(mb, br, nb, bc)
    saliency = np.einsum("irjc,jcd,irjd->ij", blocks, precision, blocks)
    return top_mask(saliency, count)


def _block_least_squares(W, shape, mask, moment: SecondMoment) -> np.ndarray:
    """The dense matrix with least-squares values on the blocks of ``mask`` (zero elsewhere)."""
    (m, n), (br, bc) = W.shape, shape
    groups = []
    for block_row in np.flatnonzero(mask.any(axis=1)):
        cols = (np.flatnonzero(mask[block_row])[:, None] * bc + np.arange(bc)).ravel()
        groups.append((np.arange(block_row * br, min((block_row + 1) * br, m)), cols[cols < n]))
    return moment.least_squares(W, groups)
