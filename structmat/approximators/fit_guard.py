"""What every ``fit_<family>`` shares: input checks, a thread limit, scale invariance and a finite result.

:func:`guarded_fit` wraps a family's fit ``fit(W, budget, **options)``. The registry applies it to every family's
fit (so :func:`structmat.approximate`, sweeps and studies always go through it) and each ``fit_<family>`` is
defined with it, so direct calls behave the same. The wrapper

1. checks ``W`` (:func:`structmat._validation.check_weight`: real, 2-D, non-empty, finite);
2. runs the fit with at most ``threads`` BLAS/OpenMP/torch threads (default :func:`structmat.threads.default_threads`,
   i.e. one; see :mod:`structmat.threads`);
3. fits ``W / s`` with ``s = 2^e`` the power of two with ``1 <= max|W| / s < 2`` and returns ``fit.scaled(s)``.
   Dividing by a power of two is exact, so the fit sees the same numbers whatever the scale of ``W`` from the
   smallest subnormal to the largest float64: no squared norm overflows above ~1e154 or underflows below ~1e-154,
   and the relative error of the result does not depend on the scale;
4. refuses a result with NaN or Inf values (a clear ``ValueError``; never a matrix that silently holds them).

Options other than ``threads`` pass through untouched (a family may add any, e.g. data-aware ``inputs=``, whose
values do not carry ``W``'s units), except a warm start ``init=`` (a structured matrix, e.g. the fit at a smaller
budget), which does carry them and is scaled with ``W``.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math

import numpy as np

from structmat._validation import check_weight
from structmat.threads import limit_threads

__all__ = ["guarded_fit", "fit_scaled", "is_guarded", "scale_exponent"]

logger = logging.getLogger(__name__)

_GUARDED = "__structmat_guarded__"
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("structmat_inside_fit", default=False)


def scale_exponent(W: np.ndarray) -> int:
    """The ``e`` with ``1 <= max|W| / 2^e < 2`` (0 for an all-zero ``W``); ``-1074 <= e <= 1023`` for float64.

    So ``W`` and ``2^k W`` are fitted as the very same matrix, for any integer ``k`` that keeps ``2^k W`` finite and
    normal."""
    peak = float(np.max(np.abs(W))) if W.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return 0
    return math.frexp(peak)[1] - 1


def _check_finite(M, family: str, W: np.ndarray) -> None:
    for name, array in M._arrays().items():
        array = np.asarray(array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            peak = float(np.max(np.abs(W)))
            raise ValueError(f"the {family} fit of a {W.shape[0]}x{W.shape[1]} matrix (largest |entry| {peak:.3g}) "
                             f"gave NaN or Inf values in its array {name!r}: the fitted factors do not fit in float64 "
                             "at this scale; divide W by a power of two and scale the result back with .scaled()")


def fit_scaled(fit, W, *args, threads=None, **options):
    """``fit(W, *args, **options)`` through the four steps of the module docstring; the body of :func:`guarded_fit`,
    also used for fits that are not a family's own (the data-aware path of :func:`structmat.approximate`)."""
    W = check_weight(W)
    exponent = scale_exponent(W)

    def run(V):
        if _inside.get() and threads is None:
            return fit(V, *args, **options)
        token = _inside.set(True)
        try:
            with limit_threads(threads):
                return fit(V, *args, **options)
        finally:
            _inside.reset(token)

    if exponent and getattr(options.get("init"), "scaled", None) is not None:  # a warm start carries W's units
        options = dict(options, init=options["init"].scaled(math.ldexp(1.0, -exponent)))
    M = run(np.ldexp(W, -exponent) if exponent else W)
    if exponent:
        try:
            with np.errstate(over="ignore"):  # an overflow is reported by the finiteness check below
                M = M.scaled(math.ldexp(1.0, exponent))
        except NotImplementedError:  # a family without scaled() yet: fit W as it is (the tests flag the family)
            logger.warning("%s cannot be scaled (no scaled() method); fitting W unscaled", type(M).__name__)
            M = run(W)
    _check_finite(M, getattr(M, "family", getattr(fit, "__name__", "structured")), W)
    return M


def guarded_fit(fit):
    """Wrap ``fit(W, budget, *args, **options)`` as described in the module docstring; adds ``threads=``.

    Applying it twice is harmless (a guarded function is returned as is), and a guarded fit called from inside
    another runs without the second thread limit (its ``W`` is already scaled, so its scale step is a no-op).
    """
    if is_guarded(fit):
        return fit

    @functools.wraps(fit)
    def guarded(W, *args, threads=None, **options):
        return fit_scaled(fit, W, *args, threads=threads, **options)

    setattr(guarded, _GUARDED, True)
    return guarded


def is_guarded(fit) -> bool:
    """Whether ``fit`` went through :func:`guarded_fit`."""
    return bool(getattr(fit, _GUARDED, False))
