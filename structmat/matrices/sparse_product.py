"""Products of sparse matrices, ``M = S_1 S_2 ⋯ S_J``, each factor in CSR; one factor is plain sparsity.

The factors form any rectangular chain: ``S_1`` is ``(m, d_1)``, ``S_j`` is ``(d_{j-1}, d_j)`` and ``S_J`` is
``(d_{J-1}, n)``, so ``M x = S_1 (S_2 (⋯ (S_J x)))`` applies ``S_J`` first. Each factor stores its non-zero values
(the parameters) and its CSR indices, which are fixed: column indices (one per value) and row pointers.
Products cost one multiply-add per stored value and column of ``x``.

Le Magoarou & Gribonval, "Flexible multilayer sparse approximations of matrices and applications",
IEEE J. Sel. Topics Signal Process. 10(4), 2016, eq. (1) (the FAµST model ``λ S_1 ⋯ S_J``; here ``λ`` is folded
into a factor). With one factor this is magnitude sparsity (:class:`Sparse`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from structmat.matrices._sparse_product_kernels import csr_matmat, csr_rmatmat, csr_to_dense, dense_to_csr
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["SparseProduct", "Sparse"]


def _as_csr(factor, j: int):
    """A factor (scipy sparse or dense 2-D array) as canonical CSR ``(indptr, indices, data, shape)``."""
    if scipy.sparse.issparse(factor):
        csr = scipy.sparse.csr_array(factor, copy=True)
        csr.sum_duplicates()
        csr.sort_indices()
        if csr.dtype.kind not in "fiu":
            raise TypeError(f"factor {j} must hold real numbers; got dtype {csr.dtype}")
        return csr.indptr, csr.indices, csr.data, csr.shape
    A = np.asarray(factor)
    if A.dtype.kind not in "fiu":
        raise TypeError(f"factor {j} must be a real 2-D array or a scipy sparse matrix; got dtype {A.dtype}")
    if A.ndim != 2:
        raise ValueError(f"factor {j} must be 2-D; got shape {A.shape}")
    indptr, indices, data = dense_to_csr(A)
    return indptr, indices, data, A.shape


def _check_csr(indptr, indices, data, shape, j: int) -> None:
    rows, cols = shape
    if rows < 1 or cols < 1:
        raise ValueError(f"factor {j}: shape must have two positive sides; got {tuple(shape)}")
    if indices.ndim != 1 or data.ndim != 1:
        raise ValueError(f"factor {j}: indices and data must be 1-D arrays; got shapes {indices.shape} and "
                         f"{data.shape}")
    if indptr.shape != (rows + 1,):
        raise ValueError(f"factor {j}: indptr must have {rows + 1} entries for {rows} rows; got {indptr.shape}")
    nnz = int(indptr[-1]) if rows >= 0 else 0
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or nnz != indices.size or indices.size != data.size:
        raise ValueError(
            f"factor {j}: not a valid CSR structure (indptr must start at 0, not decrease and end at nnz="
            f"{indices.size}; indices and data must have the same length; got indptr[-1]={nnz}, "
            f"{indices.size} indices, {data.size} values)"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= cols):
        raise ValueError(f"factor {j}: column indices must lie in [0, {cols}); got range "
                         f"[{indices.min()}, {indices.max()}]")
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    if indices.size > 1 and np.any((np.diff(indices) <= 0) & (np.diff(row_of) == 0)):
        raise ValueError(f"factor {j}: column indices must be strictly increasing within each row")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"factor {j}: values must be finite")


class SparseProduct(StructuredMatrix):
    """A product of sparse factors ``S_1 S_2 ⋯ S_J`` stored in CSR (fixed indices, stored values).

    Parameters
    ----------
    factors : sequence of scipy sparse matrices or 2-D arrays
        ``S_1, …, S_J`` from left to right, shapes ``(m, d_1), (d_1, d_2), …, (d_{J-1}, n)``. A dense array stores
        its non-zeros; a scipy sparse matrix stores its stored entries (duplicates summed).
    dtype : float32 or float64, optional
        Defaults to float32 if every factor is float32, else float64.

    Notes
    -----
    .. math:: M = S_1 S_2 \\cdots S_J, \\qquad \\text{nparams} = \\sum_j \\operatorname{nnz}(S_j).

    A deployment stores each factor in CSR: ``nnz_j`` float32 values plus ``nnz_j`` int32 column indices and
    ``rows_j + 1`` int32 row pointers, so ``nindices = Σ_j (nnz_j + rows_j + 1)`` and
    ``nbytes = 4 nparams + 4 nindices``. ``M @ x`` costs ``nparams`` multiply-adds per column of ``x``.

    References
    ----------
    L. Le Magoarou, R. Gribonval, "Flexible multilayer sparse approximations of matrices and applications",
    IEEE JSTSP 10(4):688–700, 2016, eq. (1).

    Examples
    --------
    >>> import numpy as np
    >>> S1 = np.array([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [1, 0, 1]])
    >>> S2 = np.array([[0.0, 1, 0, 0, 0, 2], [1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]])
    >>> M = SparseProduct([S1, S2])
    >>> M
    SparseProduct(shape=(4, 6), dtype=float64, nparams=10 (41.7%), factors=(4, 3) nnz 5 · (3, 6) nnz 5)
    >>> bool(np.allclose(M @ np.arange(6.0), S1 @ S2 @ np.arange(6.0)))
    True
    >>> M.nindices, M.nbytes
    (19, 116)
    """

    family = "sparse_product"
    _scale_arrays = ("data_0",)  # the first factor's values

    def scale_rows(self, weights) -> "SparseProduct":
        """``diag(weights) @ M``: the values of the first factor's row ``i`` times ``weights[i]`` (same support)."""
        weights = self._row_weights(weights)
        arrays = dict(self._arrays())
        indptr = arrays["indptr_0"]
        arrays["data_0"] = (arrays["data_0"] * np.repeat(weights, np.diff(indptr))).astype(arrays["data_0"].dtype)
        return type(self)._from_arrays(arrays, self._meta())

    def __init__(self, factors, dtype=None) -> None:
        if isinstance(factors, np.ndarray) or scipy.sparse.issparse(factors):
            raise TypeError("factors must be a sequence of matrices (S_1, ..., S_J); got a single array")
        csr = [_as_csr(f, j) for j, f in enumerate(factors)]
        self._init_from_csr(csr, dtype)

    def _init_from_csr(self, csr, dtype) -> None:
        if not csr:
            raise ValueError("factors must hold at least one matrix; got none")
        for j in range(1, len(csr)):
            if csr[j - 1][3][1] != csr[j][3][0]:
                raise ValueError(
                    f"factor shapes do not chain: factor {j - 1} has shape {tuple(csr[j - 1][3])} and factor {j} "
                    f"has shape {tuple(csr[j][3])}; need columns of S_j == rows of S_(j+1)"
                )
        if dtype is None:
            dtype = np.float32 if all(c[2].dtype == np.float32 for c in csr) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((csr[0][3][0], csr[-1][3][1]), dtype)
        factors = []
        for j, (indptr, indices, data, shape) in enumerate(csr):
            indptr, indices = np.asarray(indptr), np.asarray(indices)
            if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
                raise TypeError(f"factor {j}: indptr and indices must be integer arrays")
            if max(indptr.max(initial=0), indices.size, shape[1]) > np.iinfo(np.int32).max:
                raise ValueError(f"factor {j} of shape {tuple(shape)} is too large for int32 CSR indices")
            shape = (int(shape[0]), int(shape[1]))
            _check_csr(indptr, indices, np.asarray(data), shape, j)
            factors.append((freeze(indptr, np.int32), freeze(indices, np.int32), freeze(data, dtype), shape))
        self._factors = tuple(factors)

    # ---------------------------------------------------------------- structure
    @property
    def num_factors(self) -> int:
        return len(self._factors)

    @property
    def factor_shapes(self) -> list[tuple[int, int]]:
        return [f[3] for f in self._factors]

    @property
    def factor_nnz(self) -> list[int]:
        return [f[2].size for f in self._factors]

    def csr_factors(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]]:
        """The factors as read-only CSR ``(indptr, indices, data, shape)`` tuples, left to right."""
        return list(self._factors)

    def factors(self) -> list:
        """The factors as ``scipy.sparse.csr_array`` copies, left to right."""
        return [scipy.sparse.csr_array((d.copy(), i.copy(), p.copy()), shape=s) for p, i, d, s in self._factors]

    @property
    def nparams(self) -> int:
        """``Σ_j nnz(S_j)``: the stored values."""
        return sum(f[2].size for f in self._factors)

    @property
    def nindices(self) -> int:
        """``Σ_j (nnz_j + rows_j + 1)``: int32 column indices plus CSR row pointers."""
        return sum(f[1].size + f[0].size for f in self._factors)

    # ---------------------------------------------------------------- products
    def _matmat(self, X):
        Z = X
        for indptr, indices, data, shape in reversed(self._factors):
            out = np.empty((shape[0], Z.shape[1]), dtype=self.dtype)
            csr_matmat(indptr, indices, data, Z, out)
            Z = out
        return Z

    def _rmatmat(self, Y):
        Z = Y
        for indptr, indices, data, shape in self._factors:
            out = np.empty((shape[1], Z.shape[1]), dtype=self.dtype)
            csr_rmatmat(indptr, indices, data, Z, out)
            Z = out
        return Z

    def to_dense(self) -> np.ndarray:
        indptr, indices, data, shape = self._factors[-1]
        D = np.zeros(shape, dtype=self.dtype)
        csr_to_dense(indptr, indices, data, D)
        for indptr, indices, data, shape in reversed(self._factors[:-1]):
            out = np.empty((shape[0], D.shape[1]), dtype=self.dtype)
            csr_matmat(indptr, indices, data, D, out)
            D = out
        return D

    def transpose(self) -> "SparseProduct":
        """``Mᵀ = S_Jᵀ ⋯ S_1ᵀ``, the factors transposed (CSR of each transpose) in reverse order."""
        out = type(self).__new__(type(self))
        csr = []
        for f in reversed(self.factors()):
            t = scipy.sparse.csr_array(f.T)
            t.sort_indices()
            csr.append((t.indptr, t.indices, t.data, t.shape))
        out._init_from_csr(csr, self.dtype)
        return out

    # ---------------------------------------------------------------- files
    def _arrays(self):
        arrays = {}
        for j, (indptr, indices, data, _) in enumerate(self._factors):
            arrays[f"data_{j}"] = data
            arrays[f"indices_{j}"] = indices
            arrays[f"indptr_{j}"] = indptr
        return arrays

    def _meta(self) -> dict:
        return {"factor_shapes": [list(s) for s in self.factor_shapes]}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        shapes = meta["factor_shapes"]
        if not isinstance(shapes, list) or not all(isinstance(s, list) and len(s) == 2 for s in shapes):
            raise ValueError(f"meta 'factor_shapes' must be a list of [rows, cols]; got {shapes!r}")
        csr = [(arrays[f"indptr_{j}"], arrays[f"indices_{j}"], arrays[f"data_{j}"], tuple(s))
               for j, s in enumerate(shapes)]
        out = cls.__new__(cls)
        out._init_from_csr(csr, arrays["data_0"].dtype)
        return out

    def _repr_extra(self) -> str:
        return "factors=" + " · ".join(f"{s} nnz {f[2].size}" for s, f in zip(self.factor_shapes, self._factors))

    @classmethod
    def from_lowrank(cls, M) -> "SparseProduct":
        """The low-rank matrix ``M = U Vᵀ`` as the product of the factors ``U`` and ``Vᵀ`` (``r (m + n)`` values,
        inner dimension ``r``): sparse products contain low rank at its own count."""
        return cls([M.U, M.V.T])

    # ---------------------------------------------------------------- examples
    @classmethod
    def random(cls, shape, *, num_factors: int = 2, density: float = 0.3, row_selection: bool = True,
               seed=None, dtype=np.float64) -> "SparseProduct":
        """A random product of ``num_factors`` sparse factors (for tests and benchmarks).

        Inner dimensions are ``max(m, n)``. Each factor after the first has ``max(1, round(density · size))``
        Gaussian values at uniformly random positions. With ``row_selection`` (the default) the first factor is a
        scaled injective row selection (one non-zero per row), so a two-factor product is itself at most as dense
        as its second factor and is recovered exactly at its own ``nparams`` by :func:`fit_sparse_product`.
        Generic products (``row_selection=False``) are *not* exactly recoverable by PALM4MSA in general (see
        ``fit_sparse_product``).
        """
        m, n = shape
        if num_factors < 1:
            raise ValueError(f"num_factors must be >= 1; got {num_factors}")
        rng = np.random.default_rng(seed)
        d = max(m, n)
        dims = [m] + [d] * (num_factors - 1) + [n]
        factors = []
        for j in range(num_factors):
            rows, cols = dims[j], dims[j + 1]
            F = np.zeros((rows, cols))
            if j == 0 and row_selection and num_factors > 1:
                F[np.arange(rows), rng.permutation(cols)[:rows]] = rng.choice([-1.0, 1.0], rows) * rng.uniform(
                    0.5, 2.0, rows)
            else:
                count = max(1, round(density * rows * cols))
                F.ravel()[rng.choice(rows * cols, count, replace=False)] = rng.standard_normal(count)
            factors.append(F)
        return cls(factors, dtype=dtype)


