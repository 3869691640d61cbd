"""Input statistics of a layer: the second moment ``C = XᵀX / N`` of the rows it sees, in bounded memory.

A trained layer is judged by its outputs ``W x`` on real inputs ``x``, and for every linear fit that only needs

.. math::

    \\|(W - M) X^T\\|_F^2 / N = \\operatorname{tr}((W - M)\\, C\\, (W - M)^T) = \\|(W - M) L\\|_F^2,
    \\qquad C = X^T X / N = L L^T,

so :class:`InputStatistics` keeps ``C`` (float64), the row count ``N`` and the mean, accumulated from arrays,
memory maps, the feature cache's chunks or torch batches, one chunk at a time (memory ``O(n²)`` whatever ``N``;
the same rows in the same order give the same bytes). It is saved as ``.npz`` with a JSON ``meta`` entry and
read back without pickle.

Regularisation. ``C`` is singular when ``N < n`` or features are dead, and real inputs are ill-conditioned
(condition numbers 1e4-1e5 are common). Fits use ``C + λI`` with ``λ = ridge · tr(C) / n`` (``ridge = 1e-6`` by
default, :meth:`InputStatistics.regularized_eigh`): the objective then also charges ``λ ‖W − M‖²_F``, a tie-break
towards the plain fit in the directions the data never excites, which the output objective cannot see.

Extreme magnitudes. Rows are accumulated after dividing by an exact power of two ``scale`` (chosen from the
largest entry seen, so ``XᵀX`` never overflows or underflows); :attr:`second_moment` multiplies it back.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np
import scipy.linalg

from structmat.matrices.io import StructmatFileError, atomic_write

__all__ = ["InputStatistics", "DEFAULT_RIDGE", "STATISTICS_FORMAT"]

STATISTICS_FORMAT = "structmat-input-statistics"
STATISTICS_FORMAT_VERSION = 1
#: Default relative regularisation: ``λ = DEFAULT_RIDGE · tr(C) / n``.
DEFAULT_RIDGE = 1e-6
#: Rows converted to float64 at a time when streaming a large array or memory map.
CHUNK_ROWS = 8192


def _power_of_two_at_least(value: float) -> float:
    """The smallest power of two >= ``value`` (``value`` > 0, finite)."""
    return math.ldexp(1.0, math.frexp(value)[1])


def _as_rows(X, n_features: int | None, name: str) -> np.ndarray:
    """``X`` as an ndarray of real numbers with at least two dimensions; the last one is the feature axis."""
    if hasattr(X, "detach"):  # a torch tensor: leave autograd and the device behind
        X = X.detach().cpu()
        if str(X.dtype) in ("torch.bfloat16",):
            X = X.float()
        X = X.numpy()
    if not isinstance(X, np.ndarray) and not hasattr(X, "__array__"):
        raise TypeError(f"{name} must be an array of shape (N, n_features); got {type(X).__name__}")
    X = np.asarray(X)
    expected = f"(N, {n_features})" if n_features else "(N, n_features)"
    if X.dtype.kind == "c":
        raise TypeError(f"{name} must hold real numbers; got complex dtype {X.dtype} (expected shape {expected})")
    if X.dtype.kind not in "fiu" or X.dtype.kind == "b":
        raise TypeError(f"{name} must hold real floats or integers; got dtype {X.dtype} (expected shape {expected})")
    if X.ndim < 2:
        raise ValueError(f"{name} must have shape {expected}, one input per row; got a {X.ndim}-D array of shape "
                         f"{X.shape}")
    if n_features is not None and X.shape[-1] != n_features:
        raise ValueError(f"{name} must have shape {expected} to match the weight's in_features={n_features}; "
                         f"got shape {X.shape}")
    if X.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one feature; got shape {X.shape}")
    return X


class InputStatistics:
    """The uncentred second moment ``C = XᵀX / N``, the mean and the count of a layer's input rows.

    Accumulate with :meth:`update` (any number of calls, rows of any leading shape ``(..., n_features)``), or build
    in one call with :meth:`from_rows`, :meth:`from_batches` or :meth:`from_cache`. Combine two with
    :meth:`merge`. Statistics of different chunkings of the same rows agree to float64 rounding; the same
    chunking gives the same bytes.

    Parameters
    ----------
    n_features : int
        The layer's ``in_features``.

    Attributes
    ----------
    n_features : int
    count : int
        Rows seen (``N``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((100, 3))
    >>> stats = InputStatistics.from_rows(X, chunk_rows=32)
    >>> stats.count, bool(np.allclose(stats.second_moment, X.T @ X / 100))
    (100, True)
    """

    def __init__(self, n_features: int) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, numbers.Integral) or n_features < 1:
            raise ValueError(f"n_features must be an int >= 1; got {n_features!r}")
        self.n_features = int(n_features)
        self.count = 0
        self._scale = 1.0                       # exact power of two: rows are accumulated as X / scale
        self._sum = np.zeros(self.n_features)    # Σ x / scale
        self._gram = np.zeros((self.n_features, self.n_features))   # Σ (x / scale)(x / scale)ᵀ
        self._eigh_cache: tuple | None = None
        self._cholesky_cache: tuple | None = None

    # ---------------------------------------------------------------- accumulation
    def update(self, X) -> "InputStatistics":
        """Add the rows of ``X`` (shape ``(..., n_features)``; a torch tensor works) and return ``self``.

        Raises
        ------
        ValueError
            wrong width, fewer than 2 dimensions, NaN or Inf (nothing is added then).
        TypeError
            complex, boolean, object or string data.
        """
        X = _as_rows(X, self.n_features, "inputs")
        X = X.reshape(-1, self.n_features)
        for start in range(0, X.shape[0], CHUNK_ROWS):
            self._add_chunk(np.asarray(X[start:start + CHUNK_ROWS], dtype=np.float64))
        return self

    def _add_chunk(self, chunk: np.ndarray) -> None:
        if chunk.shape[0] == 0:
            return
        if not np.isfinite(chunk).all():
            bad = int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
            raise ValueError(f"inputs must be finite; found {bad} NaN or Inf entries in a chunk of shape "
                             f"{chunk.shape} (after {self.count} accepted rows)")
        peak = float(np.max(np.abs(chunk)))
        if peak > 0.0:
            scale = _power_of_two_at_least(peak)
            if self.count == 0 or not self._gram.any():
                self._scale = scale
            elif scale > self._scale:  # exact rescaling of what was accumulated (powers of two)
                ratio = self._scale / scale
                self._sum *= ratio
                self._gram *= ratio * ratio
                self._scale = scale
        scaled = chunk / self._scale
        self._sum += scaled.sum(axis=0)
        self._gram += scaled.T @ scaled
        self.count += chunk.shape[0]
        self._eigh_cache = self._cholesky_cache = None

    def merge(self, other: "InputStatistics") -> "InputStatistics":
        """Add the rows summarised by ``other`` (same ``n_features``) and return ``self``."""
        if not isinstance(other, InputStatistics):
            raise TypeError(f"can only merge InputStatistics; got {type(other).__name__}")
        if other.n_features != self.n_features:
            raise ValueError(f"cannot merge statistics of {other.n_features} features into {self.n_features}")
        if other.count == 0:
            return self
        if self.count == 0:
            self._scale, self._sum, self._gram = other._scale, other._sum.copy(), other._gram.copy()
        else:
            scale = max(self._scale, other._scale)
            a, b = self._scale / scale, other._scale / scale
            self._sum = self._sum * a + other._sum * b
            self._gram = self._gram * (a * a) + other._gram * (b * b)
            self._scale = scale
        self.count += other.count
        self._eigh_cache = self._cholesky_cache = None
        return self

    @classmethod
    def from_rows(cls, X, *, chunk_rows: int = CHUNK_ROWS) -> "InputStatistics":
        """Statistics of the rows of an ``(N, n)`` array or memory map, read ``chunk_rows`` rows at a time."""
        if isinstance(X, InputStatistics):
            return X
        X = X if hasattr(X, "shape") and hasattr(X, "__getitem__") and not hasattr(X, "detach") else _as_rows(X, None, "inputs")
        if len(X.shape) != 2:
            raise ValueError(f"inputs must have shape (N, n_features), one input per row; got shape {tuple(X.shape)}")
        if X.shape[0] == 0:
            raise ValueError(f"inputs must hold at least one row; got shape {tuple(X.shape)}")
        stats = cls(int(X.shape[1]))
        for start in range(0, X.shape[0], chunk_rows):
            stats.update(X[start:start + chunk_rows])
        return stats

    @classmethod
    def from_batches(cls, batches, n_features: int | None = None) -> "InputStatistics":
        """Statistics of an iterable of batches (arrays or tensors of shape ``(..., n)``)."""
        stats = None if n_features is None else cls(n_features)
        for batch in batches:
            if stats is None:
                stats = cls(int(_as_rows(batch, None, "inputs").shape[-1]))
            stats.update(batch)
        if stats is None or stats.count == 0:
            raise ValueError("batches held no rows; statistics need at least one input row")
        return stats

    @classmethod
    def from_cache(cls, cache, indices=None) -> "InputStatistics":
        """Statistics of a feature cache's features (a :class:`~structmat.features.FeatureCache` or its directory),
        all rows or those at ``indices``, streamed chunk by chunk."""
        if isinstance(cache, (str, Path)):
            from structmat.features.cache import FeatureCache

            cache = FeatureCache(cache)
        features = cache.features
        stats = cls(int(features.shape[1]))
        if indices is None:
            for chunk in features.chunks():
                stats.update(chunk)
        else:
            indices = np.sort(np.asarray(indices, dtype=np.int64))
            if indices.size == 0:
                raise ValueError("indices selects no rows; statistics need at least one input row")
            for start in range(0, indices.size, CHUNK_ROWS):
                stats.update(features.take(indices[start:start + CHUNK_ROWS]))
        return stats

    @classmethod
    def from_path(cls, path) -> "InputStatistics":
        """Statistics from a file or directory: a feature-cache directory (all its rows), a statistics ``.npz``
        written by :meth:`save`, or an ``.npy`` array of rows (read as a memory map, never unpickled)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_cache(path)
        if not path.exists():
            raise FileNotFoundError(f"no such inputs file or feature cache: {path}")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic.startswith(b"PK"):
            return cls.load(path)
        if magic == b"\x93NUMPY":
            from structmat.npyfile import load_npy

            try:
                rows = load_npy(path, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                raise StructmatFileError(f"{path} is not a readable .npy array of input rows ({exc})") from None
            return cls.from_rows(rows)
        raise StructmatFileError(f"{path} is not an inputs file: expected a feature-cache directory, an input "
                                 "statistics .npz, or an .npy array of shape (N, in_features)")

    # ---------------------------------------------------------------- what fits read
    def _check_nonempty(self) -> None:
        if self.count == 0:
            raise ValueError("these InputStatistics hold no rows yet; call update() with some inputs first")

    @property
    def scale(self) -> float:
        """The power of two the rows were divided by before accumulating (see the module docstring)."""
        return self._scale

    @property
    def normalized_second_moment(self) -> np.ndarray:
        """``C / scale²``: the second moment of the rows divided by :attr:`scale` (never overflows)."""
        self._check_nonempty()
        return self._gram / self.count

    @property
    def second_moment(self) -> np.ndarray:
        """``C = XᵀX / N`` (n × n, float64)."""
        return self.normalized_second_moment * (self._scale * self._scale)

    @property
    def mean(self) -> np.ndarray:
        """The mean input row (n,)."""
        self._check_nonempty()
        return self._sum / self.count * self._scale

    def regularized_eigh(self, ridge: float = DEFAULT_RIDGE) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs ``(μ, V)`` of ``C / scale² + λ I``, ``λ = ridge · tr(C / scale²) / n``, eigenvalues ascending.

        Negative rounding noise in ``C``'s eigenvalues is clipped to 0 before ``λ`` is added. With ``ridge=0``
        the eigenvalues of a singular ``C`` may be 0. Cached per ``ridge``.
        """
        ridge = float(ridge)
        if self._eigh_cache is not None and self._eigh_cache[0] == ridge:
            return self._eigh_cache[1], self._eigh_cache[2]
        lam = self.ridge_shift(ridge)
        C = self.normalized_second_moment
        C = (C + C.T) / 2.0
        mu, V = np.linalg.eigh(C)
        mu = np.clip(mu, 0.0, None) + lam
        self._eigh_cache = (ridge, mu, V)
        return mu, V

    def ridge_shift(self, ridge: float = DEFAULT_RIDGE) -> float:
        """``λ = ridge · tr(C / scale²) / n``, the diagonal shift of the regularised second moment; 1 when every input
        is zero (the outputs do not depend on ``W``: the plain norm is used)."""
        self._check_nonempty()
        ridge = float(ridge)
        if not (ridge >= 0.0 and math.isfinite(ridge)):
            raise ValueError(f"ridge must be a finite float >= 0; got {ridge}")
        trace = float(np.sum(np.diagonal(self._gram) / self.count))
        return ridge * trace / self.n_features if trace != 0.0 else 1.0

    def regularized_second_moment(self, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
        """``C / scale² + λ I`` (:meth:`ridge_shift`; symmetric to the last bit, one new array), as in
        :meth:`regularized_eigh` without its clipping of negative rounding noise."""
        lam = self.ridge_shift(ridge)
        C = self.normalized_second_moment
        H = C + C.T
        H *= 0.5
        H[np.diag_indices(self.n_features)] += lam
        return H

    def cholesky_factor(self, ridge: float = DEFAULT_RIDGE) -> np.ndarray | None:
        """Lower-triangular ``T`` with ``T Tᵀ = C / scale² + λ I`` (:meth:`regularized_second_moment`), or None
        when that matrix is not positive definite (``ridge=0`` and a singular ``C``). Cached per ``ridge``. It costs
        ``n³/3`` multiply-adds, about a twentieth of the time of :meth:`regularized_eigh`'s eigendecomposition."""
        ridge = float(ridge)
        if self._cholesky_cache is None or self._cholesky_cache[0] != ridge:
            try:
                T = scipy.linalg.cholesky(self.regularized_second_moment(ridge), lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                T = None
            self._cholesky_cache = (ridge, T)
        return self._cholesky_cache[1]

    def whitening_factor(self, ridge: float = DEFAULT_RIDGE) -> np.ndarray:
        """``L`` (n × n) with ``L Lᵀ = C / scale² + λ I``: its Cholesky factor, or ``V diag(√μ)`` from
        :meth:`regularized_eigh` when that matrix is singular (``ridge=0``).

        ``‖(W − M) L‖_F`` is the regularised output error up to the constant factor ``√N / scale``; it does not depend
        on which factor ``L`` is (two differ by an orthogonal matrix on the right).
        """
        T = self.cholesky_factor(ridge)
        if T is not None:
            return T
        mu, V = self.regularized_eigh(ridge)
        return V * np.sqrt(mu)

    def output_energy(self, W) -> float:
        """``tr(W C Wᵀ) / scale²`` (unregularised): the squared output norm per row, divided by ``scale²``."""
        C = self.normalized_second_moment
        W = np.asarray(W, dtype=np.float64)
        return float(max(np.einsum("ij,ij->", W @ C, W), 0.0))

    # ---------------------------------------------------------------- files
    def save(self, path) -> None:
        """Write to ``path`` (``.npz`` with the accumulators and a JSON ``meta``; atomic; no pickle)."""
        self._check_nonempty()
        meta = {"format": STATISTICS_FORMAT, "format_version": STATISTICS_FORMAT_VERSION,
                "n_features": self.n_features, "count": self.count, "scale": self._scale}
        atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), sum=self._sum, gram=self._gram))

    @classmethod
    def load(cls, path) -> "InputStatistics":
        """Read statistics written by :meth:`save`; a foreign, truncated or inconsistent file raises
        :class:`~structmat.StructmatFileError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such statistics file: {path}")
        with open(path, "rb") as f:
            if not f.read(4).startswith(b"PK"):
                raise StructmatFileError(f"{path} is not an input-statistics file: not an .npz (zip) archive")
        from structmat.npyfile import open_npz

        try:
            with open_npz(path) as data:  # headers checked, nothing unpickled
                meta = json.loads(str(data.read("meta")[()]))
                total, gram = data.read("sum"), data.read("gram")
        except (KeyError, ValueError, OSError, EOFError, RecursionError) as exc:
            raise StructmatFileError(f"{path} is not a readable input-statistics file ({exc}); expected arrays "
                                     "'sum', 'gram' and a JSON 'meta'") from exc
        except Exception as exc:  # zipfile.BadZipFile and friends from a corrupt archive
            raise StructmatFileError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != STATISTICS_FORMAT:
            raise StructmatFileError(f"{path}: meta does not carry format={STATISTICS_FORMAT!r}")
        if meta.get("format_version") != STATISTICS_FORMAT_VERSION:
            raise StructmatFileError(f"{path} has format_version {meta.get('format_version')!r}; "
                                     f"this structmat reads version {STATISTICS_FORMAT_VERSION}")
        n, count, scale = meta.get("n_features"), meta.get("count"), meta.get("scale")
        ok = (isinstance(n, int) and n >= 1 and isinstance(count, int) and count >= 1
              and isinstance(scale, float) and scale > 0 and math.isfinite(scale)
              and total.shape == (n,) and gram.shape == (n, n) and total.dtype == np.float64
              and gram.dtype == np.float64 and np.isfinite(total).all() and np.isfinite(gram).all())
        if not ok:
            raise StructmatFileError(f"{path}: inconsistent statistics (n_features={n!r}, count={count!r}, "
                                     f"scale={scale!r}, sum {total.shape} {total.dtype}, gram {gram.shape} {gram.dtype})")
        stats = cls(n)
        stats.count, stats._scale, stats._sum, stats._gram = count, scale, total, gram
        return stats

    def __repr__(self) -> str:
        return f"InputStatistics(n_features={self.n_features}, count={self.count})"
