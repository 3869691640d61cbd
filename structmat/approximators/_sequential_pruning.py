"""Sequential optimal-brain-surgeon pruning of a weight's entries or blocks, with updates (SparseGPT, generalised).

The output error of ``M`` is ``tr((W − M) H (W − M)ᵀ)`` with ``H`` the (regularised) input second moment. Rows are
independent; groups of entries (``br × bc`` blocks, ``1 × 1`` for single entries) are kept or pruned whole:

1. **Allocation.** Zeroing the group ``J`` of a row while the rest of the row compensates optimally costs
   ``w_J [(H⁻¹)_JJ]⁻¹ w_Jᵀ`` (Hassibi & Stork 1993, eq. (5), for several weights at once); summed over the ``br``
   rows of a block it is on one scale for every block, so the ``count`` most salient blocks give every column group
   its number of survivors, and block rows may keep different numbers of blocks.
2. **Sequential pruning** (Frantar & Alistarh 2023, Algorithm 1 and §3.2-3.3): the column groups are taken one
   after another, fewest survivors first, in lazy blocks of about ``block_size`` columns; ``U`` is the upper
   Cholesky factor of ``H⁻¹`` in that column order (``H⁻¹ = UᵀU``). At the start of a lazy block the blocks it
   keeps (its share of the budget) are the most salient for the *current* weights, the saliency of group ``J``
   being ``‖w_J U_JJ⁻¹‖²`` (``U_JJᵀ U_JJ`` is the inverse of ``H`` restricted to the columns not yet processed, at
   ``J``). Pruning column ``j`` then subtracts ``q_j U_j,>j`` (``q_j = w_j / U_jj``) from the later columns, which
   is the optimal compensation on every column not yet processed; kept weights are frozen once processed.

Each pruning raises the objective by exactly ``q_j²`` (the removed weight's saliency among the columns still
free, which were optimal for the frozen ones), so the output error of the result is ``Σ q_j²``: returned as
``loss`` without a product with ``H``. Deterministic: stable orders, ties to the earliest position.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

from structmat.approximators._obs_kernels import prune_block
from structmat.approximators._output_norm import factor_diagonal_blocks, inverse_diagonal_blocks
from structmat.approximators.palm4msa import Constraint

__all__ = ["sequential_prune", "expand_groups", "Pruning", "ExplicitInverse"]


def _top(scores: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` largest of the non-negative ``scores`` (ties: earliest in row-major order)."""
    if count <= 0:
        return np.zeros(scores.shape, dtype=bool)
    return Constraint("topk", scores.shape, count).mask(scores)


def expand_groups(grid: np.ndarray, group_shape, shape, widths=None) -> np.ndarray:
    """The entry mask of shape ``shape`` of a boolean grid of ``br × bc`` groups (``widths``: the column widths of
    the grid's columns, by default ``bc`` but for a narrower last one)."""
    (br, bc), (m, n) = group_shape, shape
    if widths is None:
        widths = np.minimum(bc, n - np.arange(0, n, bc))
    rows = np.repeat(grid, br, axis=0)[:m] if br > 1 else grid
    return np.repeat(rows, widths, axis=1) if bc > 1 else rows


def _row_group_sums(scores: np.ndarray, br: int) -> np.ndarray:
    return scores if br == 1 else np.add.reduceat(scores, np.arange(0, scores.shape[0], br), axis=0)


def _quadratic_forms(part: np.ndarray, matrices: np.ndarray, bc: int) -> np.ndarray:
    """``part[:, g] M_g part[:, g]ᵀ`` per row and group of ``bc`` consecutive columns (part: m × G·bc)."""
    grouped = part.reshape(part.shape[0], -1, bc).transpose(1, 0, 2)          # G × m × bc
    return np.einsum("gmj,gmj->mg", grouped @ matrices, grouped)


def _global_saliency(W: np.ndarray, blocks: np.ndarray, group_shape) -> np.ndarray:
    """``Σ_{i ∈ I} w_iJ [(H⁻¹)_JJ]⁻¹ w_iJᵀ`` on the grid of groups (step 1), from the diagonal (``bc`` 1) or the
    diagonal blocks of ``H⁻¹``."""
    (m, n), (br, bc) = W.shape, group_shape
    if bc == 1:
        return _row_group_sums(W * W / blocks, br)
    precision = np.linalg.inv(blocks)
    padded = np.zeros((m, precision.shape[0] * bc))
    padded[:, :n] = W
    return _row_group_sums(_quadratic_forms(padded, precision, bc), br)


