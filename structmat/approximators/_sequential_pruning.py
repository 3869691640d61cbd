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

import numpy as np
import scipy.linalg

from structmat.approximators._obs_kernels import prune_block
from structmat.approximators.palm4msa import Constraint

__all__ = ["sequential_prune", "expand_groups"]


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


def _diagonal_blocks(A: np.ndarray, starts: np.ndarray, widths: np.ndarray, bc: int) -> np.ndarray:
    """``A``'s diagonal blocks at ``starts`` (``len(starts) × bc × bc``), a narrower one padded with the identity."""
    blocks = np.zeros((len(starts), bc, bc))
    for g, (s, w) in enumerate(zip(starts, widths)):
        blocks[g, :w, :w] = A[s:s + w, s:s + w]
        blocks[g, np.arange(w, bc), np.arange(w, bc)] = 1.0
    return blocks


def _quadratic_forms(part: np.ndarray, matrices: np.ndarray, bc: int) -> np.ndarray:
    """``part[:, g] M_g part[:, g]ᵀ`` per row and group of ``bc`` consecutive columns (part: m × G·bc)."""
    grouped = part.reshape(part.shape[0], -1, bc).transpose(1, 0, 2)          # G × m × bc
    return np.einsum("gmj,gmj->mg", grouped @ matrices, grouped)


def _global_saliency(W: np.ndarray, H_inverse: np.ndarray, group_shape) -> np.ndarray:
    """``Σ_{i ∈ I} w_iJ [(H⁻¹)_JJ]⁻¹ w_iJᵀ`` on the grid of groups (step 1)."""
    (m, n), (br, bc) = W.shape, group_shape
    if bc == 1:
        return _row_group_sums(W * W / np.diag(H_inverse), br)
    starts = np.arange(0, n, bc)
    widths = np.minimum(bc, n - starts)
    precision = np.linalg.inv(_diagonal_blocks(H_inverse, starts, widths, bc))
    padded = np.zeros((m, len(starts) * bc))
    padded[:, :n] = W
    return _row_group_sums(_quadratic_forms(padded, precision, bc), br)


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


def _prune_lazy_block(block: np.ndarray, keep: np.ndarray, U_block: np.ndarray) -> np.ndarray:
    """Prune ``block`` in place (entries off ``keep``) with the updates inside it; return the losses ``q``.

    The same two-level blocking as SparseGPT's lazy updates, one level down: the kernel sweeps ``KERNEL_WIDTH``
    columns, then one product updates the block's later columns (short inner loops cost more than the product)."""
    losses = np.empty_like(block)
    width = block.shape[1]
    for start in range(0, width, KERNEL_WIDTH):
        stop = min(start + KERNEL_WIDTH, width)
        part, part_losses = np.ascontiguousarray(block[:, start:stop]), np.empty((block.shape[0], stop - start))
        prune_block(part, np.ascontiguousarray(keep[:, start:stop]), np.ascontiguousarray(U_block[start:stop, start:stop]),
                    part_losses)
        block[:, start:stop], losses[:, start:stop] = part, part_losses
        if stop < width:
            block[:, stop:] -= part_losses @ U_block[start:stop, stop:]
    return losses


def sequential_prune(W: np.ndarray, H_inverse: np.ndarray, count: int, *, group_shape=(1, 1),
                     block_size: int = 128):
    """Prune ``W`` to ``count`` groups of ``group_shape`` for the output error (module docstring).

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H_inverse : ndarray of shape (n, n)
        The inverse of the (regularised, positive definite) input second moment ``H``.
    count : int
        Groups kept, ``0 <= count``; with ``count`` at least the grid's size nothing is pruned.
    group_shape : (int, int)
        ``(br, bc)``: ``(1, 1)`` prunes single entries. Groups tile ``W`` from its top-left corner; those of the
        last block row or column may be cut short.
    block_size : int
        Columns per lazy update (whole column groups, at least one).

    Returns
    -------
    values : ndarray of shape (m, n)
        Zero outside the kept groups; the kept weights after the updates.
    keep : bool ndarray of shape (⌈m/br⌉, ⌈n/bc⌉)
        ``min(count, grid size)`` groups.
    loss : float
        ``tr((W − values) H (W − values)ᵀ)``, accumulated as ``Σ q²``.
    """
    (m, n), (br, bc) = W.shape, group_shape
    starts = np.arange(0, n, bc)
    widths = np.minimum(bc, n - starts)
    grid = (-(-m // br), len(starts))
    survivors = _top(_global_saliency(W, H_inverse, group_shape), count).sum(axis=0)
    order = np.argsort(survivors, kind="stable")              # the most pruned column groups first
    columns = order if bc == 1 else np.concatenate([np.arange(starts[g], starts[g] + widths[g]) for g in order])
    Wp = W.take(columns, axis=1)
    U = scipy.linalg.cholesky(H_inverse.take(columns, axis=0).take(columns, axis=1), lower=False, check_finite=False)
    keep = np.zeros(grid, dtype=bool)
    per_block = max(1, block_size // bc)
    loss, start = 0.0, 0
    for first in range(0, grid[1], per_block):
        groups = order[first:first + per_block]
        stop = start + int(widths[groups].sum())
        block = Wp[:, start:stop].copy()
        U_block = U[start:stop, start:stop]
        scores = _row_group_sums(_current_saliency(block, U_block, widths[groups], bc), br)
        kept = _top(scores, int(survivors[groups].sum()))
        losses = _prune_lazy_block(block, expand_groups(kept, (br, bc), block.shape, widths[groups]), U_block)
        loss += float(np.einsum("ij,ij->", losses, losses))
        Wp[:, start:stop] = block
        if stop < n:
            Wp[:, stop:] -= losses @ U[start:stop, stop:]
        keep[:, groups] = kept
        start = stop
    values = np.empty_like(Wp)
    values[:, columns] = Wp
    values[~expand_groups(keep, group_shape, W.shape, widths)] = 0.0
    return values, keep, loss
