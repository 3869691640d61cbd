"""Block sparsity under a parameter (or byte) budget: the blocks of largest energy, block shape searched.

For one block shape ``br × bc`` the best block-sparse approximation with ``k`` blocks in Frobenius norm keeps the
``k`` blocks of largest energy ``‖W_{IJ}‖²_F`` with their values (the error is the energy of the dropped blocks).
The fit does this for every shape of a small set and returns the smallest error; on ties (an exactly block-sparse
``W``), the shape that stores fewer bytes. The default set holds only blocks eight columns wide, whose products
the C kernel runs as one 8-lane vector per block row (see ``speed_c/kernel_block_sparse.c``): smaller or narrower
blocks fit trained weights better (finer supports) but run slower, so they are opt-in through ``block_shapes``.
Deterministic: ties between blocks of equal energy go to the earlier block.
"""

from __future__ import annotations

import logging

import numpy as np

from structmat._validation import check_weight
from structmat.approximators.budget_units import limit_description, resolve_limit
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


def _top_blocks(E: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` largest entries of ``E`` (ties: earlier in row-major order)."""
    order = np.argsort(-E.ravel(), kind="stable")[:count]
    keep = np.zeros(E.size, dtype=bool)
    keep[order] = True
    return keep.reshape(E.shape)


def fit_block_sparse(W, budget, *, block_shape=None, block_shapes=DEFAULT_BLOCK_SHAPES, unit: str = "params",
                     progress: bool = False) -> BlockSparse:
    """Keep the blocks of largest energy of ``W`` under ``budget``, choosing the block shape.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameters (``nblocks · br · bc``), or a share of ``m · n``. With ``unit="bytes"`` the budget limits
        ``nbytes / 4`` instead: an int counts bytes, a float is a share of the dense float32 bytes ``4 m n``.
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
    candidates = []
    for shape in dict.fromkeys(shapes):
        count = blocks_for_budget(W.shape, shape, limit, unit)
        if count < 1:
            continue
        E = block_energies(W, shape)
        keep = _top_blocks(E, count)
        dropped = float(E[~keep].sum())
        M = BlockSparse.from_mask(W, shape, keep)
        candidates.append((dropped, M.nbytes, shape, M))
        logger.debug("fit_block_sparse: shape=%s blocks=%s count=%d dropped energy=%.6g", W.shape, shape, count,
                     dropped)
    if not candidates:
        need, shape = _smallest_budget(W.shape, shapes, unit)
        raise ValueError(f"budget={budget} allows {limit_description(limit, unit)}, below the smallest block-sparse "
                         f"matrix for shape {W.shape}: {limit_description(need, unit)} (one {shape} block)")
    dropped, _, shape, M = min(candidates, key=lambda c: (c[0], c[1]))
    return M
