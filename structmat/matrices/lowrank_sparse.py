"""Low rank plus sparse: ``M = U Vᵀ + S`` with ``S`` in CSR.

Trained weights often look like a flat spectrum plus a few large entries: neither a low-rank nor a sparse matrix
alone captures both. The sum does (robust PCA, Candès, Li, Ma & Wright 2011; GoDec, Zhou & Tao 2011), and OATS
(Zhang et al., ICLR 2025) compresses network weights in this form. ``U`` is ``(m, r)``, ``V`` is ``(n, r)`` and
``S`` stores ``nnz`` values with their CSR indices. Either part may be empty (``r = 0`` is plain sparsity,
``nnz = 0`` plain low rank), so the family contains both.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from structmat.matrices._sparse_product_kernels import csr_matmat, csr_rmatmat, csr_to_dense
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze
from structmat.matrices.sparse_product import _as_csr, _check_csr

__all__ = ["LowRankSparse"]


class LowRankSparse(StructuredMatrix):
    """A low-rank matrix plus a sparse one, ``M = U @ V.T + S``.

    Parameters
    ----------
    U : ndarray of shape (m, r)
    V : ndarray of shape (n, r)
        ``r = 0`` (no low-rank part) is allowed.
    S : scipy sparse matrix or ndarray of shape (m, n)
        A dense array stores its non-zeros; a scipy sparse matrix its stored entries (duplicates summed).
    dtype : float32 or float64, optional
        Defaults to float32 if every part is float32, else float64.

    Notes
    -----
    .. math:: M = U V^\\top + S, \\qquad \\text{nparams} = r(m + n) + \\operatorname{nnz}(S).

    A deployment stores ``S`` in CSR: ``nnz`` int32 column indices and ``m + 1`` int32 row pointers
    (none when ``S`` is empty), so ``nbytes = 4 nparams + 4 nindices``. ``M @ x`` costs ``nparams``
    multiply-adds per column of ``x``: ``U (Vᵀ x) + S x``.

    References
    ----------
    T. Zhou, D. Tao, "GoDec: Randomized low-rank & sparse matrix decomposition in noisy case", ICML 2011.
    S. Zhang, V. Papyan, "OATS: Outlier-aware pruning through sparse and low rank decomposition", ICLR 2025.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> S = np.zeros((8, 6)); S[1, 2], S[5, 0] = 3.0, -2.0
    >>> M = LowRankSparse(rng.standard_normal((8, 1)), rng.standard_normal((6, 1)), S)
    >>> M
    LowRankSparse(shape=(8, 6), dtype=float64, nparams=16 (33.3%), rank=1, nnz=2)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    >>> M.nindices, M.nbytes
    (11, 108)
    """

    family = "lowrank_sparse"

    def __init__(self, U, V, S, dtype=None) -> None:
        U, V = np.asarray(U), np.asarray(V)
        indptr, indices, data, shape = _as_csr(S, 0)
        self._init_parts(U, V, indptr, indices, data, shape, dtype)

    @classmethod
    def from_csr(cls, U, V, indptr, indices, data, dtype=None) -> "LowRankSparse":
        """Build from the factors and the CSR arrays of ``S`` (row pointers of length ``m + 1``, column indices
        strictly increasing within a row, one value each). Stored zeros stay stored."""
        U, V = np.asarray(U), np.asarray(V)
        out = cls.__new__(cls)
        shape = (U.shape[0] if U.ndim == 2 else -1, V.shape[0] if V.ndim == 2 else -1)
        out._init_parts(U, V, np.asarray(indptr), np.asarray(indices), np.asarray(data), shape, dtype)
        return out

    def _init_parts(self, U, V, indptr, indices, data, shape, dtype) -> None:
        if U.ndim != 2 or V.ndim != 2:
            raise ValueError(f"U and V must be 2-D; got shapes {U.shape} and {V.shape}")
        if U.shape[1] != V.shape[1]:
            raise ValueError(
                f"U (m, r) and V (n, r) must have the same number of columns r; got shapes {U.shape} and {V.shape}")
        if U.dtype.kind not in "fiu" or V.dtype.kind not in "fiu" or np.asarray(data).dtype.kind not in "fiu":
            raise TypeError(f"U, V and S must hold real numbers; got dtypes {U.dtype}, {V.dtype} and "
                            f"{np.asarray(data).dtype}")
        m, n = U.shape[0], V.shape[0]
        if tuple(shape) != (m, n):
            raise ValueError(f"S must have shape (m, n) = ({m}, {n}) to match U {U.shape} and V {V.shape}; "
                             f"got {tuple(shape)}")
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise TypeError("the CSR row pointers and column indices of S must be integer arrays")
        if max(m, n, indices.size) > np.iinfo(np.int32).max:
            raise ValueError(f"S of shape {(m, n)} with {indices.size} values is too large for int32 CSR indices")
        _check_csr(indptr, indices, np.asarray(data), (m, n), 0)
        if not (np.all(np.isfinite(U)) and np.all(np.isfinite(V))):
            raise ValueError("U and V must be finite")
        if U.shape[1] == 0 and indices.size == 0:
            raise ValueError("a LowRankSparse matrix needs rank >= 1 or at least one stored value in S; got neither")
        if dtype is None:
            parts = (U, V, np.asarray(data))
            dtype = np.float32 if all(p.dtype == np.float32 for p in parts) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((m, n), dtype)
        self.U = freeze(U, dtype)
        self.V = freeze(V, dtype)
        self.indptr = freeze(indptr, np.int32)
        self.indices = freeze(indices, np.int32)
        self.data = freeze(data, dtype)

    # ---------------------------------------------------------------- structure
    @property
    def rank(self) -> int:
        return self.U.shape[1]

    @property
    def nnz(self) -> int:
        """Stored values of ``S``."""
        return self.data.size

    @property
    def nparams(self) -> int:
        """``r (m + n) + nnz(S)``."""
        return self.U.size + self.V.size + self.data.size

    @property
    def nindices(self) -> int:
        """``nnz + m + 1`` CSR column indices and row pointers of ``S``; 0 when ``S`` is empty."""
        return self.indices.size + self.indptr.size if self.nnz else 0

    def sparse_part(self) -> scipy.sparse.csr_array:
        """``S`` as a ``scipy.sparse.csr_array`` (a copy)."""
        return scipy.sparse.csr_array((self.data.copy(), self.indices.copy(), self.indptr.copy()), shape=self.shape)

    def lowrank_part(self):
        """``U Vᵀ`` as a :class:`~structmat.matrices.lowrank.LowRank` matrix, or None when ``r = 0``."""
        from structmat.matrices.lowrank import LowRank

        return LowRank(self.U, self.V, dtype=self.dtype) if self.rank else None

    def scaled(self, factor: float) -> "LowRankSparse":
        """``factor · M`` in the same structure: ``S``'s values times ``factor``, and ``U``, ``V`` times
        ``sqrt(|factor|)`` (with the sign on ``U``) as :meth:`LowRank.scaled` does, so balanced factors stay
        balanced (exact for even powers of two)."""
        factor = float(factor)
        if not np.isfinite(factor):
            raise ValueError(f"factor must be a finite real number; got {factor}")
        root = self.dtype.type(np.sqrt(abs(factor)))
        return type(self).from_csr(self.U * (root if factor >= 0 else -root), self.V * root, self.indptr,
                                   self.indices, self.data * self.dtype.type(factor), dtype=self.dtype)

    # ---------------------------------------------------------------- products
    def _matmat(self, X):
        out = np.empty((self.shape[0], X.shape[1]), dtype=self.dtype)
        csr_matmat(self.indptr, self.indices, self.data, X, out)
        if self.rank:
            out += self.U @ (self.V.T @ X)
        return out

    def _rmatmat(self, Y):
        out = np.empty((self.shape[1], Y.shape[1]), dtype=self.dtype)
        csr_rmatmat(self.indptr, self.indices, self.data, Y, out)
        if self.rank:
            out += self.V @ (self.U.T @ Y)
        return out

    def to_dense(self) -> np.ndarray:
        D = self.U @ self.V.T if self.rank else np.zeros(self.shape, dtype=self.dtype)
        D = np.ascontiguousarray(D, dtype=self.dtype)
        csr_to_dense(self.indptr, self.indices, self.data, D)
        return D

    def transpose(self) -> "LowRankSparse":
        """``Mᵀ = V Uᵀ + Sᵀ`` (the CSR of ``Sᵀ`` is built)."""
        t = scipy.sparse.csr_array(self.sparse_part().T)
        t.sort_indices()
        return type(self).from_csr(self.V, self.U, t.indptr, t.indices, t.data, dtype=self.dtype)

    # ---------------------------------------------------------------- files
    def _arrays(self):
        return {"U": self.U, "V": self.V, "data": self.data, "indices": self.indices, "indptr": self.indptr}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls.from_csr(arrays["U"], arrays["V"], arrays["indptr"], arrays["indices"], arrays["data"],
                            dtype=np.result_type(arrays["U"], arrays["V"], arrays["data"]))

    def _repr_extra(self) -> str:
        return f"rank={self.rank}, nnz={self.nnz}"

    @classmethod
    def random(cls, shape, *, rank: int = 2, density: float = 0.05, seed=None,
               dtype=np.float64) -> "LowRankSparse":
        """A random rank-``rank`` matrix with Gaussian factors plus ``max(1, round(density · m · n))`` sparse
        entries at uniformly random positions, of magnitude 1 to 3 times the low-rank part's typical entry and
        random sign (for tests, benchmarks and exact-recovery checks)."""
        m, n = shape
        rank = max(0, min(rank, m, n))
        rng = np.random.default_rng(seed)
        U, V = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
        count = max(1, round(density * m * n))
        S = np.zeros((m, n))
        scale = np.sqrt(max(rank, 1))
        S.ravel()[rng.choice(m * n, count, replace=False)] = (rng.choice([-1.0, 1.0], count)
                                                             * rng.uniform(1.0, 3.0, count) * scale)
        return cls(U, V, S, dtype=dtype)