class Sparse(SparseProduct):
    """Plain sparsity: one CSR factor, ``M = S`` (the ``"sparse"`` family, fitted by keeping the largest entries).

    Parameters
    ----------
    S : scipy sparse matrix or 2-D array
        The matrix; a dense array stores its non-zeros.
    dtype : float32 or float64, optional

    Notes
    -----
    ``nparams = nnz(S)``, ``nindices = nnz + m + 1`` (CSR column indices and row pointers). Keeping the
    ``k`` largest entries in magnitude is the best ``k``-sparse approximation in Frobenius norm.

    Examples
    --------
    >>> import numpy as np
    >>> M = Sparse(np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]))
    >>> M, M.nbytes
    (Sparse(shape=(2, 3), dtype=float64, nparams=2 (33.3%), factors=(2, 3) nnz 2), 28)
    """

    family = "sparse"

    def __init__(self, S, dtype=None) -> None:
        super().__init__([S], dtype=dtype)

    def _init_from_csr(self, csr, dtype) -> None:
        if len(csr) != 1:
            raise ValueError(f"a Sparse matrix has exactly one factor; got {len(csr)} (use SparseProduct)")
        super()._init_from_csr(csr, dtype)

    @classmethod
    def from_lowrank(cls, M) -> None:
        """None: one sparse factor holds a low-rank matrix only densely (``m · n`` values, not ``r (m + n)``)."""
        return None

    @classmethod
    def random(cls, shape, *, density: float = 0.3, seed=None, dtype=np.float64) -> "Sparse":
        """A random sparse matrix with ``max(1, round(density · m · n))`` Gaussian values at random positions."""
        m, n = shape
        rng = np.random.default_rng(seed)
        F = np.zeros((m, n))
        count = max(1, round(density * m * n))
        F.ravel()[rng.choice(m * n, count, replace=False)] = rng.standard_normal(count)
        return cls(F, dtype=dtype)