class ExplicitInverse:
    """An explicit ``H⁻¹`` with the two methods :func:`sequential_prune` asks of an
    :class:`~structmat.approximators._output_norm.OutputNorm` (which gets the same without forming ``H⁻¹``)."""

    def __init__(self, inverse: np.ndarray) -> None:
        self.inverse = inverse

    def ordering_diagonal_blocks(self, width: int) -> np.ndarray:
        return inverse_diagonal_blocks(self.inverse, width)

    def permuted_inverse_factors(self, columns: np.ndarray, *, with_inverse: bool = False, dtype=np.float64):
        U = scipy.linalg.cholesky(self.inverse.take(columns, axis=0).take(columns, axis=1), lower=False,
                                  check_finite=False)
        return U, (scipy.linalg.solve_triangular(U, np.eye(len(columns)), lower=False) if with_inverse else None)


def _current_saliency(block: np.ndarray, U_block: np.ndarray, widths: np.ndarray, bc: int) -> np.ndarray:
    """``‖w_J U_JJ⁻¹‖²`` per row and group of the lazy block (its groups' widths ``widths``, in order)."""
    if bc == 1:
        return (block / np.diag(U_block)) ** 2
    if np.all(widths == bc):
        G = len(widths)
        diagonal = U_block.reshape(G, bc, G, bc)[np.arange(G), :, np.arange(G), :]
        solved = block.reshape(block.shape[0], G, bc).transpose(1, 0, 2) @ np.linalg.inv(diagonal)
        return np.einsum("gmj,gmj->mg", solved, solved)
    out = np.empty((block.shape[0], len(widths)))
    start = 0
    for g, w in enumerate(widths):
        inverse = scipy.linalg.solve_triangular(U_block[start:start + w, start:start + w], np.eye(w), lower=False)
        solved = block[:, start:start + w] @ inverse
        out[:, g] = np.einsum("mj,mj->m", solved, solved)
        start += w
    return out


#: Columns the Numba kernel sweeps at once inside a lazy block; the rest of the block is updated by a product.
KERNEL_WIDTH = 32


def _subtract_product(C: np.ndarray, A: np.ndarray, B: np.ndarray) -> None:
    """``C -= A @ B`` in place for a Fortran-ordered ``C`` (BLAS ``gemm`` with ``β = 1``: no temporary)."""
    from scipy.linalg import blas

    gemm = blas.sgemm if C.dtype == np.float32 else blas.dgemm
    gemm(-1.0, A, B, beta=1.0, c=C, overwrite_c=1)


def _prune_lazy_block(block: np.ndarray, keep: np.ndarray, U_block: np.ndarray, losses: np.ndarray) -> None:
    """Prune the Fortran-ordered ``block`` in place (entries off ``keep``) with the updates inside it, writing the
    losses ``q`` into the Fortran-ordered ``losses``.

    The same two-level blocking as SparseGPT's lazy updates, one level down: the kernel sweeps ``KERNEL_WIDTH``
    columns, then one product updates the block's later columns (short inner loops cost more than the product)."""
    width = block.shape[1]
    for start in range(0, width, KERNEL_WIDTH):
        stop = min(start + KERNEL_WIDTH, width)
        prune_block(block[:, start:stop], np.asfortranarray(keep[:, start:stop]),
                    np.ascontiguousarray(U_block[start:stop, start:stop]), losses[:, start:stop])
        if stop < width:
            _subtract_product(block[:, stop:], losses[:, start:stop], U_block[start:stop, stop:])


class Pruning(NamedTuple):
    """What :func:`sequential_prune` returns."""

    #: (m, n) float64, zero outside the kept groups: the kept weights after the updates.
    values: np.ndarray
    #: bool (⌈m/br⌉, ⌈n/bc⌉): the kept groups.
    keep: np.ndarray
    #: ``tr((W − values) H (W − values)ᵀ)``, accumulated as ``Σ q²``.
    loss: float
    #: ``(W − values) H`` in the working dtype when asked for, else None.
    gradient: np.ndarray | None


