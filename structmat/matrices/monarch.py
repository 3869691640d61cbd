"""Monarch matrices (Dao et al., ICML 2022): two block-diagonal factors around a fixed permutation.

With the input split into ``K`` blocks of size ``I`` (``n = K·I``) and the output into ``J`` interleaved groups
(``m = L_r·J``, output index ``l·J + j``), a Monarch matrix of rank ``t`` is

.. math:: M[l J + j,\\; k I + i] = \\sum_{τ < t} L_j[l,\\; k t + τ]\\, R_k[j t + τ,\\; i],

i.e. ``M = P_out · diag(L_0 … L_{J-1}) · P · diag(R_0 … R_{K-1})`` with ``R_k`` of shape ``(J t, I)``, ``L_j`` of
shape ``(L_r, K t)`` and ``P`` the Monarch permutation ``(k, j, τ) → (j, k, τ)``. For a square ``n = b²`` with
``K = J = b`` and ``t = 1`` this is ``P L Pᵀ R`` of Dao et al. (2022), Sec. 3.1; ``t > 1`` is a sum of ``t`` such
products (Dao et al. 2022, Sec. 3.2, "Monarch of rank t"), and ``K = J = 1`` is a rank-``t`` matrix.

Rectangular shapes that ``K`` or ``J`` do not divide are handled by zero padding: the factors act on
``K·⌈n/K⌉`` inputs and produce ``J·⌈m/J⌉`` outputs, of which the first ``n`` / ``m`` are used. The stored
factors then hold entries that touch only padding (the fit sets them to zero); they are counted in ``nparams``
because they are stored.

References
----------
T. Dao, B. Chen, N. Sohoni, A. Desai, M. Poli, J. Grogan, A. Liu, A. Rao, A. Rudra, C. Ré, "Monarch: expressive
structured matrices for efficient and accurate training", ICML 2022, arXiv:2204.00595, eq. (1) and Sec. 3.
"""

from __future__ import annotations

import math

import numpy as np

from structmat.matrices.base import StructuredMatrix, float_dtype, freeze

__all__ = ["Monarch", "monarch_nparams"]


def monarch_nparams(shape: tuple[int, int], in_blocks: int, out_blocks: int, rank: int) -> int:
    """``t · J · K · (⌈n/K⌉ + ⌈m/J⌉)``: the stored numbers of a Monarch matrix (``t (J n + K m)`` unpadded)."""
    m, n = shape
    return rank * out_blocks * in_blocks * (math.ceil(n / in_blocks) + math.ceil(m / out_blocks))


