"""The dense reference: the full matrix, ``nparams = m * n``."""

from __future__ import annotations

import numpy as np

from structmat.matrices.base import StructuredMatrix, freeze

__all__ = ["Dense"]


class Dense(StructuredMatrix):
    """A plain dense matrix, the reference every structured family is compared with.

    Parameters
    ----------
    W : ndarray of shape (m, n)
        The matrix, copied and made read-only.
    dtype : float32 or float64, optional
        Defaults to ``W``'s dtype if it is float32, else float64.

    Examples
    --------
    >>> import numpy as np
    >>> M = Dense(np.arange(6.0).reshape(2, 3))
    >>> M @ np.ones(3)
    array([ 3., 12.])
    >>> M.nparams
    6
    """

    family = "dense"
    _scale_arrays = ("W",)
    _row_scale_arrays = ("W",)

    def __init__(self, W, dtype=None) -> None:
        W = np.asarray(W)
        if W.ndim != 2:
            raise ValueError(f"W must be 2-D; got shape {W.shape}")
        if dtype is None:
            dtype = np.float32 if W.dtype == np.float32 else np.float64
        super().__init__(W.shape, dtype)
        self.W = freeze(W, self.dtype)

    @property
    def nparams(self) -> int:
        """``m * n``."""
        return self.W.size

    def _matmat(self, X):
        return self.W @ X

    def _rmatmat(self, Y):
        return self.W.T @ Y

    def transpose(self) -> "Dense":
        return Dense(self.W.T)

    def to_dense(self) -> np.ndarray:
        return self.W.copy()

    def _arrays(self):
        return {"W": self.W}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls(arrays["W"], dtype=arrays["W"].dtype)

    @classmethod
    def random(cls, shape, *, seed=None, dtype=np.float64) -> "Dense":
        """A Gaussian matrix of ``shape`` (for tests and benchmarks)."""
        return cls(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)
