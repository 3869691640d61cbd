"""Low rank: ``M = U Vᵀ`` with ``U`` of shape (m, r) and ``V`` of shape (n, r); ``nparams = r (m + n)``.

The best rank-r approximation in Frobenius and spectral norm is the truncated SVD (Eckart & Young, 1936).
"""

from __future__ import annotations

import numpy as np

from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["LowRank"]


class LowRank(StructuredMatrix):
    """A rank-r matrix in factored form, ``M = U @ V.T``.

    Parameters
    ----------
    U : ndarray of shape (m, r)
    V : ndarray of shape (n, r)
    dtype : float32 or float64, optional
        Defaults to float32 if both factors are float32, else float64.

    Notes
    -----
    .. math:: M = U V^\\top, \\qquad \\text{nparams} = r(m + n).

    Products cost ``r (m + n)`` multiply-adds per column: ``M x = U (Vᵀ x)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> M = LowRank(rng.standard_normal((8, 2)), rng.standard_normal((6, 2)))
    >>> M
    LowRank(shape=(8, 6), dtype=float64, nparams=28 (58.3%), rank=2)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    """

    family = "lowrank"

    def __init__(self, U, V, dtype=None) -> None:
        U, V = np.asarray(U), np.asarray(V)
        if U.ndim != 2 or V.ndim != 2:
            raise ValueError(f"U and V must be 2-D; got shapes {U.shape} and {V.shape}")
        if U.shape[1] != V.shape[1]:
            raise ValueError(
                f"U (m, r) and V (n, r) must have the same number of columns r; got shapes {U.shape} and {V.shape}"
            )
        if U.shape[1] < 1:
            raise ValueError(f"rank must be >= 1; got U of shape {U.shape}")
        if dtype is None:
            dtype = np.float32 if (U.dtype == np.float32 and V.dtype == np.float32) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((U.shape[0], V.shape[0]), dtype)
        self.U = freeze(U, dtype)
        self.V = freeze(V, dtype)

    @property
    def rank(self) -> int:
        return self.U.shape[1]

    @property
    def nparams(self) -> int:
        """``r (m + n)``."""
        return self.U.size + self.V.size

    def _matmat(self, X):
        return self.U @ (self.V.T @ X)

    def _rmatmat(self, Y):
        return self.V @ (self.U.T @ Y)

    def transpose(self) -> "LowRank":
        return LowRank(self.V, self.U, dtype=self.dtype)

    def to_dense(self) -> np.ndarray:
        return self.U @ self.V.T

    _row_scale_arrays = ("U",)  # M = U Vᵀ: row i of M is row i of U times Vᵀ

    def scaled(self, factor) -> "LowRank":
        """``factor * M`` with both factors multiplied by ``sqrt(|factor|)``, so balanced factors stay balanced
        (exact for even powers of two, within one rounding otherwise)."""
        factor = float(factor)
        if not np.isfinite(factor):
            raise ValueError(f"factor must be a finite real number; got {factor}")
        root = self.dtype.type(np.sqrt(abs(factor)))
        return LowRank(self.U * (root if factor >= 0 else -root), self.V * root, dtype=self.dtype)

    def _arrays(self):
        return {"U": self.U, "V": self.V}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls(arrays["U"], arrays["V"], dtype=np.result_type(arrays["U"], arrays["V"]))

    def _repr_extra(self) -> str:
        return f"rank={self.rank}"

    @classmethod
    def random(cls, shape, *, rank: int = 3, seed=None, dtype=np.float64) -> "LowRank":
        """A random rank-``rank`` matrix with Gaussian factors (for tests and benchmarks)."""
        m, n = shape
        rank = max(1, min(rank, m, n))
        rng = np.random.default_rng(seed)
        return cls(rng.standard_normal((m, rank)), rng.standard_normal((n, rank)), dtype=dtype)