class Monarch(StructuredMatrix):
    """A Monarch matrix of rank ``t``: block-diagonal ``R`` (``K`` blocks), the Monarch permutation, then
    block-diagonal ``L`` (``J`` blocks).

    Parameters
    ----------
    R : ndarray of shape (K, J·t, I)
        The right (first applied) factor's blocks; ``R[k]`` maps input block ``k`` (entries ``k·I … k·I+I-1``).
    L : ndarray of shape (J, L_r, K·t)
        The left factor's blocks; ``L[j]`` produces the outputs ``j, j + J, j + 2J, …``.
    shape : (m, n), optional
        Defaults to ``(L_r·J, K·I)``; smaller shapes crop the padding, which must stay below one block:
        ``⌈n/K⌉ = I`` and ``⌈m/J⌉ = L_r``.
    dtype : float32 or float64, optional

    Notes
    -----
    .. math:: \\text{nparams} = t\\,J K\\,(I + L_r) = t\\,(J n + K m) \\text{ without padding},

    which is also the multiply-add count of a product with one vector.

    Examples
    --------
    >>> import numpy as np
    >>> M = Monarch.random((16, 16), in_blocks=4, out_blocks=4, rank=1, seed=0)
    >>> M
    Monarch(shape=(16, 16), dtype=float64, nparams=128 (50.0%), in_blocks=4, out_blocks=4, rank=1)
    >>> x = np.arange(16.0)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    """

    family = "monarch"
    _scale_arrays = ("L",)

    def scale_rows(self, weights) -> "Monarch":
        """``diag(weights) @ M``: output ``l·J + j`` is row ``l`` of ``L[j]``, scaled in place (padding rows keep
        weight 1)."""
        weights = self._row_weights(weights)
        arrays = dict(self._arrays())
        L = arrays["L"]
        full = np.ones(L.shape[0] * L.shape[1])
        full[:weights.size] = weights
        arrays["L"] = (L * full.reshape(L.shape[1], L.shape[0]).T[:, :, None]).astype(L.dtype)
        return type(self)._from_arrays(arrays, self._meta())

    def __init__(self, R, L, shape=None, dtype=None) -> None:
        R, L = np.asarray(R), np.asarray(L)
        if R.ndim != 3 or L.ndim != 3:
            raise ValueError(f"R and L must be 3-D block stacks (K, J·t, I) and (J, L_r, K·t); got shapes "
                             f"{R.shape} and {L.shape}")
        K, Jt, I = R.shape
        J, Lr, Kt = L.shape
        if min(K, J, I, Lr) < 1 or Jt == 0 or Jt % J or Kt != K * (Jt // J):
            raise ValueError(f"R of shape (K, J·t, I) = {R.shape} and L of shape (J, L_r, K·t) = {L.shape} must "
                             f"share K, J and a rank t >= 1")
        if shape is None:
            shape = (Lr * J, K * I)
        m, n = (int(s) for s in shape)
        if m < 1 or n < 1 or math.ceil(n / K) != I or math.ceil(m / J) != Lr:
            raise ValueError(f"shape {tuple(shape)} does not fit the blocks: need ceil(n/K) = I and ceil(m/J) = L_r "
                             f"with K={K}, I={I}, J={J}, L_r={Lr}")
        if dtype is None:
            dtype = np.float32 if (R.dtype == np.float32 and L.dtype == np.float32) else np.float64
        dtype = float_dtype(dtype)
        super().__init__((m, n), dtype)
        self.R = freeze(R, dtype)
        self.L = freeze(L, dtype)

    @property
    def in_blocks(self) -> int:
        """``K``: the number of diagonal blocks of ``R`` (input blocks)."""
        return self.R.shape[0]

    @property
    def out_blocks(self) -> int:
        """``J``: the number of diagonal blocks of ``L`` (interleaved output groups)."""
        return self.L.shape[0]

    @property
    def rank(self) -> int:
        """``t``: the rank of every ``(L_r, I)`` block of the matrix."""
        return self.R.shape[1] // self.out_blocks

    @property
    def nparams(self) -> int:
        """``t · J · K · (I + L_r)``."""
        return self.R.size + self.L.size

    def _matmat(self, X):
        K, Jt, I = self.R.shape
        J, Lr, _ = self.L.shape
        t = Jt // J
        m, n = self.shape
        k = X.shape[1]
        if K * I != n:
            X = np.concatenate([X, np.zeros((K * I - n, k), dtype=X.dtype)])
        U = np.matmul(self.R, X.reshape(K, I, k))                            # (K, J·t, k)
        U = U.reshape(K, J, t, k).transpose(1, 0, 2, 3).reshape(J, K * t, k)  # the Monarch permutation
        V = np.matmul(self.L, U)                                             # (J, L_r, k)
        return np.ascontiguousarray(V.transpose(1, 0, 2).reshape(Lr * J, k)[:m])

    def _rmatmat(self, Y):
        K, Jt, I = self.R.shape
        J, Lr, _ = self.L.shape
        t = Jt // J
        m, n = self.shape
        k = Y.shape[1]
        if Lr * J != m:
            Y = np.concatenate([Y, np.zeros((Lr * J - m, k), dtype=Y.dtype)])
        V = Y.reshape(Lr, J, k).transpose(1, 0, 2)                            # (J, L_r, k)
        U = np.matmul(self.L.transpose(0, 2, 1), V)                          # (J, K·t, k)
        U = U.reshape(J, K, t, k).transpose(1, 0, 2, 3).reshape(K, J * t, k)
        X = np.matmul(self.R.transpose(0, 2, 1), U)                          # (K, I, k)
        return np.ascontiguousarray(X.reshape(K * I, k)[:n])

    def to_dense(self) -> np.ndarray:
        K, Jt, I = self.R.shape
        J, Lr, _ = self.L.shape
        t = Jt // J
        m, n = self.shape
        # D[l, j, k, i] = Σ_τ L[j, l, k, τ] R[k, j, τ, i]
        D = np.einsum("jlkt,kjti->ljki", self.L.reshape(J, Lr, K, t), self.R.reshape(K, J, t, I))
        return np.ascontiguousarray(D.reshape(Lr * J, K * I)[:m, :n])

    def _arrays(self):
        return {"R": self.R, "L": self.L}

    def _meta(self) -> dict:
        return {"shape": list(self.shape)}  # the padding is not implied by the blocks

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls(arrays["R"], arrays["L"], shape=tuple(meta["shape"]),
                   dtype=np.result_type(arrays["R"], arrays["L"]))

    def _repr_extra(self) -> str:
        return f"in_blocks={self.in_blocks}, out_blocks={self.out_blocks}, rank={self.rank}"

    @classmethod
    def from_lowrank(cls, lowrank) -> "Monarch":
        """``U Vᵀ`` as the Monarch matrix with one block per side (``K = J = 1``, ``t = r``): the same
        ``nparams = r (m + n)``, so Monarch contains low rank."""
        m, n = lowrank.shape
        return cls(lowrank.V.T[None], lowrank.U[None], shape=(m, n), dtype=lowrank.dtype)

    @classmethod
    def random(cls, shape, *, in_blocks: int | None = None, out_blocks: int | None = None, rank: int = 1,
               seed=None, dtype=np.float64) -> "Monarch":
        """A random Monarch matrix (Gaussian blocks, zero on the padding); block counts default to
        :func:`default_blocks` of each side (about its square root)."""
        m, n = shape
        K = default_blocks(n) if in_blocks is None else in_blocks
        J = default_blocks(m) if out_blocks is None else out_blocks
        I, Lr = math.ceil(n / K), math.ceil(m / J)
        rank = max(1, min(rank, I, Lr))
        rng = np.random.default_rng(seed)
        R = rng.standard_normal((K, J * rank, I))
        L = rng.standard_normal((J, Lr, K * rank))
        padded_in = np.arange(K)[:, None] * I + np.arange(I)[None, :] >= n     # (K, I)
        padded_out = np.arange(Lr)[None, :] * J + np.arange(J)[:, None] >= m   # (J, L_r)
        R[np.broadcast_to(padded_in[:, None, :], R.shape)] = 0.0
        L[np.broadcast_to(padded_out[:, :, None], L.shape)] = 0.0
        return cls(R, L, shape=(m, n), dtype=dtype)


def default_blocks(side: int) -> int:
    """The block count nearest ``√side`` (at least 2 when ``side >= 2``), a divisor of ``side`` if one lies within
    a factor 2 of ``√side`` (no padding), else ``round(√side)``."""
    if side < 2:
        return 1
    root = math.sqrt(side)
    divisors = [k for k in range(2, side + 1) if side % k == 0 and root / 2 <= k <= 2 * root]
    if divisors:
        return min(divisors, key=lambda k: (abs(math.log(k / root)), k))
    return max(2, round(root))
