"""The ``StructuredMatrix`` base: one small abstract surface, everything else derived once.

A family supplies ``__init__`` over its own arrays, ``_matmat`` / ``_rmatmat`` (``(n, k) -> (m, k)`` and
``(m, k) -> (n, k)``), ``nparams``, ``family``, ``_arrays`` / ``_meta`` / ``_from_arrays`` for files, and a
``random`` constructor of an exactly structured instance (the conformance tests use it).
The base derives ``M @ x``, ``x @ M``, ``.T``, ``to_dense``, ``astype``, ``save``, ``repr`` and the SciPy
``LinearOperator`` view. Matrices are immutable: their arrays are read-only.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

__all__ = ["StructuredMatrix", "TransposedMatrix", "INDEX_BYTES", "VALUE_BYTES", "freeze"]

#: Deployment storage: values are float32, indices int32 (see ``nbytes``).
VALUE_BYTES = 4
INDEX_BYTES = 4

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def freeze(array, dtype) -> np.ndarray:
    """A C-contiguous read-only copy-or-view of ``array`` in ``dtype``.

    Complex input is refused rather than cast (NumPy would drop the imaginary part with only a warning)."""
    if np.iscomplexobj(array) and np.dtype(dtype).kind != "c":
        raise TypeError(f"expected real numbers; got complex dtype {np.asarray(array).dtype}")
    out = np.ascontiguousarray(array, dtype=dtype)
    if out is array or out.base is not None:
        out = out.copy()
    out.flags.writeable = False
    return out


def float_dtype(dtype) -> np.dtype:
    """Check that a matrix dtype is float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    return dtype


