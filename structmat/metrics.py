"""Error measures between a dense matrix and its structured approximation."""

from __future__ import annotations

import math

import numpy as np

from structmat._validation import check_weight
from structmat.matrices.base import StructuredMatrix

__all__ = ["relative_error"]


def relative_error(W, M: StructuredMatrix) -> float:
    """Relative Frobenius error ``||W - M||_F / ||W||_F`` (computed in float64; 0 for ``W = 0`` and ``M = 0``).

    Both matrices are divided by the same power of two (near the largest entry of either) before the norms are
    taken, so the result neither overflows nor underflows anywhere in the float64 range (squares of entries above
    ~1e154 or below ~1e-154 would) and does not depend on the scale of ``W``. ``inf`` when ``W = 0`` and
    ``M != 0``; never NaN.
    """
    W = check_weight(W)
    if tuple(W.shape) != tuple(M.shape):
        raise ValueError(f"W has shape {W.shape} but M has shape {M.shape}")
    D = np.asarray(M.to_dense(), dtype=np.float64)
    if not np.isfinite(D).all():
        raise ValueError(f"M has NaN or Inf entries ({type(M).__name__}); its relative error is undefined")
    peak = max(float(np.max(np.abs(W))), float(np.max(np.abs(D))))
    if peak == 0.0:
        return 0.0
    exponent = math.frexp(peak)[1]
    residual = float(np.linalg.norm(np.ldexp(W, -exponent) - np.ldexp(D, -exponent)))
    norm = float(np.linalg.norm(np.ldexp(W, -exponent)))
    if norm == 0.0:
        return math.inf
    return residual / norm
