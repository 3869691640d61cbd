"""Error measures between a dense matrix and its structured approximation."""

from __future__ import annotations

import numpy as np

from structmat._validation import check_weight
from structmat.matrices.base import StructuredMatrix

__all__ = ["relative_error"]


def relative_error(W, M: StructuredMatrix) -> float:
    """Relative Frobenius error ``||W - M||_F / ||W||_F`` (computed in float64; 0 for ``W = 0`` and ``M = 0``)."""
    W = check_weight(W)
    if tuple(W.shape) != tuple(M.shape):
        raise ValueError(f"W has shape {W.shape} but M has shape {M.shape}")
    residual = np.linalg.norm(W - M.to_dense().astype(np.float64))
    norm = np.linalg.norm(W)
    if norm == 0.0:
        return 0.0 if residual == 0.0 else float("inf")
    return float(residual / norm)
