"""Toeplitz-like matrices: low displacement rank for the f-circulant shifts ``Z_1`` and ``Z_{-1}``.

A square N×N matrix ``M`` is Toeplitz-like of displacement rank ``r`` when its Sylvester displacement

.. math:: \\nabla(M) = Z_1 M - M Z_{-1} = G H^\\top, \\qquad G, H \\in \\mathbb{R}^{N \\times r},

where ``Z_f`` has ones on the subdiagonal and ``f`` in the upper-right corner. The spectra of ``Z_1`` and ``Z_{-1}``
are disjoint (N-th roots of 1 and of -1), so the displacement is invertible and (Kailath, Kung & Morf 1979; Pan
2001, Sec. 4; Sindhwani, Sainath & Kumar 2015, Thm. 2.2 in their numbering)

.. math:: M = \\tfrac12 \\sum_{j<r} Z_1(g_j)\\, Z_{-1}(J h_j),

with ``Z_f(v) = [v, Z_f v, …, Z_f^{N-1} v]`` the f-circulant matrix with first column ``v`` and ``J`` the reversal.
Every Toeplitz matrix has displacement rank at most 2.

Rectangular ``m × n``: the matrix is the top-left ``m × n`` block of an N×N Toeplitz-like matrix with
``N = max(m, n)`` (zero-padding ``x`` to N, keeping the first m outputs). The wrap-around of the f-circulants lets
every generator entry reach the block, so all ``2 r N`` numbers are stored and counted. Rectangular operator pairs
``(Z_e^{(m)}, Z_f^{(n)})`` would save ``r |m - n|`` numbers but their displacement is ill-conditioned
(``‖∇⁻¹‖ ≈ lcm(m, n)/π``, e.g. 10⁴ for 1000×1280; implementation note ldr-sparse-monarch.md §1.4), so they are not used.

Products cost ``O(r N log N)`` per column: ``Z_1(g)`` is diagonalised by the DFT and ``Z_{-1}(v) = D⁻¹ Z_1(Dv) D``
with ``D = diag(e^{iπk/N})``, so ``M x`` takes one FFT of ``x``, ``r`` inverse FFTs, ``r`` real FFTs and one
inverse real FFT (batched over the columns of ``X``). The transpose uses ``Z_f(v)ᵀ = Z_f(τ_f v)``,
``τ_f v = (v_0, f v_{N-1}, …, f v_1)``, with the two stages swapped.

References
----------
T. Kailath, S.-Y. Kung, M. Morf, "Displacement ranks of matrices and linear equations", J. Math. Anal. Appl. 68,
1979. V. Pan, "Structured Matrices and Polynomials", Birkhäuser 2001. V. Sindhwani, T. Sainath, S. Kumar,
"Structured transforms for small-footprint deep learning", NeurIPS 2015, arXiv:1510.01722.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from structmat.matrices._toeplitz_like_kernels import _assemble
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["ToeplitzLike", "skew_twist", "tau"]

#: Complex numbers held at once by one chunk of a batched product (r · N · columns).
_CHUNK_ELEMENTS = 1 << 21


def skew_twist(N: int, dtype=np.complex128) -> np.ndarray:
    """``θ^k = e^{iπk/N}``, k < N: the diagonal ``D`` with ``Z_{-1}(v) x = D⁻¹ ifft(fft(D v) · fft(D x))``."""
    return np.exp(1j * np.pi * np.arange(N) / N).astype(dtype)


def tau(v: np.ndarray, f: float) -> np.ndarray:
    """``τ_f v = (v_0, f v_{N-1}, …, f v_1)`` along axis 0, so that ``Z_f(v)ᵀ = Z_f(τ_f v)``."""
    out = np.empty_like(v)
    out[0] = v[0]
    out[1:] = f * v[:0:-1]
    return out


class ToeplitzLike(StructuredMatrix):
    """A Toeplitz-like matrix ``M = [½ Σ_j Z_1(g_j) Z_{-1}(J h_j)][:m, :n]`` with ``∇(M_N) = G Hᵀ``.

    Parameters
    ----------
    G, H : ndarray of shape (N, r)
        Displacement generators, ``N = max(m, n)``; ``r`` is the displacement rank.
    shape : tuple (m, n), optional
        The block kept; ``max(m, n)`` must equal ``N``. Defaults to ``(N, N)``.
    dtype : float32 or float64, optional
        Defaults to float32 if both generators are float32, else float64.

    Notes
    -----
    .. math:: Z_1 M_N - M_N Z_{-1} = G H^\\top, \\qquad M = (M_N)_{[:m, :n]}, \\qquad
              \\text{nparams} = 2 r \\max(m, n).

    See the module docstring for the inversion formula, the FFT products and why rectangular matrices are
    embedded in the square of side ``max(m, n)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> M = ToeplitzLike(rng.standard_normal((8, 2)), rng.standard_normal((8, 2)), shape=(8, 6))
    >>> M
    ToeplitzLike(shape=(8, 6), dtype=float64, nparams=32 (66.7%), rank=2)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    """

    family = "toeplitz_like"
    _scale_arrays = ("G",)

    def __init__(self, G, H, shape=None, dtype=None) -> None:
        G, H = np.asarray(G), np.asarray(H)
        if G.ndim != 2 or H.ndim != 2 or G.shape != H.shape:
            raise ValueError(f"G and H must be 2-D arrays of the same shape (N, r); got {G.shape} and {H.shape}")
        N, r = G.shape
        if N < 1 or r < 1:
            raise ValueError(f"G and H must have at least one row and one column (N, r >= 1); got shape {G.shape}")
        if G.dtype.kind not in "fiu" or H.dtype.kind not in "fiu":
            raise TypeError(f"G and H must hold real numbers; got dtypes {G.dtype} and {H.dtype}")
        if shape is None:
            shape = (N, N)
        m, n = (int(s) for s in shape)
        if max(m, n) != N or min(m, n) < 1:
            raise ValueError(f"shape must be (m, n) with max(m, n) = N = {N} (the rows of G and H); got {tuple(shape)}")
        if dtype is None:
            dtype = np.float32 if (G.dtype == np.float32 and H.dtype == np.float32) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((m, n), dtype)
        self.G = freeze(G, dtype)
        self.H = freeze(H, dtype)
        self._spectra_cache = None

    @property
    def rank(self) -> int:
        """The displacement rank ``r``."""
        return self.G.shape[1]

    @property
    def size(self) -> int:
        """``N = max(m, n)``, the side of the square the matrix is cut from."""
        return self.G.shape[0]

    @property
    def nparams(self) -> int:
        """``2 r max(m, n)``."""
        return self.G.size + self.H.size

    # ---------------------------------------------------------------- products
    def _spectra(self):
        """Cached spectra of the generators (not parameters): ``rfft(g_j)``, ``fft(D J h_j)``, ``fft(D τ_{-1} J h_j)``."""
        if self._spectra_cache is None:
            complex_dtype = np.complex64 if self.dtype == np.float32 else np.complex128
            twist = skew_twist(self.size)
            V = self.H[::-1].astype(np.float64)
            self._spectra_cache = (
                scipy.fft.rfft(self.G.astype(np.float64), axis=0).T.astype(complex_dtype),
                scipy.fft.fft(twist[:, None] * V, axis=0).T.astype(complex_dtype),
                scipy.fft.fft(twist[:, None] * tau(V, -1.0), axis=0).T.astype(complex_dtype),
                twist.astype(complex_dtype),
            )
        return self._spectra_cache

    def _chunks(self, k: int):
        step = max(1, _CHUNK_ELEMENTS // (self.rank * self.size))
        return [slice(s, min(s + step, k)) for s in range(0, k, step)]

    def _matmat(self, X):
        m, n = self.shape
        N, k = self.size, X.shape[1]
        G_hat, V_hat, _, twist = self._spectra()
        X_pad = np.zeros((N, k), dtype=self.dtype)
        X_pad[:n] = X
        X_hat = scipy.fft.fft(twist[:, None] * X_pad, axis=0)
        Y_hat = np.empty((N // 2 + 1, k), dtype=X_hat.dtype)
        for cols in self._chunks(k):
            # stage 1, the skew-circulants: u_j = Z_{-1}(J h_j) x for every j at once
            U = scipy.fft.ifft(V_hat[:, :, None] * X_hat[None, :, cols], axis=1)
            U = (twist.conj()[None, :, None] * U).real
            # stage 2, the circulants, summed in frequency space
            Y_hat[:, cols] = np.einsum("jp,jpk->pk", G_hat, scipy.fft.rfft(U, axis=1))
        Y = scipy.fft.irfft(Y_hat, n=N, axis=0)[:m]
        return np.ascontiguousarray(0.5 * Y, dtype=self.dtype)

    def _rmatmat(self, Y):
        m, n = self.shape
        N, k = self.size, Y.shape[1]
        G_hat, _, Vt_hat, twist = self._spectra()
        Y_pad = np.zeros((N, k), dtype=self.dtype)
        Y_pad[:m] = Y
        Y_hat = scipy.fft.rfft(Y_pad, axis=0)
        S_hat = np.empty((N, k), dtype=Y_hat.dtype)
        for cols in self._chunks(k):
            # stage 1, the transposed circulants Z_1(g_j)ᵀ = Z_1(τ_1 g_j): spectrum conj(rfft(g_j))
            U = scipy.fft.irfft(G_hat.conj()[:, :, None] * Y_hat[None, :, cols], n=N, axis=1)
            # stage 2, the transposed skew-circulants Z_{-1}(τ_{-1} J h_j), summed in the twisted frequency space
            U_hat = scipy.fft.fft(twist[None, :, None] * U, axis=1)
            S_hat[:, cols] = np.einsum("jp,jpk->pk", Vt_hat, U_hat)
        X = (twist.conj()[:, None] * scipy.fft.ifft(S_hat, axis=0)).real[:n]
        return np.ascontiguousarray(0.5 * X, dtype=self.dtype)

    def to_dense(self) -> np.ndarray:
        """``½ 𝒜(G (J H)ᵀ)[:m, :n]``: one GEMM and O(N²) prefix sums, computed in float64."""
        m, n = self.shape
        Q = self.G.astype(np.float64) @ self.H[::-1].astype(np.float64).T
        return np.ascontiguousarray(0.5 * _assemble(Q, m, n), dtype=self.dtype)

    def displacement(self) -> np.ndarray:
        """``G Hᵀ = Z_1 M_N - M_N Z_{-1}`` of the N×N matrix the block is cut from (dense, for checks)."""
        return self.G.astype(np.float64) @ self.H.astype(np.float64).T

    # ---------------------------------------------------------------- files and construction
    def _arrays(self):
        return {"G": self.G, "H": self.H}

    def _meta(self) -> dict:
        return {"shape": list(self.shape)}  # the kept block; N = max(m, n) is the rows of G

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls(arrays["G"], arrays["H"], shape=tuple(meta["shape"]),
                   dtype=np.result_type(arrays["G"], arrays["H"]))

    def _repr_extra(self) -> str:
        return f"rank={self.rank}"

    def padded(self, rank: int) -> "ToeplitzLike":
        """The same matrix at displacement rank ``rank >= self.rank``: zero generator columns appended."""
        rank = int(rank)
        if rank < self.rank:
            raise ValueError(f"rank must be at least the current rank {self.rank}; got {rank}")
        extra = np.zeros((self.size, rank - self.rank), dtype=self.dtype)
        return ToeplitzLike(np.hstack([self.G, extra]), np.hstack([self.H, extra]), shape=self.shape,
                            dtype=self.dtype)

    @classmethod
    def from_lowrank(cls, lowrank, rank: int | None = None) -> "ToeplitzLike | None":
        """The low-rank matrix ``U Vᵀ`` as a Toeplitz-like matrix of displacement rank ``2 k`` (k its rank).

        With ``U``, ``V`` zero-padded to N rows, ``∇(U Vᵀ) = Z_1 U Vᵀ − U Vᵀ Z_{-1} = [Z_1 U, U] [V, −Z_{-1}ᵀ V]ᵀ``,
        so ``G = [Z_1 U, U]``, ``H = [V, −Z_{-1}ᵀ V]`` represent it exactly: every rank-k matrix is Toeplitz-like of
        displacement rank at most 2k, at ``4 k max(m, n)`` parameters (about twice low rank's ``k (m + n)``).
        ``rank`` (at least 2k) pads with zero generator columns. Returns None for a matrix that is not
        :class:`~structmat.matrices.lowrank.LowRank` or a ``rank`` below 2k.

        Examples
        --------
        >>> import numpy as np
        >>> from structmat.matrices.lowrank import LowRank
        >>> L = LowRank.random((8, 6), rank=2, seed=0)
        >>> T = ToeplitzLike.from_lowrank(L)
        >>> T.rank, bool(np.allclose(T.to_dense(), L.to_dense()))
        (4, True)
        """
        from structmat.matrices.lowrank import LowRank

        if not isinstance(lowrank, LowRank):
            return None
        m, n = lowrank.shape
        N, k = max(m, n), lowrank.rank
        rank = 2 * k if rank is None else int(rank)
        if rank < 2 * k or rank < 1:
            return None
        U = np.zeros((N, k))
        V = np.zeros((N, k))
        U[:m], V[:n] = lowrank.U, lowrank.V
        shifted_V = np.empty_like(V)  # Z_{-1}ᵀ V: up by one, the first row negated into the last
        shifted_V[:-1], shifted_V[-1] = V[1:], -V[0]
        G = np.zeros((N, rank))
        H = np.zeros((N, rank))
        G[:, :k], G[:, k:2 * k] = np.roll(U, 1, axis=0), U
        H[:, :k], H[:, k:2 * k] = V, -shifted_V
        return cls(G, H, shape=(m, n), dtype=lowrank.dtype)

    @classmethod
    def random(cls, shape, *, rank: int = 3, seed=None, dtype=np.float64) -> "ToeplitzLike":
        """A random displacement-rank-``rank`` matrix with Gaussian generators scaled so entries have variance ~1."""
        m, n = (int(s) for s in shape)
        N = max(m, n)
        rank = max(1, min(int(rank), N))
        rng = np.random.default_rng(seed)
        scale = (4.0 / (rank * N)) ** 0.25
        G = scale * rng.standard_normal((N, rank))
        H = scale * rng.standard_normal((N, rank))
        return cls(G, H, shape=(m, n), dtype=dtype)
