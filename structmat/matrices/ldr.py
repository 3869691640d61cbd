"""General low displacement rank (LDR) matrices with learned tridiagonal-plus-corner operators.

Following Thomas, Gu, Dao, Rudra & Ré (NeurIPS 2018, the "LDR-TD" class of their Sec. 3), a matrix is stored as
two operators ``A``, ``B`` and generators ``G``, ``H`` and defined by the Krylov-product form

.. math:: M_N = \\sum_{j<r} K(A, g_j)\\, K(B, h_j)^\\top = \\sum_{k<N} A^k\\, G H^\\top (B^\\top)^k,
          \\qquad K(A, g) = [g, A g, \\dots, A^{N-1} g].

``A`` and ``B`` are N×N tridiagonal with the two corner entries ``A[0, N-1]`` and ``A[N-1, 0]`` (periodic
tridiagonal; 3N numbers each). No operator is inverted. The Stein displacement satisfies
``M - A M Bᵀ = G Hᵀ - Aᴺ G Hᵀ (Bᵀ)ᴺ`` (rank ≤ 2r; ≤ r when ``Aᴺ`` or ``Bᴺ`` is a multiple of I), and with
``A = Z_1``, ``B = Z_{-1}``, ``H = -½ Z_{-1} H_TL`` it is exactly the Toeplitz-like matrix with generators
``(G, H_TL)`` (implementation note ldr-sparse-monarch.md §2.3), which is how :func:`structmat.approximators.ldr.fit_ldr`
starts.

Rectangular ``m × n``: the top-left block of the N×N matrix, ``N = max(m, n)``, as for
:class:`~structmat.matrices.toeplitz_like.ToeplitzLike`.

**Cost.** A product applies ``B`` and then ``A`` N times to the block of vectors and multiplies by ``Hᵀ`` and
``G`` at every step: about ``(10 + 4r) N²`` flops per column against ``2 N²`` dense, with ``O(r N)`` memory per
column (note §2.2). This family saves parameters, not time. ``to_dense`` runs Horner's rule
``S ← A S Bᵀ + G Hᵀ`` (≈ 12 N³ flops, independent of r).

References
----------
A. Thomas, A. Gu, T. Dao, A. Rudra, C. Ré, "Learning compressed transforms with low displacement rank",
NeurIPS 2018, arXiv:1810.02309. V. Pan, "Structured Matrices and Polynomials", Birkhäuser 2001.
"""

from __future__ import annotations

import numpy as np

from structmat.matrices._ldr_kernels import _ldr_dense, _ldr_matmat, _operator_dense
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["LDR", "shift_operator"]

#: Numbers held by the Krylov coefficients of one chunk of a product (N · r · columns).
_CHUNK_ELEMENTS = 1 << 22


def shift_operator(N: int, f: float) -> np.ndarray:
    """The f-circulant shift ``Z_f`` as a (3, N) operator: subdiagonal ones and ``f`` in the corner ``[0, N-1]``."""
    op = np.zeros((3, N))
    op[0, :] = 1.0
    op[0, 0] = f
    return op


