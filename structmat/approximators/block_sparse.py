"""Block sparsity under a parameter (or byte) budget: the blocks of largest energy, block shape searched.

For one block shape ``br × bc`` the best block-sparse approximation with ``k`` blocks in Frobenius norm keeps the
``k`` blocks of largest energy ``‖W_{IJ}‖²_F`` with their values (the error is the energy of the dropped blocks).
The fit does this for every shape of a small set and returns the smallest error; on ties (an exactly block-sparse
``W``), the shape that stores fewer bytes. The default set holds only blocks eight columns wide, whose products
the C kernel runs as one 8-lane vector per block row (see ``speed_c/kernel_block_sparse.c``): smaller or narrower
blocks fit trained weights better (finer supports) but run slower, so they are opt-in through ``block_shapes``.
Deterministic: ties between blocks of equal energy go to the earlier block.

With ``inputs`` the fit minimises the layer's output error ``‖(W − M) Xᵀ‖_F`` (``tr((W − M) H (W − M)ᵀ)``, ``H``
the inputs' regularised second moment) instead, in two steps per block shape
(:mod:`structmat.approximators._sequential_pruning`, :mod:`structmat.approximators._masked_refit`):

1. **Blocks by sequential optimal-brain-surgeon pruning.** The saliency of a block, ``Σ_{i ∈ I} w_{iJ}
   [(H⁻¹)_{JJ}]⁻¹ w_{iJ}ᵀ`` (Hassibi & Stork 1993, eq. (5), for a group of weights), is what zeroing it costs
   when the rest of its rows compensate; it shares the budget between block columns. The block columns are then
   pruned one after another with updates of the columns not yet processed (SparseGPT, Frantar & Alistarh 2023,
   Algorithm 1, with whole blocks kept or pruned).
2. **Values by least squares on the support**, approached by two conjugate-gradient steps on all rows at once with
   a low-rank-plus-diagonal preconditioner per row.

Shapes that another candidate shape tiles (``br`` and ``bc`` multiples of its own) are not fitted with a parameter
budget: every block of theirs is a union of the finer shape's blocks with the same parameter count, so the finer
shape's best fit is at least as good (with the default shapes only ``1 × 8`` is fitted). Candidates: each fitted
shape, and the plain fit; the best on the fitting rows (without the ridge) is returned, so it is never worse than
the plain fit on the inputs it was given. On EfficientNet-Lite0's classifier with the digit features this beats
exact least squares on the one-shot saliency support (held-out output error 0.243 / 0.151 / 0.084 against 0.262 /
0.157 / 0.084 at shares 0.1 / 0.25 / 0.5) at a tenth of the time or less.
"""

from __future__ import annotations

import logging

import numpy as np

from structmat._validation import check_weight
from structmat.approximators.budget_units import limit_description, resolve_limit
from structmat.approximators._masked_refit import masked_cg_refit, product_dtype
from structmat.approximators._output_norm import OutputNorm
from structmat.approximators._sequential_pruning import expand_groups, sequential_prune
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.sparse_least_squares import LEAST_SQUARES_RIDGE, top_mask
from structmat.matrices._block_sparse_kernels import block_energies
from structmat.matrices.block_sparse import BlockSparse, _check_block_shape, block_grid

__all__ = ["fit_block_sparse", "blocks_for_budget", "DEFAULT_BLOCK_SHAPES"]

logger = logging.getLogger(__name__)

