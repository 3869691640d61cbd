"""What every ``fit_<family>`` shares: input checks, a thread limit, scale invariance and a finite result.

:func:`guarded_fit` wraps a family's fit ``fit(W, budget, **options)``. The registry applies it to every family's
fit (so :func:`structmat.approximate`, sweeps and studies always go through it) and each ``fit_<family>`` is
defined with it, so direct calls behave the same. The wrapper

1. checks ``W`` (:func:`structmat._validation.check_weight`: real, 2-D, non-empty, finite);
2. runs the fit with at most ``threads`` BLAS/OpenMP/torch threads (default :func:`structmat.threads.default_threads`,
   i.e. one; see :mod:`structmat.threads`);
3. fits ``W / s`` with ``s = max|W|`` (so the fitted matrix has largest magnitude exactly 1) and returns
   ``fit.scaled(s)``. The fit sees the same numbers whatever the scale of ``W`` from the smallest subnormal to the
   largest float64: no squared norm overflows above ~1e154 or underflows below ~1e-154. For ``2^k W`` the
   division gives the very same bits as for ``W`` (``(2^k w) / (2^k s)`` rounds like ``w / s``), so the result is
   ``2^k`` times the same fit. For ``c W`` with any other ``c`` (``W · 10^k``, a unit change) the rounded
   ``fl(c W)`` is a different matrix, but ``fl(c W) / fl(c s)`` differs from ``W / s`` by at most about two
   units in the last place per entry: the fit sees the same matrix up to rounding, and the relative error of the
   result moves only by what the fit makes of a rounding-level change of its input. (Dividing by the power of two
   below ``max|W|`` instead would be exact, but then ``W`` and ``10^k W`` are fitted as two matrices a factor
   between 1/2 and 2 apart, and the fits with absolute step sizes — Adam's learning rate in ``ldr`` — or absolute
   floors do not scale exactly with their input);
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

__all__ = ["guarded_fit", "fit_scaled", "is_guarded", "scale_exponent", "normalising_scale"]

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


def normalising_scale(W: np.ndarray) -> float:
    """``max|W|``, the number every fit divides ``W`` by (1.0 for an all-zero ``W``; module docstring, step 3)."""
    peak = float(np.max(np.abs(W))) if W.size else 0.0
    if peak == 0.0 or not math.isfinite(peak):
        return 1.0
    return peak


def _divided(M, scale: float):
    """``M.scaled(1 / scale)`` in steps that stay in range (``1 / scale`` itself overflows for a subnormal scale)."""
    mantissa, exponent = math.frexp(scale)
    half = -exponent // 2
    for factor in (1.0 / mantissa, math.ldexp(1.0, half), math.ldexp(1.0, -exponent - half)):
        if factor != 1.0:
            M = M.scaled(factor)
    return M


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
    # a fit called from inside another sees a normalised W or a part of one: an exact power of two suffices there
    scale = math.ldexp(1.0, scale_exponent(W)) if _inside.get() else normalising_scale(W)

    def run(V):
        if _inside.get() and threads is None:
            return fit(V, *args, **options)
        token = _inside.set(True)
        try:
            with limit_threads(threads):
                return fit(V, *args, **options)
        finally:
            _inside.reset(token)

    scaling = scale != 1.0
    if scaling and getattr(options.get("init"), "scaled", None) is not None:  # a warm start carries W's units
        options = dict(options, init=_divided(options["init"], scale))
    M = run(W / scale if scaling else W)
    if scaling:
        try:
            with np.errstate(over="ignore"):  # an overflow is reported by the finiteness check below
                M = M.scaled(scale)
        except NotImplementedError:  # a family without scaled() yet: fit W as it is (the tests flag the family)
            logger.warning("%s cannot be scaled (no scaled() method); fitting W unscaled", type(M).__name__)
            M = run(W)
    _check_finite(M, getattr(M, "family", getattr(fit, "__name__", "structured")), W)
    return M


def guarded_fit(fit):
    """Wrap ``fit(W, budget, *args, **options)`` as described in the module docstring; adds ``threads=``.

    Applying it twice is harmless (a guarded function is returned as is), and a guarded fit called from inside
    another runs without the second thread limit and divides its ``W`` (already normalised, or a part of such a
    matrix) by the power of two below its largest magnitude only, which is exact (a no-op for a normalised ``W``).
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
