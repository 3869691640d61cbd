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

**Without ``U`` or ``H⁻¹``.** ``K = U⁻¹`` is upper triangular with ``P H Pᵀ = K Kᵀ``, so with ``J`` the order
reversal ``K = J L J`` for the lower Cholesky factor ``L`` of ``J P H Pᵀ J`` (one ``potrf``; no explicit inverse, no
triangular inversion of the whole factor). The removed part ``E = W − values`` satisfies ``E = Q U``, i.e. ``Q = E
K`` with ``Q`` the losses (zero at kept entries). With ``P`` the columns processed so far and ``R`` the rest, ``U_PR
= −K_PP⁻¹ K_PR K_RR⁻¹``, so the current weights of the rest are ``W_R − Q_P U_PR = W_R + T_R K_RR⁻¹`` with ``T_R =
E_P K_PR``, and on the next lazy block ``B`` only its diagonal block is needed: ``W_B + T_B U_BB`` with ``U_BB =
K_BB⁻¹`` (a ``block_size``-sized inversion). So the lazy updates accumulate ``T`` (``E_B K_B,later``, the same
product as SparseGPT's ``Q_B U_B,later``), and inside a block the columns are pruned with ``U_BB`` as usual. The
output gradient at the result is ``E H = Q U⁻ᵀ = Q Kᵀ``, one triangular product (half the work of a product with
``H``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np
import scipy.linalg

from structmat.approximators._obs_kernels import prune_block
from structmat.approximators._output_norm import inverse_diagonal_blocks
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

    def inverse_diagonal_blocks(self, width: int, dtype=np.float64) -> np.ndarray:
        return inverse_diagonal_blocks(self.inverse, width)

    def permuted_factor(self, columns: np.ndarray, dtype=np.float64) -> np.ndarray:
        U = scipy.linalg.cholesky(self.inverse.take(columns, axis=0).take(columns, axis=1), lower=False,
                                  check_finite=False)
        return np.asfortranarray(scipy.linalg.solve_triangular(U, np.eye(len(columns)), lower=False), dtype)


def _current_saliency(block: np.ndarray, K_block: np.ndarray, widths: np.ndarray, bc: int) -> np.ndarray:
    """``‖w_J U_JJ⁻¹‖² = ‖w_J K_JJ‖²`` per row and group of the lazy block (its groups' widths ``widths``)."""
    if bc == 1:
        return (block * np.diag(K_block)) ** 2
    out = np.empty((block.shape[0], len(widths)))
    start = 0
    for g, w in enumerate(widths):
        solved = block[:, start:start + w] @ K_block[start:start + w, start:start + w]
        out[:, g] = np.einsum("mj,mj->m", solved, solved)
        start += w
    return out


#: Columns the Numba kernel sweeps at once inside a lazy block; the rest of the block is updated by a product.
KERNEL_WIDTH = 32


def _add_product(C: np.ndarray, A: np.ndarray, B: np.ndarray) -> None:
    """``C += A @ B`` in place for a Fortran-ordered ``C`` (BLAS ``gemm`` with ``β = 1``: no temporary)."""
    from scipy.linalg import blas

    gemm = blas.sgemm if C.dtype == np.float32 else blas.dgemm
    gemm(1.0, A, B, beta=1.0, c=C, overwrite_c=1)


def _prune_lazy_block(block: np.ndarray, keep: np.ndarray, U_block: np.ndarray, losses: np.ndarray) -> None:
    """Prune the Fortran-ordered ``block`` in place (entries off ``keep``) with the updates inside it, writing the
    losses ``q`` into the Fortran-ordered ``losses``.

    The same two-level blocking as SparseGPT's lazy updates, one level down: the kernel sweeps ``KERNEL_WIDTH``
    columns, then one product updates the block's later columns (short inner loops cost more than the product)."""
    width = block.shape[1]
    for start in range(0, width, KERNEL_WIDTH):
        stop = min(start + KERNEL_WIDTH, width)
        part = slice(start, stop)
        prune_block(block[:, part], np.asfortranarray(keep[:, part]), np.ascontiguousarray(U_block[part, part]),
                    losses[:, part])
        if stop < width:
            _add_product(block[:, stop:], -losses[:, part], U_block[part, stop:])


class Pruning(NamedTuple):
    """What :func:`sequential_prune` returns."""

    #: (m, n) float64, zero outside the kept groups: the kept weights after the updates.
    values: np.ndarray
    #: bool (⌈m/br⌉, ⌈n/bc⌉): the kept groups.
    keep: np.ndarray
    #: ``tr((W − values) H (W − values)ᵀ)``, accumulated as ``Σ q²``.
    loss: float
    #: Computes ``(W − values) H`` in the working dtype on the columns that keep an entry (once; only if asked for
    #: when pruning, else None).
    gradient: Callable[[], np.ndarray] | None


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
        Of the factorisations, the weights and the updates (float32, as SparseGPT, halves their cost; an
        :class:`~structmat.approximators._output_norm.OutputNorm` falls back on float64 when a float32
        factorisation fails).
    gradient : bool
        Also offer ``(W − values) H = Q Kᵀ`` (module docstring), computed when called for, on every column that
        keeps an entry (the columns processed before the first of them, pruned whole, are left zero: ``K`` is upper
        triangular, so the product on the later columns needs only the trailing block).

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
    survivors = _top(_global_saliency(W, inverse.inverse_diagonal_blocks(bc, dtype), group_shape), count).sum(axis=0)
    order = np.argsort(survivors, kind="stable")              # the most pruned column groups first
    columns = order if bc == 1 else np.concatenate([np.arange(starts[g], starts[g] + widths[g]) for g in order])
    K = inverse.permuted_factor(columns, dtype)              # U⁻¹, Fortran-ordered
    original = W.T.astype(dtype).take(columns, axis=0).T     # Fortran order, columns contiguous: in-place updates
    T = np.zeros_like(original)                              # E_P K_P,rest, accumulated block by block
    Q = np.zeros_like(original)                              # the losses q
    current = np.empty_like(original)                        # the values, block by block
    keep = np.zeros(grid, dtype=bool)
    per_block = max(1, block_size // bc)
    loss, start = 0.0, 0
    for first in range(0, grid[1], per_block):
        groups = order[first:first + per_block]
        stop = start + int(widths[groups].sum())
        part = slice(start, stop)
        U_block = _upper_inverse(K[part, part])
        block = current[:, part]
        block[...] = T[:, part] @ U_block
        block += original[:, part]
        scores = _row_group_sums(_current_saliency(block, K[part, part], widths[groups], bc), br)
        kept = _top(scores, int(survivors[groups].sum()))
        _prune_lazy_block(block, expand_groups(kept, (br, bc), block.shape, widths[groups]), U_block, Q[:, part])
        loss += float(np.einsum("ij,ij->", Q[:, part], Q[:, part], dtype=np.float64))
        if stop < n:
            _add_product(T[:, stop:], original[:, part] - block, K[part, stop:])
        keep[:, groups] = kept
        start = stop
    restore = np.argsort(columns)                        # the kernel left exact zeros at the pruned entries
    values = np.ascontiguousarray(current.T.take(restore, axis=0).T, dtype=np.float64)

    def residual_product() -> np.ndarray:
        # Columns processed before the first one that keeps an entry are pruned whole: not computed (zero).
        kept_columns = expand_groups(keep, group_shape, W.shape, widths).any(axis=0)[columns]
        first = int(np.argmax(kept_columns)) if kept_columns.any() else n
        product = np.zeros_like(Q)
        product[:, first:] = _times_transpose(Q[:, first:], K[first:, first:])
        return np.ascontiguousarray(product.T.take(restore, axis=0).T)

    return Pruning(values, keep, loss, functools.cache(residual_product) if gradient else None)


def _upper_inverse(K_block: np.ndarray) -> np.ndarray:
    """The inverse of an upper triangular block (LAPACK ``trtri``), Fortran-ordered."""
    from scipy.linalg import lapack

    trtri = lapack.strtri if K_block.dtype == np.float32 else lapack.dtrtri
    inverse, info = trtri(np.asfortranarray(K_block), lower=0)
    if info != 0:
        raise ValueError("the input second moment's Cholesky factor is singular; pass ridge > 0")
    return inverse


def _times_transpose(Q: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``Q Kᵀ`` for a Fortran-ordered ``Q`` (overwritten) and the Fortran-ordered upper triangular ``K`` (BLAS
    ``trmm``)."""
    from scipy.linalg import blas

    trmm = blas.strmm if Q.dtype == np.float32 else blas.dtrmm
    return trmm(1.0, K, Q, side=1, lower=0, trans_a=1, overwrite_b=1)