#: Block shapes the fit chooses from by default: eight contiguous columns, one to eight rows.
DEFAULT_BLOCK_SHAPES = ((1, 8), (2, 8), (4, 8), (8, 8))
#: Conjugate-gradient steps of the data-aware values (step 2 of the module docstring).
CG_REFIT_STEPS = 2
#: Directions of ``H`` in the conjugate gradients' preconditioner (:mod:`~structmat.approximators._masked_refit`).
CG_PRECONDITIONER_RANK = 32

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
        Fit the layer's outputs on these inputs (blocks by sequential optimal-brain-surgeon pruning, values by
        least squares; module docstring) instead of ``W`` itself; never worse than the plain fit on them.
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
        float64; its blocks hold ``W``'s values (with inputs, the values fitted to the outputs on the chosen
        support).

    Raises
    ------
    ValueError
        bad ``W``, budget or block shapes, or a budget below one block of every shape (the message gives the
        smallest budget that fits).

    Notes
    -----
    For a fixed support, ``‖W − M‖_F`` is smallest when the kept blocks equal ``W``'s, and the error is then
    ``sqrt(Σ_dropped ‖W_{IJ}‖²)``; the ``k`` blocks of largest energy minimise it. Cost: one pass over ``W`` and a
    sort of the ``⌈m/br⌉ ⌈n/bc⌉`` block energies per shape. With inputs, per fitted shape: ``n³`` for ``H⁻¹`` and
    its Cholesky factor (shared), about ``m n²`` for the sequential pruning and three products of an ``m × n``
    matrix with ``H`` for the values.

    References
    ----------
    B. Hassibi, D. G. Stork, "Second order derivatives for network pruning: Optimal Brain Surgeon", NeurIPS 1992,
    eq. (5). E. Frantar, D. Alistarh, "SparseGPT: massive language models can be accurately pruned in one-shot",
    ICML 2023, Algorithm 1. Z. Frangella, J. A. Tropp, M. Udell, "Randomized Nyström preconditioning", SIAM J.
    Matrix Anal. Appl. 44 (2023), §3 (the preconditioner of the values' conjugate gradients).

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
        keep = top_mask(E, count)
        dropped = float(E[~keep].sum())
        M = BlockSparse.from_mask(W, shape, keep)
        logger.debug("fit_block_sparse: shape=%s blocks=%s count=%d dropped energy=%.6g", W.shape, shape, count,
                     dropped)
        candidates.append((dropped, M.nbytes, shape, M))
    if not candidates:
        need, shape = _smallest_budget(W.shape, shapes, unit)
        raise ValueError(f"budget={budget} allows {limit_description(limit, unit)}, below the smallest block-sparse "
                         f"matrix for shape {W.shape}: {limit_description(need, unit)} (one {shape} block)")
    plain = min(candidates, key=lambda c: (c[0], c[1]))[3]
    if inputs is None:
        return plain
    norm = OutputNorm(W, as_statistics(inputs, W.shape[1]), ridge)
    fitted = []
    for _, _, shape, _ in candidates:
        if unit == "params" and _tiled_by_another(shape, [c[2] for c in candidates]):
            continue
        count = blocks_for_budget(W.shape, shape, limit, unit)
        dtype = product_dtype(W.shape)
        values, keep, loss, gradient = sequential_prune(W, norm, count, group_shape=shape, dtype=dtype, gradient=True)
        mask = expand_groups(keep, shape, W.shape)
        values, error = masked_cg_refit(W, norm.H_as(dtype), values, mask, CG_REFIT_STEPS, error=loss,
                                        gradient=gradient(), rank=CG_PRECONDITIONER_RANK, product_dtype=dtype,
                                        group_width=shape[1], overwrite_values=True,
                                        eigenpairs=norm.top_eigenpairs(CG_PRECONDITIONER_RANK, dtype))
        fitting = error - norm.shift * float(np.einsum("ij,ij->", W - values, W - values))
        M = BlockSparse.from_mask(values, shape, keep)
        logger.debug("fit_block_sparse: shape %s fitted to the inputs, output error² %.6g", shape, fitting)
        fitted.append((fitting, M.nbytes, shape, M))
    fitting, _, _, M = min(fitted, key=lambda c: (c[0], c[1]))
    directions = norm.top_eigenpairs(CG_PRECONDITIONER_RANK, product_dtype(W.shape))[1]
    return M if norm.exceeds(plain, max(fitting, 0.0), regularized=False, directions=directions) else plain


def _tiled_by_another(shape, shapes) -> bool:
    """Whether another of ``shapes`` tiles ``shape``'s blocks (its rows and columns divide ``shape``'s)."""
    return any(other != shape and shape[0] % other[0] == 0 and shape[1] % other[1] == 0 for other in shapes)
