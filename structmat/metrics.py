"""Error measures between a dense matrix and its structured approximation."""

from __future__ import annotations

import math

import numpy as np

from structmat._validation import check_weight
from structmat.matrices.base import StructuredMatrix

__all__ = ["relative_error", "output_error"]


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


def output_error(W, M, inputs) -> float:
    """Relative output error ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` of ``M`` on the inputs ``X`` (one per row).

    Parameters
    ----------
    W : array_like of shape (m, n)
    M : StructuredMatrix or array_like of shape (m, n)
    inputs : array_like of shape (N, n), or InputStatistics
        Rows (streamed in chunks, so a memory map works), or their statistics: then the error is
        ``sqrt(tr(Δ C Δᵀ) / tr(W C Wᵀ))`` with ``Δ = W − M`` and the unregularised ``C``, equal to the row form.

    Returns
    -------
    float
        0 when ``W Xᵀ = 0`` and ``M Xᵀ = 0``; inf when only ``W Xᵀ = 0``.

    Examples
    --------
    >>> import numpy as np, structmat
    >>> rng = np.random.default_rng(0)
    >>> W, X = rng.standard_normal((8, 6)), rng.standard_normal((40, 6))
    >>> M = structmat.approximate(W, "lowrank", 0.6)
    >>> a, b = output_error(W, M, X), output_error(W, M, structmat.InputStatistics.from_rows(X))
    >>> bool(abs(a - b) < 1e-12)
    True
    """
    from structmat.statistics import InputStatistics, _as_rows

    W = check_weight(W)
    dense = M.to_dense() if isinstance(M, StructuredMatrix) else check_weight(M, "M")
    if tuple(dense.shape) != tuple(W.shape):
        raise ValueError(f"W has shape {W.shape} but M has shape {tuple(dense.shape)}")
    # exact powers of two keep every product in range, whatever the magnitudes
    peak = float(np.max(np.abs(W)))
    unit = 2.0 ** -np.frexp(peak)[1] if peak > 0 else 1.0
    W = W * unit
    delta = W - dense.astype(np.float64) * unit
    if isinstance(inputs, InputStatistics):
        if inputs.n_features != W.shape[1]:
            raise ValueError(f"inputs are statistics of {inputs.n_features} features; W has {W.shape[1]} columns")
        C = inputs.normalized_second_moment
        residual = float(np.einsum("ij,ij->", delta @ C, delta))
        reference = float(np.einsum("ij,ij->", W @ C, W))
    else:
        X = inputs if (hasattr(inputs, "shape") and not hasattr(inputs, "detach")) else _as_rows(inputs, W.shape[1], "inputs")
        if len(X.shape) != 2 or X.shape[1] != W.shape[1]:
            raise ValueError(f"inputs must have shape (N, {W.shape[1]}); got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"inputs must hold at least one row; got shape {tuple(X.shape)}")
        chunks = [np.asarray(_as_rows(X[i:i + 8192], W.shape[1], "inputs"), dtype=np.float64)
                  for i in range(0, X.shape[0], 8192)]
        if not all(np.isfinite(c).all() for c in chunks):
            raise ValueError("inputs must be finite; found NaN or Inf")
        peak_x = max(float(np.max(np.abs(c))) for c in chunks)
        unit_x = 2.0 ** -np.frexp(peak_x)[1] if peak_x > 0 else 1.0
        residual = reference = 0.0
        for c in chunks:
            c = c * unit_x
            residual += float(np.sum((c @ delta.T) ** 2))
            reference += float(np.sum((c @ W.T) ** 2))
    residual, reference = max(residual, 0.0), max(reference, 0.0)
    if reference == 0.0:
        return 0.0 if residual == 0.0 else float("inf")
    return float(np.sqrt(residual / reference))