def sequential_prune(W: np.ndarray, inverse, count: int, *, group_shape=(1, 1), block_size: int = 128,
                     dtype=np.float64, gradient: bool = False) -> Pruning:
    """Prune ``W`` to ``count`` groups of ``group_shape`` for the output error (module docstring).

    Parameters
    ----------
    W : ndarray of shape (m, n)
    inverse : OutputNorm or ndarray of shape (n, n)
        The output norm of the (regularised, positive definite) input second moment ``H``, or ``H⁻¹`` itself.
    count : int
        Groups kept, ``0 <= count``; with ``count`` at least the grid's size nothing is pruned.
    group_shape : (int, int)
        ``(br, bc)``: ``(1, 1)`` prunes single entries. Groups tile ``W`` from its top-left corner; those of the
        last block row or column may be cut short.
    block_size : int
        Columns per lazy update (whole column groups, at least one).
    dtype : numpy dtype
        Of the weights, ``U`` and the updates while pruning (float32 halves the cost of the updates, the mask and
        the loss barely move; the factorisations are always float64).
    gradient : bool
        Also return ``(W − values) H``: with ``Q`` the losses ``q`` (zero at kept entries) in the processing order,
        ``W − values = Q U`` there and ``H = U⁻¹ U⁻ᵀ``, so it is ``Q U⁻ᵀ``, one triangular product (half the work
        of a product with ``H``).

    Returns
    -------
    Pruning
        ``values``, ``keep`` (``min(count, grid size)`` groups), ``loss`` and ``gradient``.
    """
    if isinstance(inverse, np.ndarray):
        inverse = ExplicitInverse(inverse)
    (m, n), (br, bc) = W.shape, group_shape
    starts = np.arange(0, n, bc)
    widths = np.minimum(bc, n - starts)
    grid = (-(-m // br), len(starts))
    estimate = _top(_global_saliency(W, inverse.ordering_diagonal_blocks(bc), group_shape), count).sum(axis=0)
    order = np.argsort(estimate, kind="stable")               # the most pruned column groups first
    columns = order if bc == 1 else np.concatenate([np.arange(starts[g], starts[g] + widths[g]) for g in order])
    U, U_inverse = inverse.permuted_inverse_factors(columns, with_inverse=gradient, dtype=dtype)
    blocks = np.empty((len(starts),) + ((bc, bc) if bc > 1 else ()))
    blocks[order] = factor_diagonal_blocks(U, bc, widths[order])      # exact, from U: the diagonal of UᵀU
    survivors = _top(_global_saliency(W, blocks, group_shape), count).sum(axis=0)
    U = np.asfortranarray(U, dtype)
    U_inverse = None if U_inverse is None else np.asfortranarray(U_inverse, dtype)
    Wp = W.T.astype(dtype).take(columns, axis=0).T       # Fortran order, columns contiguous: in-place updates
    Q = np.zeros_like(Wp)                                           # the losses q, Fortran-ordered too
    keep = np.zeros(grid, dtype=bool)
    per_block = max(1, block_size // bc)
    loss, start = 0.0, 0
    for first in range(0, grid[1], per_block):
        groups = order[first:first + per_block]
        stop = start + int(widths[groups].sum())
        block, losses, U_block = Wp[:, start:stop], Q[:, start:stop], U[start:stop, start:stop]
        scores = _row_group_sums(_current_saliency(block, U_block, widths[groups], bc), br)
        kept = _top(scores, int(survivors[groups].sum()))
        _prune_lazy_block(block, expand_groups(kept, (br, bc), block.shape, widths[groups]), U_block, losses)
        loss += float(np.einsum("ij,ij->", losses, losses, dtype=np.float64))
        if stop < n:
            _subtract_product(Wp[:, stop:], losses, U[start:stop, stop:])
        keep[:, groups] = kept
        start = stop
    restore = np.argsort(columns)                        # the kernel left exact zeros at the pruned entries
    values = np.ascontiguousarray(Wp.T.take(restore, axis=0).T, dtype=np.float64)
    out = None
    if gradient:
        out = np.ascontiguousarray(_times_inverse_transpose(Q, U_inverse).T.take(restore, axis=0).T)
    return Pruning(values, keep, loss, out)


def _times_inverse_transpose(Q: np.ndarray, U_inverse: np.ndarray) -> np.ndarray:
    """``Q U⁻ᵀ`` for a Fortran-ordered ``Q`` (overwritten) and the Fortran-ordered upper triangular ``U⁻¹`` (BLAS
    ``trmm``)."""
    from scipy.linalg import blas

    trmm = blas.strmm if Q.dtype == np.float32 else blas.dtrmm
    return trmm(1.0, U_inverse, Q, side=1, lower=0, trans_a=1, overwrite_b=1)