class StructuredMatrix(abc.ABC):
    """A matrix of shape ``(m, n)`` stored in a structured form, with products that never form it densely."""

    #: The registry key, also written into saved files. Never rename one.
    family: ClassVar[str]
    #: Let ``ndarray @ M`` reach ``__rmatmul__`` instead of NumPy's ufunc machinery.
    __array_ufunc__ = None
    #: The arrays (names of ``_arrays()``) that :meth:`scaled` multiplies: the matrix must be linear in them
    #: jointly, e.g. ``("U",)`` for ``U Vᵀ``. A family whose scale is spread otherwise overrides :meth:`scaled`.
    _scale_arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, shape: tuple[int, int], dtype) -> None:
        m, n = (int(s) for s in shape)
        if m < 1 or n < 1:
            raise ValueError(f"shape must have two positive sides; got {tuple(shape)}")
        self._shape = (m, n)
        self._dtype = float_dtype(dtype)

    # ---------------------------------------------------------------- what a family supplies
    @property
    @abc.abstractmethod
    def nparams(self) -> int:
        """The exact count of stored numbers."""

    @abc.abstractmethod
    def _matmat(self, X: np.ndarray) -> np.ndarray:
        """``M @ X`` for ``X`` of shape ``(n, k)`` in ``self.dtype``; returns ``(m, k)``."""

    @abc.abstractmethod
    def _rmatmat(self, Y: np.ndarray) -> np.ndarray:
        """``M.T @ Y`` for ``Y`` of shape ``(m, k)`` in ``self.dtype``; returns ``(n, k)``."""

    @abc.abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]:
        """The arrays that define the matrix, by name (written to files)."""

    @classmethod
    @abc.abstractmethod
    def random(cls, shape: tuple[int, int], *, seed=None, dtype=np.float64) -> "StructuredMatrix":
        """A random, exactly structured instance of ``shape`` with small default structure parameters
        (for tests, benchmarks and exact-recovery checks); families add their own keyword options."""

    def _meta(self) -> dict:
        """JSON-serialisable hyper-parameters written beside the arrays (none by default)."""
        return {}

    @classmethod
    @abc.abstractmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> "StructuredMatrix":
        """Rebuild from ``_arrays()`` and ``_meta()``; validates like ``__init__``."""

    # ---------------------------------------------------------------- derived
    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def nindices(self) -> int:
        """Integer indices a deployment must store beside the values (0 unless the family has some)."""
        return 0

    @property
    def nbytes(self) -> int:
        """Deployment storage in bytes: ``4 * nparams`` (float32 values) ``+ 4 * nindices`` (int32 indices)."""
        return VALUE_BYTES * self.nparams + INDEX_BYTES * self.nindices

    @property
    def params_share(self) -> float:
        """``nparams / (m * n)``: the share of the dense parameter count."""
        m, n = self.shape
        return self.nparams / (m * n)

    density = params_share

    def __matmul__(self, x):
        if isinstance(x, StructuredMatrix):
            return NotImplemented
        X, was_vector = self._as_operand(x, self.shape[1], "M @ x")
        Y = self._matmat(X)
        return Y[:, 0] if was_vector else Y

    def __rmatmul__(self, x):
        """``x @ M`` for ``x`` of shape ``(m,)`` or ``(k, m)``: computed as ``(M.T @ x.T).T``."""
        if isinstance(x, StructuredMatrix):
            return NotImplemented
        x = np.asarray(x)
        if x.ndim == 2:
            X, _ = self._as_operand(x.T, self.shape[0], "x @ M (x of shape (k, m))")
            return self._rmatmat(X).T
        X, was_vector = self._as_operand(x, self.shape[0], "x @ M")
        Y = self._rmatmat(X)
        return Y[:, 0] if was_vector else Y.T

    def matvec(self, x):
        return self @ np.asarray(x).reshape(-1)

    def rmatvec(self, y):
        return self.T @ np.asarray(y).reshape(-1)

    def matmat(self, X):
        return self @ X

    def rmatmat(self, Y):
        return self.T @ Y

    def _as_operand(self, x, n: int, what: str) -> tuple[np.ndarray, bool]:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{what}: x must hold real numbers; got dtype {x.dtype}")
        if x.ndim == 1 and x.shape[0] == n:
            return np.ascontiguousarray(x.reshape(n, 1), dtype=self.dtype), True
        if x.ndim == 2 and x.shape[0] == n:
            return np.ascontiguousarray(x, dtype=self.dtype), False
        raise ValueError(f"{what}: expected x of shape ({n},) or ({n}, k); got {x.shape}")

    @property
    def T(self) -> "StructuredMatrix":
        return self.transpose()

    def transpose(self) -> "StructuredMatrix":
        """The transpose, without copying. Families closed under transposition return their own class."""
        return TransposedMatrix(self)

    def to_dense(self) -> np.ndarray:
        """The dense matrix, built from identity products on the smaller side. Meant for tests and checks."""
        m, n = self.shape
        if n <= m:
            return np.ascontiguousarray(self._matmat(np.eye(n, dtype=self.dtype)))
        return np.ascontiguousarray(self._rmatmat(np.eye(m, dtype=self.dtype)).T)

    def astype(self, dtype) -> "StructuredMatrix":
        """A copy whose float arrays are in ``dtype`` (float32 or float64); integer arrays are kept."""
        dtype = float_dtype(dtype)
        arrays = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in self._arrays().items()}
        return type(self)._from_arrays(arrays, self._meta())

    #: Arrays whose first axis is the output (row) axis of ``M`` and in which ``M`` is linear row by row:
    #: multiplying their row ``i`` by ``d_i`` multiplies row ``i`` of ``M`` by ``d_i`` (see :meth:`scale_rows`).
    _row_scale_arrays: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def supports_row_scaling(cls) -> bool:
        """Whether :meth:`scale_rows` keeps this family's structure (so fits can weight the outputs)."""
        return bool(cls._row_scale_arrays) or cls.scale_rows is not StructuredMatrix.scale_rows

    def _row_weights(self, weights) -> np.ndarray:
        """``weights`` checked for :meth:`scale_rows`: a finite float64 vector of length ``m``."""
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (self.shape[0],) or not np.isfinite(weights).all():
            raise ValueError(f"weights must be a finite vector of shape ({self.shape[0]},), one per output row; got "
                             f"shape {weights.shape}")
        return weights

    def scale_rows(self, weights) -> "StructuredMatrix":
        """``diag(weights) @ M`` in the same family and structure (a new matrix; same ``nparams``).

        Raises
        ------
        ValueError
            ``weights`` is not a finite vector of length ``m``.
        NotImplementedError
            the family's structure is not kept by scaling its rows (Toeplitz-like, say).
        """
        weights = self._row_weights(weights)
        if not self._row_scale_arrays:
            raise NotImplementedError(f"{type(self).__name__} does not keep its structure under row scaling")
        arrays = dict(self._arrays())
        for name in self._row_scale_arrays:
            arrays[name] = (arrays[name] * weights.reshape(-1, *([1] * (arrays[name].ndim - 1)))).astype(
                arrays[name].dtype)
        return type(self)._from_arrays(arrays, self._meta())

    def scaled(self, factor) -> "StructuredMatrix":
        """``factor * M`` in the same family and structure (a new matrix; exact when ``factor`` is a power of two
        and nothing overflows). The approximators fit ``W / s`` and return ``fit.scaled(s)``, which is what makes
        every family's fit independent of the scale of ``W`` (see :mod:`structmat.approximators.fit_guard`)."""
        factor = float(factor)
        if not np.isfinite(factor):
            raise ValueError(f"factor must be a finite real number; got {factor}")
        if not self._scale_arrays:
            raise NotImplementedError(f"{type(self).__name__} does not implement scaled(): list the arrays the matrix "
                                      "is linear in as _scale_arrays, or override scaled()")
        arrays = dict(self._arrays())
        for name in self._scale_arrays:
            arrays[name] = arrays[name] * arrays[name].dtype.type(factor)
        return type(self)._from_arrays(arrays, self._meta())

    def save(self, path) -> None:
        """Write to ``path`` as ``.npz`` (arrays plus a JSON ``meta``), atomically. Read back with ``load``."""
        from structmat.matrices.io import save_matrix

        save_matrix(self, path)

    def aslinearoperator(self):
        """This matrix as a ``scipy.sparse.linalg.LinearOperator`` (``scipy.sparse.linalg.aslinearoperator``
        accepts the matrix directly too)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            self.shape, matvec=self.matvec, rmatvec=self.rmatvec, matmat=self.matmat,
            rmatmat=self.rmatmat, dtype=self.dtype,
        )

    def _repr_extra(self) -> str:
        """Family-specific ``key=value`` text for ``repr``."""
        return ""

    def __repr__(self) -> str:
        extra = self._repr_extra()
        return (
            f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, "
            f"nparams={self.nparams:_} ({100 * self.params_share:.1f}%)" + (f", {extra}" if extra else "") + ")"
        )


class TransposedMatrix(StructuredMatrix):
    """A view of ``M.T`` that swaps the two products. ``M.T.T is M``. Not saved to files."""

    def __init__(self, parent: StructuredMatrix) -> None:
        self.parent = parent
        self.family = parent.family
        super().__init__(parent.shape[::-1], parent.dtype)

    @property
    def nparams(self) -> int:
        return self.parent.nparams

    @property
    def nindices(self) -> int:
        return self.parent.nindices

    def _matmat(self, X):
        return self.parent._rmatmat(X)

    def _rmatmat(self, Y):
        return self.parent._matmat(Y)

    def transpose(self) -> StructuredMatrix:
        return self.parent

    def to_dense(self) -> np.ndarray:
        return np.ascontiguousarray(self.parent.to_dense().T)

    def astype(self, dtype) -> StructuredMatrix:
        return TransposedMatrix(self.parent.astype(dtype))

    def scaled(self, factor) -> StructuredMatrix:
        return TransposedMatrix(self.parent.scaled(factor))

    def _arrays(self):
        raise TypeError(f"a transposed {type(self.parent).__name__} cannot be saved; save its parent instead")

    @classmethod
    def _from_arrays(cls, arrays, meta):
        raise TypeError("TransposedMatrix is a view and is not stored in files")

    @classmethod
    def random(cls, shape, *, seed=None, dtype=np.float64):
        raise TypeError("TransposedMatrix is a view; build a random family matrix and take .T")

    def __repr__(self) -> str:
        return f"TransposedMatrix({self.parent!r})"
