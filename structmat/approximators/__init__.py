"""Approximators: fit a dense weight matrix by a structured one under a parameter budget.

``approximate(W, family, budget, **options)`` is the entry point; each family also has ``fit_<family>``.
"""

from __future__ import annotations

from structmat.approximators.dense import fit_dense
from structmat.approximators.lowrank import fit_lowrank

__all__ = ["approximate", "fit_dense", "fit_lowrank"]


def approximate(W, family: str, budget, **options):
    """Fit ``W`` by a matrix of ``family`` with at most ``budget`` parameters and the smallest error found.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite, non-empty; float32 or float64 (fitted in float64).
    family : str
        A registered family name (see ``structmat.FAMILIES`` or ``structmat families``).
    budget : int >= 1 or float in (0, 1]
        An absolute parameter count, or a share of ``m * n``. The bias is not part of it.
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
    """
    from structmat.families import get_family

    return get_family(family).fit(W, budget, **options)