class LDR(StructuredMatrix):
    """``M = [Σ_j K(A, g_j) K(B, h_j)ᵀ][:m, :n]`` with periodic tridiagonal operators ``A``, ``B``.

    Parameters
    ----------
    A, B : ndarray of shape (3, N)
        Operators: row 0 the subdiagonal with ``A[0, N-1]`` in column 0, row 1 the diagonal, row 2 the
        superdiagonal with ``A[N-1, 0]`` in column N−1 (so ``(A x)_i = a_{0i} x_{i-1} + a_{1i} x_i + a_{2i} x_{i+1}``,
        indices mod N).
    G, H : ndarray of shape (N, r)
        Generators.
    shape : tuple (m, n), optional
        The block kept, ``max(m, n) = N``; defaults to ``(N, N)``.
    dtype : float32 or float64, optional
        Defaults to float32 if every array is float32, else float64.

    Notes
    -----
    .. math:: \\text{nparams} = 2 r N + 6 N, \\qquad N = \\max(m, n).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> M = LDR.random((8, 6), rank=2, seed=0)
    >>> M
    LDR(shape=(8, 6), dtype=float64, nparams=80 (166.7%), rank=2)
    >>> x = rng.standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    """

    family = "ldr"
    _scale_arrays = ("G",)  # M = Σ_k A^k G Hᵀ (Bᵀ)^k is linear in G

    def __init__(self, A, B, G, H, shape=None, dtype=None) -> None:
        A, B, G, H = (np.asarray(a) for a in (A, B, G, H))
        for name, a in (("A", A), ("B", B), ("G", G), ("H", H)):
            if a.dtype.kind not in "fiu":
                raise TypeError(f"{name} must hold real numbers; got dtype {a.dtype}")
        if G.ndim != 2 or G.shape != H.shape or G.shape[0] < 1 or G.shape[1] < 1:
            raise ValueError(f"G and H must be 2-D arrays of the same shape (N, r) with N, r >= 1; "
                             f"got {G.shape} and {H.shape}")
        N, r = G.shape
        if A.shape != (3, N) or B.shape != (3, N):
            raise ValueError(f"A and B must have shape (3, N) = (3, {N}) (sub-, main and superdiagonal with the "
                             f"corners); got {A.shape} and {B.shape}")
        m, n = (N, N) if shape is None else (int(s) for s in shape)
        if max(m, n) != N or min(m, n) < 1:
            raise ValueError(f"shape must be (m, n) with max(m, n) = N = {N} (the rows of G and H); got {shape}")
        if dtype is None:
            dtype = np.float32 if all(a.dtype == np.float32 for a in (A, B, G, H)) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((m, n), dtype)
        self.A, self.B, self.G, self.H = (freeze(a, dtype) for a in (A, B, G, H))

    @property
    def rank(self) -> int:
        return self.G.shape[1]

    @property
    def size(self) -> int:
        """``N = max(m, n)``."""
        return self.G.shape[0]

    @property
    def nparams(self) -> int:
        """``2 r N + 6 N``: generators and both operators (corners included)."""
        return self.A.size + self.B.size + self.G.size + self.H.size

    def operators_dense(self) -> tuple[np.ndarray, np.ndarray]:
        """``(A, B)`` as dense N×N arrays (for checks)."""
        return _operator_dense(self.A), _operator_dense(self.B)

    def _product(self, opA, G, opB, H, X, rows):
        N, k = self.size, X.shape[1]
        X_pad = np.zeros((N, k), dtype=self.dtype)
        X_pad[: X.shape[0]] = X
        out = np.empty((rows, k), dtype=self.dtype)
        step = max(1, _CHUNK_ELEMENTS // (N * self.rank))
        for start in range(0, k, step):
            cols = slice(start, min(k, start + step))
            out[:, cols] = _ldr_matmat(opA, G, opB, H, np.ascontiguousarray(X_pad[:, cols]))[:rows]
        return out

    def _matmat(self, X):
        return self._product(self.A, self.G, self.B, self.H, X, self.shape[0])

    def _rmatmat(self, Y):
        return self._product(self.B, self.H, self.A, self.G, Y, self.shape[1])

    def to_dense(self) -> np.ndarray:
        """Horner's rule ``S ← A S Bᵀ + G Hᵀ`` in float64 (≈ 12 N³ flops), then the m×n block; just ``G Hᵀ`` when
        ``A = 0`` (the low-rank members), where every Horner step returns it."""
        m, n = self.shape
        Q = self.G.astype(np.float64) @ self.H.astype(np.float64).T
        S = Q if not np.any(self.A) else _ldr_dense(self.A.astype(np.float64), self.B.astype(np.float64), Q)
        return np.ascontiguousarray(S[:m, :n], dtype=self.dtype)

    def _arrays(self):
        return {"A": self.A, "B": self.B, "G": self.G, "H": self.H}

    def _meta(self) -> dict:
        return {"shape": list(self.shape)}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls(arrays["A"], arrays["B"], arrays["G"], arrays["H"], shape=tuple(meta["shape"]),
                   dtype=np.result_type(*(arrays[k] for k in "ABGH")))

    def _repr_extra(self) -> str:
        return f"rank={self.rank}"

    def padded(self, rank: int) -> "LDR":
        """The same matrix at rank ``rank >= self.rank``: zero generator columns appended, operators unchanged."""
        rank = int(rank)
        if rank < self.rank:
            raise ValueError(f"rank must be at least the current rank {self.rank}; got {rank}")
        extra = np.zeros((self.size, rank - self.rank), dtype=self.dtype)
        return LDR(self.A, self.B, np.hstack([self.G, extra]), np.hstack([self.H, extra]), shape=self.shape,
                   dtype=self.dtype)

    @classmethod
    def from_lowrank(cls, lowrank, rank: int | None = None) -> "LDR | None":
        """The low-rank matrix ``U Vᵀ`` as an LDR matrix of the same rank: zero operators ``A = B = 0``.

        With ``A = 0`` the Krylov matrix is ``K(0, g) = [g, 0, …, 0]``, so ``Σ_j K(0, g_j) K(0, h_j)ᵀ = G Hᵀ``: every
        rank-r matrix is an LDR matrix of rank r (``U``, ``V`` zero-padded to N rows), at ``2 r N + 6 N`` parameters
        against low rank's ``r (m + n)``. ``rank`` (at least the low rank's) pads with zero generator columns.
        Returns None for a matrix that is not :class:`~structmat.matrices.lowrank.LowRank` or a smaller ``rank``.

        Examples
        --------
        >>> import numpy as np
        >>> from structmat.matrices.lowrank import LowRank
        >>> L = LowRank.random((8, 6), rank=2, seed=0)
        >>> M = LDR.from_lowrank(L)
        >>> M.rank, bool(np.allclose(M.to_dense(), L.to_dense()))
        (2, True)
        """
        from structmat.matrices.lowrank import LowRank

        if not isinstance(lowrank, LowRank):
            return None
        m, n = lowrank.shape
        N, k = max(m, n), lowrank.rank
        rank = k if rank is None else int(rank)
        if rank < k or rank < 1:
            return None
        G = np.zeros((N, rank))
        H = np.zeros((N, rank))
        G[:m, :k], H[:n, :k] = lowrank.U, lowrank.V
        return cls(np.zeros((3, N)), np.zeros((3, N)), G, H, shape=(m, n), dtype=lowrank.dtype)

    @classmethod
    def random(cls, shape, *, rank: int = 2, operator_noise: float = 0.0, seed=None, dtype=np.float64) -> "LDR":
        """A random LDR matrix with Gaussian generators (entries of about 1) and operators ``Z_1`` and ``Z_{-1}``
        plus ``operator_noise`` times Gaussian perturbations of every operator entry (diagonals and corners).

        The default ``operator_noise=0`` gives the Toeplitz-like special case, the one an exact-recovery check can
        expect a fit to find (learned operators are found by local optimisation, never exactly).
        """
        m, n = (int(s) for s in shape)
        N = max(m, n)
        rank = max(1, min(int(rank), N))
        rng = np.random.default_rng(seed)
        scale = (1.0 / (rank * N)) ** 0.25
        G = scale * rng.standard_normal((N, rank))
        H = scale * rng.standard_normal((N, rank))
        A = shift_operator(N, 1.0) + operator_noise * rng.standard_normal((3, N))
        B = shift_operator(N, -1.0) + operator_noise * rng.standard_normal((3, N))
        return cls(A, B, G, H, shape=(m, n), dtype=dtype)
