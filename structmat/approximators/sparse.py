"""Sparsity under a non-zero budget: magnitude pruning, or pruning for the layer's outputs.

Without inputs, ``fit_sparse(W, k)`` keeps the ``k`` largest entries of ``W``: the best ``k``-sparse
approximation in Frobenius norm.

With inputs (their second moment ``C``, regularised to ``H = C + λI``), it minimises the output error
``tr((W − M) H (W − M)ᵀ)`` over ``M`` with at most ``k`` non-zeros, in three steps:

1. **Allocation.** The optimal-brain-surgeon saliency of an entry, ``W_ij² / [H⁻¹]_jj`` (the output energy lost by
   removing it alone and compensating optimally with the rest of its row; Hassibi & Stork 1993), is on one scale
   for every entry, so the budget is shared *globally*: the ``k`` most salient entries give every column its
   number of survivors, and rows may keep different numbers of entries.
2. **Sequential pruning with updates** (SparseGPT, Frantar & Alistarh 2023, Algorithm 1): columns are processed
   one at a time; pruning column ``j`` adds its loss to the columns not yet processed through row ``j`` of the
   upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``), all rows at once, lazily in blocks of ``block_size``
   columns. Each block keeps its share of the budget (step 1) among *all* its rows by the current saliency
   ``w² / U_jj²`` (SparseGPT keeps a fixed fraction per row). Columns are taken in the order of their number of
   survivors, fewest first: a kept weight is never updated again once its column is processed, so processing the
   mostly-pruned columns first leaves the kept weights free to absorb their loss. On EfficientNet-Lite0's
   classifier at a quarter of the entries this ordering lowers the fitting objective by 28 % against the natural
   order. Neither ``H⁻¹`` nor ``U`` is formed (:mod:`structmat.approximators._sequential_pruning`: ``U⁻¹`` from one
   Cholesky factorisation of the permuted ``H`` in reverse order); large weights are pruned in float32.
3. **Least-squares values.** Given the mask, each row's values solve a least-squares problem,
   ``m_S = (H_SS)⁻¹ (W H)_S`` (or, with fewer pruned than kept entries, the OBS removal of the pruned set
   ``R``: ``m = w − w_R (H⁻¹_RR)⁻¹ H⁻¹_R,:``). When these solves would cost more than ``EXACT_REFIT_MAX_WORK``
   products of ``W`` with ``H``, two conjugate-gradient steps on all rows at once approach the same values, with a
   low-rank-plus-diagonal preconditioner per row (:mod:`structmat.approximators._masked_refit`), started from the
   pruning's values and gradient. On EfficientNet-Lite0's classifier with the digit features (held-out output
   error at shares 0.1 / 0.25 / 0.5): exact values 0.1265 / 0.0572 / 0.0169 (0.14 CPU s for the solves at 0.1, 0.47
   s at 0.25), the two steps with a rank-16 preconditioner 0.1281 / 0.0583 / 0.0170 (0.04–0.08 s on top of the
   pruning), with rank 32 0.1270 / 0.0577 / 0.0170, the pruning's own values 0.1453 / 0.0616 / 0.0173. With at
   least half the entries kept ``"auto"`` takes one step (0.0171 at 0.5).

The whole fit takes 0.14 / 0.16 / 0.17 CPU s there (forming ``C`` from 4,000 rows: 0.17 s).
The magnitude-pruned matrix is a candidate too, so the result is never worse than it on the fitting inputs.
Everything is deterministic (stable orders, fixed iteration counts).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse
from scipy.linalg.lapack import dpotrf, dpotrs

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators._masked_refit import masked_cg_refit, product_dtype
from structmat.approximators._output_norm import OutputNorm
from structmat.approximators._selection import top_k_mask
from structmat.approximators._sequential_pruning import sequential_prune
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.palm4msa import Constraint
from structmat.matrices.sparse_product import Sparse
from structmat.statistics import DEFAULT_RIDGE

__all__ = ["fit_sparse", "magnitude_prune", "obs_prune", "refit_on_mask", "REFITS"]

logger = logging.getLogger(__name__)

REFITS = ("auto", "exact", "cg", "none")
#: ``refit="auto"`` solves exactly when the per-row solves cost at most this many times ``m·n²`` multiply-adds (one
#: product of the weight with ``H``); otherwise it runs ``CG_REFIT_STEPS`` preconditioned conjugate-gradient steps.
#: On the 1000×1280 classifier at share 0.1 (solves of work 0.45 m n²) the exact values took 0.14 CPU s, the steps
#: 0.08 s.
EXACT_REFIT_MAX_WORK = 0.2
#: Conjugate-gradient steps of ``refit="cg"`` (each costs one product of an ``m × n`` matrix with ``H``).
CG_REFIT_STEPS = 2
#: ``refit="auto"`` takes one step instead when at least this share of the entries is kept: the pruning's values are
#: closer to the optimum there (on the classifier at share 0.5, held-out output error 0.0173 before the steps, 0.0171
#: after one, 0.0170 after two; at 0.25: 0.0616, 0.0589, 0.0583).
ONE_STEP_MIN_SHARE = 0.5
#: Directions of ``H`` in the conjugate gradients' preconditioner (:mod:`~structmat.approximators._masked_refit`):
#: 16 rather than 32 costs 0.5-1.3 % of held-out output error on the classifier and saves a tenth of the fit's time.
CG_PRECONDITIONER_RANK = 16
#: Columns per lazy update of the sequential pruning (SparseGPT uses 128).
BLOCK_SIZE = 128


def magnitude_prune(W: np.ndarray, k: int) -> np.ndarray:
    """``W`` with all but its ``k`` largest-magnitude entries set to zero (ties: earliest position first)."""
    if k >= W.size:
        return W.copy()
    return np.where(Constraint("topk", W.shape, k).mask(W), W, 0.0)


def _largest_entries(W: np.ndarray, k: int) -> Sparse:
    """``Sparse(magnitude_prune(W, k))``, built from the kept positions: no dense copy, no dense-to-CSR pass (at
    4096×4096 those were half the fit's time)."""
    m, n = W.shape
    kept = top_k_mask(np.abs(W), min(k, W.size))
    kept &= W != 0.0                                      # exact zeros are not stored
    counts = np.count_nonzero(kept, axis=1)
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    positions = np.flatnonzero(kept)
    cols = positions - np.repeat(np.arange(0, m * n, n), counts)
    return Sparse(scipy.sparse.csr_array((W.ravel()[positions], cols, indptr), shape=W.shape))


@guarded_fit
def fit_sparse(W, budget, *, inputs=None, ridge: float = DEFAULT_RIDGE, refit: str = "auto",
               block_size: int = BLOCK_SIZE) -> Sparse:
    """A matrix with at most ``budget`` non-zeros: the largest entries of ``W``, or, given the layer's inputs, the
    entries and values that best preserve its outputs.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Non-zeros kept (a share of ``m · n`` for a float).
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        When given, minimise the output error ``‖(W − M) Xᵀ‖_F`` (module docstring) instead of ``‖W − M‖_F``.
    ridge : float
        Relative regularisation of the inputs' second moment, ``λ = ridge · tr(C) / n`` (with inputs only).
    refit : {"auto", "exact", "cg", "none"}
        How the kept values are finally set (with inputs only): exact least squares per row, two preconditioned
        conjugate-gradient steps, or the values the sequential pruning left; ``"auto"`` is exact unless that would
        cost more than ``EXACT_REFIT_MAX_WORK`` products of ``W`` with ``H``, else conjugate gradients (one step when
        at least ``ONE_STEP_MIN_SHARE`` of the entries are kept).
    block_size : int
        Columns per lazy update of the sequential pruning (with inputs only); it also sets how finely the budget
        is shared between columns.

    Returns
    -------
    Sparse
        ``nparams <= budget``; exact zeros are not stored.

    Raises
    ------
    ValueError
        for bad ``W``, ``budget``, ``inputs`` or options, or singular inputs with ``ridge=0``.

    References
    ----------
    B. Hassibi, D. G. Stork, "Second order derivatives for network pruning: Optimal Brain Surgeon", NeurIPS 1992
    (published 1993), eq. (5) (the saliency) and (4) (the update).
    E. Frantar, D. Alistarh, "SparseGPT: massive language models can be accurately pruned in one-shot", ICML 2023,
    Algorithm 1 and §3.2-3.3 (sequential updates through the Cholesky factor of ``H⁻¹``, lazy batches).
    Z. Frangella, J. A. Tropp, M. Udell, "Randomized Nyström preconditioning", SIAM J. Matrix Anal. Appl. 44 (2023),
    §3 (the low-rank-plus-diagonal preconditioner of ``refit="cg"``).

    Examples
    --------
    >>> import numpy as np
    >>> fit_sparse(np.array([[3.0, -1.0], [0.5, -4.0]]), 2).to_dense()
    array([[ 3.,  0.],
           [ 0., -4.]])
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.standard_normal((8, 6)), rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6))
    >>> import structmat
    >>> aware, plain = fit_sparse(W, 0.3, inputs=X), fit_sparse(W, 0.3)
    >>> bool(structmat.output_error(W, aware, X) < structmat.output_error(W, plain, X))
    True
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    if refit not in REFITS:
        raise ValueError(f"refit must be one of {REFITS}; got {refit!r}")
    block_size = check_positive_int(block_size, "block_size")
    if inputs is None or limit >= np.count_nonzero(W):
        return _largest_entries(W, limit)
    pruned = magnitude_prune(W, limit)
    from structmat.approximators.data_aware import as_statistics

    norm = OutputNorm(W, as_statistics(inputs, W.shape[1]), ridge)
    return Sparse(fit_sparse_values(norm, limit, refit=refit, block_size=block_size, pruned=pruned))


def fit_sparse_values(norm: OutputNorm, limit: int, *, refit: str = "auto", block_size: int = BLOCK_SIZE,
                      pruned: np.ndarray | None = None) -> np.ndarray:
    """The dense array of the data-aware sparse fit (module docstring) in the output norm ``norm``, at most
    ``limit`` non-zeros; the better of it and magnitude pruning (``pruned``, computed when not given)."""
    return fit_sparse_values_and_error(norm, limit, refit=refit, block_size=block_size, pruned=pruned)[0]


def fit_sparse_values_and_error(norm: OutputNorm, limit: int, *, refit: str = "auto", block_size: int = BLOCK_SIZE,
                                pruned: np.ndarray | None = None) -> tuple[np.ndarray, float | None]:
    """:func:`fit_sparse_values` and its squared output error ``tr((W − M) H (W − M)ᵀ)`` as tracked by the fit
    (no product with ``H``), or None when magnitude pruning is returned."""
    W = norm.W
    dtype = product_dtype(W.shape)
    values, mask, loss, gradient = sequential_prune(W, norm, limit, block_size=block_size, dtype=dtype,
                                                    gradient=refit in ("auto", "cg"))
    method = _refit_method(refit, mask)
    pruned = magnitude_prune(W, limit) if pruned is None else pruned
    if method == "exact":
        values, error2 = refit_on_mask(norm, mask)
        error = error2 * norm.energy
    else:
        steps = CG_REFIT_STEPS if method == "cg" else 0
        if steps and refit == "auto" and mask.mean() >= ONE_STEP_MIN_SHARE:
            steps = 1
        values, error = masked_cg_refit(W, norm.H_as(dtype), values, mask, steps,
                                        error=loss, gradient=gradient() if gradient else None, product_dtype=dtype,
                                        rank=CG_PRECONDITIONER_RANK, overwrite_values=True,
                                        eigenpairs=norm.top_eigenpairs(CG_PRECONDITIONER_RANK, dtype))
    worse = norm.exceeds(pruned, error, directions=norm.top_eigenpairs(CG_PRECONDITIONER_RANK, dtype)[1])
    logger.debug("fit_sparse: output error² %.6g (refit %s); magnitude pruning worse: %s", error, method, worse)
    return (values, error) if worse else (pruned, None)


def _refit_method(refit: str, mask: np.ndarray) -> str:
    if refit != "auto":
        return refit
    m, n = mask.shape
    kept = mask.sum(axis=1)
    work = float(np.sum(np.minimum(kept, n - kept).astype(np.float64) ** 3)) / 3.0
    return "exact" if work <= EXACT_REFIT_MAX_WORK * m * n * n else "cg"


def obs_prune(W: np.ndarray, H_inverse: np.ndarray, k: int, *, block_size: int = BLOCK_SIZE):
    """Sequential optimal-brain-surgeon pruning of every row of ``W`` to ``k`` non-zeros in all (module
    docstring, steps 1 and 2; :func:`~structmat.approximators._sequential_pruning.sequential_prune` of single
    entries).

    Parameters
    ----------
    W : ndarray of shape (m, n)
    H_inverse : ndarray of shape (n, n)
        The inverse of the (regularised, positive definite) input second moment.
    k : int
        Non-zeros kept in all, ``1 <= k < m·n``.
    block_size : int

    Returns
    -------
    values : ndarray of shape (m, n)
        Zero outside ``mask``; the kept weights after the updates.
    mask : bool ndarray of shape (m, n)
        ``k`` entries.
    """
    values, mask, _, _ = sequential_prune(W, H_inverse, k, block_size=block_size)
    return values, mask


def refit_on_mask(norm: OutputNorm, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """The exact output-norm optimum with the support ``mask``: one least-squares problem per row (module
    docstring, step 3). Returns the values and their relative squared output error ``error2``."""
    W, H, WH = norm.W, norm.H, norm.WH
    m, n = W.shape
    values = np.zeros_like(W)
    removed_energy = 0.0          # Σ_i ‖w_i − m_i‖²_H, accumulated from each row's normal equations
    for i in range(m):
        kept = np.flatnonzero(mask[i])
        if kept.size == 0:
            removed_energy += float(WH[i] @ W[i])
            continue
        if kept.size == n:
            values[i] = W[i]
            continue
        if 2 * kept.size > n:      # fewer pruned than kept entries: remove the pruned set (OBS, several weights)
            pruned = np.flatnonzero(~mask[i])
            Hinv = norm.inverse
            z = _solve_spd(Hinv.take(pruned, axis=0).take(pruned, axis=1), W[i, pruned])
            if z is not None:
                row = W[i] - z @ Hinv.take(pruned, axis=0)
                row[pruned] = 0.0
                values[i] = row
                removed_energy += float(z @ W[i, pruned])
                continue
        x = _solve_spd(H.take(kept, axis=0).take(kept, axis=1), WH[i, kept])
        if x is None:              # not positive definite in floating point: least squares
            x = np.linalg.lstsq(H.take(kept, axis=0).take(kept, axis=1), WH[i, kept], rcond=None)[0]
        values[i, kept] = x
        removed_energy += float(WH[i] @ W[i] - x @ WH[i, kept])
    error2 = max(removed_energy, 0.0) / norm.energy if norm.energy > 0 else 0.0
    return values, norm.error2(values) if error2 < 1e-8 else error2


def _solve_spd(A: np.ndarray, b: np.ndarray):
    """``A⁻¹ b`` for a symmetric positive definite ``A`` (LAPACK ``potrf`` + ``potrs`` on the Fortran-ordered view
    ``Aᵀ = A``, no copy; ``A`` is overwritten); None if the factorisation fails."""
    factor, info = dpotrf(A.T, lower=1, clean=0, overwrite_a=1)
    if info != 0:
        return None
    x, info = dpotrs(factor, b, lower=1)
    return x if info == 0 else None
