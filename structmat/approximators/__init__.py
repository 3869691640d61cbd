"""Approximators: fit a dense weight matrix by a structured one under a parameter budget.

``approximate(W, family, budget, **options)`` is the entry point; each family also has ``fit_<family>``.
"""

from __future__ import annotations

from structmat.approximators.dense import fit_dense
from structmat.approximators.lowrank import fit_lowrank

__all__ = ["approximate", "fit_dense", "fit_lowrank"]


def approximate(W, family: str, budget, *, inputs=None, output_weights=None, **options):
    """Fit ``W`` by a matrix of ``family`` with at most ``budget`` parameters and the smallest error found.

    Without ``inputs`` the error is ``‖W − M‖_F``; with ``inputs`` it is the layer's output error
    ``‖(W − M) Xᵀ‖_F`` on those inputs (see :mod:`structmat.approximators.data_aware`).

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite, non-empty; float32 or float64 (fitted in float64).
    family : str
        A registered family name (see ``structmat.FAMILIES`` or ``structmat families``).
    budget : int >= 1 or float in (0, 1]
        An absolute parameter count, or a share of ``m * n``. The bias is not part of it.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        The inputs the layer sees (one per row), or their :class:`~structmat.InputStatistics`. A family with its
        own data-aware method gets them as ``fit_<family>(..., inputs=stats)``; any other family is fitted by
        :func:`~structmat.approximators.data_aware.fit_with_inputs`. The plain fit is always a candidate, so the
        output error on these inputs is never worse than without them.
    output_weights : array_like of shape (out_features,), optional
        Positive weights ``d`` of the outputs: minimise ``‖diag(d) (W − M) Xᵀ‖_F`` (or ``‖diag(d) (W − M)‖_F``
        without inputs), i.e. fit ``diag(d) W`` and return ``diag(d)⁻¹`` times the result, which keeps the
        structure of the families whose :meth:`~structmat.StructuredMatrix.supports_row_scaling` is true
        (``dense``, ``lowrank``, ``sparse``, ``sparse_product``, ``monarch``). Outputs that matter more get more of the budget:
        :func:`~structmat.approximators.data_aware.fisher_output_weights` weights a classifier's logits by the
        Fisher information of its softmax (after Hsu et al., "Language model compression with weighted low-rank
        factorization", ICLR 2022, who weight rows of a weight matrix by their Fisher information).
    **options
        Passed to the family's ``fit_<family>``, except ``threads``: the most BLAS/OpenMP/torch threads the fit
        uses (default 1, or ``$STRUCTMAT_THREADS``; see :mod:`structmat.threads`).

    Returns
    -------
    StructuredMatrix
        with ``nparams <= budget``. Every family fits ``W / 2^e`` and scales the result back
        (:mod:`structmat.approximators.fit_guard`), so the relative error does not depend on the scale of ``W``
        anywhere in the float64 range; with the default options the result is the same, byte for byte, on every
        run.

    Examples
    --------
    >>> import numpy as np, structmat
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> structmat.approximate(W, "lowrank", 0.6).nparams <= 0.6 * 48
    True
    >>> X = np.random.default_rng(1).standard_normal((50, 6))
    >>> M = structmat.approximate(W, "lowrank", 0.6, inputs=X)
    >>> bool(structmat.output_error(W, M, X) <= structmat.output_error(W, structmat.approximate(W, "lowrank", 0.6), X))
    True
    """
    from structmat._validation import check_weight
    from structmat.approximators.data_aware import accepts_inputs, as_statistics, fit_with_inputs
    from structmat.approximators.fit_guard import fit_scaled
    from structmat.families import get_family

    entry = get_family(family)
    if output_weights is not None:
        from structmat.approximators.data_aware import check_output_weights

        W = check_weight(W)
        weights = check_output_weights(output_weights, W.shape[0])
        if not entry.matrix_class.supports_row_scaling():
            from structmat.families import FAMILIES

            able = sorted(f for f, e in FAMILIES.items() if e.matrix_class.supports_row_scaling())
            raise ValueError(f"output_weights need a family whose structure survives scaling its rows, one of "
                             f"{able}; {family!r} does not")
        M = approximate(weights[:, None] * W, family, budget, inputs=inputs, **options)
        return M.scale_rows(1.0 / weights)
    if inputs is None:
        return entry.fit(W, budget, **options)
    W = check_weight(W)
    stats = as_statistics(inputs, W.shape[1])
    threads = options.pop("threads", None)
    if accepts_inputs(entry.fit):
        return entry.fit(W, budget, inputs=stats, threads=threads, **options)
    # the whole data-aware fit (candidates and refinement) sees W / 4^k, like a family's own fit
    return fit_scaled(lambda V, b: fit_with_inputs(V, b, family, stats, **options), W, budget, threads=threads)
