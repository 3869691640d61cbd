"""Sequentially semiseparable (SSS) matrices: the input-output map of a time-varying system with K stages.

Structure (stages numbered from 0 here and in the code; Chandrasekaran, Dewilde, Gu et al. 2005, eq. (1.2),
and Dewilde & van der Veen 1998 number them from 1). The rows are split as ``m = Σ m_k`` and the columns as
``n = Σ n_k`` (any ``m_k`` or ``n_k`` may be 0); block ``(i, j)`` of the matrix is

.. math::

    M_{ij} = \\begin{cases}
        C_i A_{i-1} \\cdots A_{j+1} B_j & i > j \\quad\\text{(causal part)} \\\\
        D_i & i = j \\\\
        G_i E_{i+1} \\cdots E_{j-1} F_j & i < j \\quad\\text{(anticausal part)}
    \\end{cases}

with causal state dims ``d[0..K]`` and anticausal state dims ``e[0..K]``, ``d[0] = d[K] = e[0] = e[K] = 0``:
``A_k`` is ``d[k+1] × d[k]``, ``B_k`` is ``d[k+1] × n_k``, ``C_k`` is ``m_k × d[k]``, ``D_k`` is ``m_k × n_k``,
``E_k`` is ``e[k] × e[k+1]``, ``F_k`` is ``e[k] × n_k``, ``G_k`` is ``m_k × e[k+1]``. Generators at the ends
(``A_0``, ``C_0``, ``A_{K-1}``, ``B_{K-1}``, ``E_0``, ``F_0``, ``E_{K-1}``, ``G_{K-1}``) have a zero side.

``M @ x`` is a forward sweep ``y_k = C_k x + D_k u_k, x ← A_k x + B_k u_k`` plus a backward sweep
``y_k += G_k z, z ← E_k z + F_k u_k``; ``M.T @ v`` runs the two sweeps in the opposite directions. Both cost
exactly ``nparams`` multiply-adds per column.

Storage layout (stable: the C kernels of ``speed_c`` read exactly these arrays)
-------------------------------------------------------------------------------
Integer arrays (int64 in memory and in files):

- ``m_sizes`` (K,): rows per stage; ``n_sizes`` (K,): columns per stage;
- ``causal_dims`` (K+1,): ``d[0..K]``; ``anticausal_dims`` (K+1,): ``e[0..K]`` (both with zero ends);
- optional ``row_order`` (m,) and ``col_order`` (n,): stored permutations (see below).

Float arrays, one per generator kind, each the concatenation over k = 0..K-1 of the stage matrices in
**row-major (C) order**: ``A`` (Σ d[k+1]·d[k]), ``B`` (Σ d[k+1]·n_k), ``C`` (Σ m_k·d[k]), ``D`` (Σ m_k·n_k),
``E`` (Σ e[k]·e[k+1]), ``F`` (Σ e[k]·n_k), ``G`` (Σ m_k·e[k+1]). Stage k of kind X starts at the sum of the
sizes of the earlier stages of X (no padding). Row offsets are ``r_k = Σ_{i<k} m_i``, column offsets
``c_k = Σ_{i<k} n_i``.

Permutations: with ``row_order``/``col_order`` stored, the SSS core ``S`` (the arrays above) represents
``M[row_order[i], col_order[j]] = S[i, j]``, so ``M @ x = scatter(S @ x[col_order], row_order)``
(:mod:`structmat.matrices.permutation`).

Counts: ``nparams`` = total size of the seven float arrays (eq. in :func:`sss_nparams`); ``nindices`` =
``4K + 2`` stage sizes and dims plus the lengths of the stored permutations; ``nbytes = 4 nparams + 4 nindices``.

Transposition is a relabeling (``transpose()`` returns an ``SSS``): ``Mᵀ`` has stages ``(n_k, m_k)`` and
``A' = Eᵀ, B' = Gᵀ, C' = Fᵀ, D' = Dᵀ, E' = Aᵀ, F' = Cᵀ, G' = Bᵀ`` blockwise, ``d' = e``, ``e' = d``.

References
----------
1. S. Chandrasekaran, P. Dewilde, M. Gu, T. Pals, X. Sun, A.-J. van der Veen, D. White, "Some fast
   algorithms for sequentially semiseparable representations", SIAM J. Matrix Anal. Appl. 27(2):341-364,
   2005, doi:10.1137/S0895479802405884.
2. P. Dewilde, A.-J. van der Veen, *Time-Varying Systems and Computations*, Kluwer, 1998.
"""

from __future__ import annotations

import numpy as np

from structmat.matrices import _sss_kernels as kernels
from structmat.matrices.base import StructuredMatrix, float_dtype, freeze
from structmat.matrices.permutation import check_permutation, count_indices, gather, scatter, unpermute

__all__ = ["SSS", "GENERATORS", "stage_sizes", "cap_causal_dims", "cap_dims", "sss_nparams"]

#: The generator kinds in storage order.
GENERATORS = ("A", "B", "C", "D", "E", "F", "G")


def stage_sizes(total: int, num_stages: int) -> np.ndarray:
    """Split ``total`` into ``num_stages`` near-equal sizes with cut points ``⌊k·total/K⌋``, so that with
    ``K > total`` the empty stages are spread out (rows and columns then stay aligned proportionally)."""
    cuts = (np.arange(int(num_stages) + 1, dtype=np.int64) * int(total)) // int(num_stages)
    return np.diff(cuts)


def _shapes(m_sizes, n_sizes, d, e) -> dict[str, list[tuple[int, int]]]:
    """The shape of every stage matrix of every kind, from the sizes and dims."""
    K = len(m_sizes)
    m, n, d, e = (list(map(int, a)) for a in (m_sizes, n_sizes, d, e))
    return {
        "A": [(d[k + 1], d[k]) for k in range(K)],
        "B": [(d[k + 1], n[k]) for k in range(K)],
        "C": [(m[k], d[k]) for k in range(K)],
        "D": [(m[k], n[k]) for k in range(K)],
        "E": [(e[k], e[k + 1]) for k in range(K)],
        "F": [(e[k], n[k]) for k in range(K)],
        "G": [(m[k], e[k + 1]) for k in range(K)],
    }


def sss_nparams(m_sizes, n_sizes, causal_dims, anticausal_dims) -> int:
    """Exact count of stored numbers:

    ``Σ_k m_k n_k + Σ_k (d[k+1] d[k] + d[k+1] n_k + m_k d[k]) + Σ_k (e[k] e[k+1] + e[k] n_k + m_k e[k+1])``.
    """
    m, n = np.asarray(m_sizes, np.int64), np.asarray(n_sizes, np.int64)
    d, e = np.asarray(causal_dims, np.int64), np.asarray(anticausal_dims, np.int64)
    causal = d[1:] * d[:-1] + d[1:] * n + m * d[:-1]
    anticausal = e[:-1] * e[1:] + e[:-1] * n + m * e[1:]
    return int(np.sum(m * n) + causal.sum() + anticausal.sum())


def cap_causal_dims(m_sizes, n_sizes, requested) -> np.ndarray:
    """Largest causal dims ``<= requested`` that a minimal realization can have.

    Caps: ``d[0] = d[K] = 0``; the Hankel block ``W[r_b:, :c_b]`` bounds ``d[b] <= min(m - r_b, c_b)``;
    reachability ``d[b+1] <= d[b] + n_b`` and observability ``d[b] <= d[b+1] + m_b`` (iterated to a fixed point).
    """
    m_sizes, n_sizes = np.asarray(m_sizes, np.int64), np.asarray(n_sizes, np.int64)
    K = m_sizes.shape[0]
    d = np.minimum(np.asarray(requested, np.int64).copy(), 10**12)
    rows_after = int(m_sizes.sum()) - np.concatenate([[0], np.cumsum(m_sizes)])
    cols_before = np.concatenate([[0], np.cumsum(n_sizes)])
    d = np.minimum(d, np.minimum(rows_after, cols_before))
    d[0] = d[K] = 0
    d = np.maximum(d, 0)
    # d[b] <= d[j] + (n_j + … + n_{b-1}) for all j < b is a running minimum of d - S with S the prefix sums of n;
    # d[b] <= d[j] + (m_b + … + m_{j-1}) for all j > b likewise from the right. Alternate until nothing changes.
    S = cols_before
    T = np.concatenate([np.cumsum(m_sizes[::-1])[::-1], [0]])  # T[b] = m_b + … + m_{K-1}
    while True:
        before = d.copy()
        d = np.minimum(d, np.minimum.accumulate(d - S) + S)
        d = np.minimum(d, np.minimum.accumulate((d - T)[::-1])[::-1] + T)
        if np.array_equal(before, d):
            return d


def cap_dims(m_sizes, n_sizes, causal, anticausal) -> tuple[np.ndarray, np.ndarray]:
    """Capped ``(causal_dims, anticausal_dims)``; the anticausal caps are the causal caps of the transpose."""
    return cap_causal_dims(m_sizes, n_sizes, causal), cap_causal_dims(n_sizes, m_sizes, anticausal)


def _int_array(values, name: str, length: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise TypeError(f"{name} must hold integers; got dtype {array.dtype}")
    if array.ndim != 1 or (length is not None and array.shape[0] != length):
        want = f"({length},)" if length is not None else "(K,)"
        raise ValueError(f"{name} must have shape {want}; got {array.shape}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be >= 0; got {array.tolist()}")
    out = array.astype(np.int64)
    out.flags.writeable = False
    return out


class SSS(StructuredMatrix):
    """A sequentially semiseparable matrix (see the module docstring for the structure and the layout).

    Parameters
    ----------
    A, B, C, D, E, F, G : sequences of K 2-D arrays
        The stage matrices, ``A[k]`` of shape ``(d[k+1], d[k])`` and so on (module docstring). The stage sizes
        come from ``D[k].shape`` and the state dims from ``C[k].shape[1]`` (d[k]) and ``G[k].shape[1]``
        (e[k+1]); every other shape must chain with them.
    row_order, col_order : permutations of range(m) / range(n), optional
        Stored with the matrix: ``M[row_order[i], col_order[j]] = S[i, j]`` for the SSS core ``S``.
    dtype : float32 or float64, optional
        Defaults to float32 if every stage matrix is float32, else float64.

    Raises
    ------
    ValueError
        a shape that does not chain, naming the stage and the expected shape; non-finite values.

    Notes
    -----
    ``nparams = Σ_k m_k n_k + Σ_k (d[k+1] d[k] + d[k+1] n_k + m_k d[k]) + Σ_k (e[k] e[k+1] + e[k] n_k + m_k e[k+1])``,
    and a product costs exactly ``nparams`` multiply-adds per column.

    Examples
    --------
    >>> M = SSS.random((8, 6), num_stages=3, state_dim=1, seed=0)
    >>> M
    SSS(shape=(8, 6), dtype=float64, nparams=37 (77.1%), num_stages=3, causal_dims=[0, 1, 1, 0], anticausal_dims=[0, 1, 1, 0])
    >>> import numpy as np
    >>> x = np.random.default_rng(1).standard_normal(6)
    >>> bool(np.allclose(M @ x, M.to_dense() @ x))
    True
    >>> bool(np.allclose(M.T.to_dense(), M.to_dense().T))
    True
    """

    family = "sss"
    _scale_arrays = ("C", "D", "G")  # every output block; the states (A, B, E, F) are untouched

    def __init__(self, A, B, C, D, E, F, G, *, row_order=None, col_order=None, dtype=None) -> None:
        stages = {"A": A, "B": B, "C": C, "D": D, "E": E, "F": F, "G": G}
        lengths = {kind: len(value) for kind, value in stages.items()}
        if len(set(lengths.values())) != 1 or lengths["D"] < 1:
            raise ValueError(f"A..G must be sequences of the same number K >= 1 of stage matrices; got lengths {lengths}")
        mats = {kind: [np.asarray(x) for x in value] for kind, value in stages.items()}
        for kind, values in mats.items():
            for k, x in enumerate(values):
                if x.ndim != 2:
                    raise ValueError(f"stage {k}: {kind}_{k} must be 2-D; got shape {x.shape}")
                if x.dtype.kind not in "fiu":
                    raise TypeError(f"stage {k}: {kind}_{k} must hold real numbers; got dtype {x.dtype}")
        K = lengths["D"]
        m_sizes = [x.shape[0] for x in mats["D"]]
        n_sizes = [x.shape[1] for x in mats["D"]]
        d = [x.shape[1] for x in mats["C"]] + [0]
        e = [0] + [x.shape[1] for x in mats["G"]]
        if d[0] != 0:
            raise ValueError(f"stage 0: C_0 must have 0 columns (no causal state enters the first stage); got shape {mats['C'][0].shape}")
        if e[K] != 0:
            raise ValueError(f"stage {K - 1}: G_{K - 1} must have 0 columns (no anticausal state enters the last stage); "
                             f"got shape {mats['G'][K - 1].shape}")
        shapes = _shapes(m_sizes, n_sizes, d, e)
        for kind in GENERATORS:
            for k, (x, want) in enumerate(zip(mats[kind], shapes[kind])):
                if x.shape != want:
                    raise ValueError(
                        f"stage {k}: {kind}_{k} has shape {x.shape} but must be {want} "
                        f"(m_{k}={m_sizes[k]}, n_{k}={n_sizes[k]} from D_{k}; d[{k}]={d[k]}, d[{k + 1}]={d[k + 1]} from "
                        f"C_{k}, C_{k + 1}; e[{k}]={e[k]}, e[{k + 1}]={e[k + 1]} from G_{k - 1}, G_{k})"
                    )
        if dtype is None:
            all32 = all(x.dtype == np.float32 for values in mats.values() for x in values)
            dtype = np.float32 if all32 else np.float64
        flats = {kind: np.concatenate([x.ravel() for x in mats[kind]] + [np.zeros(0)]) for kind in GENERATORS}
        self._setup(m_sizes, n_sizes, d, e, flats, row_order, col_order, dtype)

    @classmethod
    def from_flat(cls, m_sizes, n_sizes, causal_dims, anticausal_dims, *, A, B, C, D, E, F, G,
                  row_order=None, col_order=None, dtype=None) -> "SSS":
        """Build from the flat storage layout (module docstring); validates every array length."""
        self = cls.__new__(cls)
        flats = {"A": A, "B": B, "C": C, "D": D, "E": E, "F": F, "G": G}
        if dtype is None:
            dtype = np.float32 if all(np.asarray(v).dtype == np.float32 for v in flats.values()) else np.float64
        self._setup(m_sizes, n_sizes, causal_dims, anticausal_dims, flats, row_order, col_order, dtype)
        return self

    def _setup(self, m_sizes, n_sizes, d, e, flats, row_order, col_order, dtype) -> None:
        m_sizes = _int_array(m_sizes, "m_sizes")
        K = m_sizes.shape[0]
        if K < 1:
            raise ValueError("an SSS matrix needs at least one stage; got m_sizes of length 0")
        n_sizes = _int_array(n_sizes, "n_sizes", K)
        d = _int_array(d, "causal_dims", K + 1)
        e = _int_array(e, "anticausal_dims", K + 1)
        if d[0] or d[K] or e[0] or e[K]:
            raise ValueError(f"causal_dims and anticausal_dims must start and end with 0; got {d.tolist()} and {e.tolist()}")
        dtype = float_dtype(dtype)
        super().__init__((int(m_sizes.sum()), int(n_sizes.sum())), dtype)
        shapes = _shapes(m_sizes, n_sizes, d, e)
        self._flat = {}
        for kind in GENERATORS:
            flat = np.asarray(flats[kind])
            want = sum(r * c for r, c in shapes[kind])
            if flat.ndim != 1 or flat.shape[0] != want:
                raise ValueError(f"flat {kind} must have shape ({want},) for these stage sizes and dims; got {flat.shape}")
            if flat.dtype.kind not in "fiu":
                raise TypeError(f"flat {kind} must hold real numbers; got dtype {flat.dtype}")
            flat = freeze(flat, dtype)
            if not np.isfinite(flat).all():
                bad = [k for k, blk in enumerate(_split(flat, shapes[kind])) if not np.isfinite(blk).all()]
                raise ValueError(f"stage {bad[0]}: {kind}_{bad[0]} has NaN or Inf entries")
            self._flat[kind] = flat
        self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims = m_sizes, n_sizes, d, e
        self.row_order = check_permutation(row_order, self.shape[0], "row_order")
        self.col_order = check_permutation(col_order, self.shape[1], "col_order")

    # ---------------------------------------------------------------- structure
    @property
    def num_stages(self) -> int:
        return int(self.m_sizes.shape[0])

    def flat(self, kind: str) -> np.ndarray:
        """The flat (read-only) array of generator ``kind`` in ``"ABCDEFG"``."""
        if kind not in GENERATORS:
            raise ValueError(f"kind must be one of {GENERATORS}; got {kind!r}")
        return self._flat[kind]

    def stages(self, kind: str) -> list[np.ndarray]:
        """The K stage matrices of generator ``kind``, as read-only views into the flat array."""
        shapes = _shapes(self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims)
        return _split(self.flat(kind), shapes[kind])

    def _kernel_args(self):
        return (self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims,
                *(self._flat[kind] for kind in GENERATORS))

    @property
    def nparams(self) -> int:
        """Total size of the seven generator arrays (see :func:`sss_nparams`)."""
        return sum(int(v.size) for v in self._flat.values())

    @property
    def nindices(self) -> int:
        """``4K + 2`` stage sizes and state dims, plus the stored permutations' lengths."""
        return 4 * self.num_stages + 2 + count_indices(self.row_order, self.col_order)

    # ---------------------------------------------------------------- products
    def _matmat(self, X):
        X = np.ascontiguousarray(gather(X, self.col_order), dtype=self.dtype)
        Y = np.zeros((self.shape[0], X.shape[1]), dtype=self.dtype)
        kernels.sss_matmat(*self._kernel_args(), X, Y)
        return scatter(Y, self.row_order)

    def _rmatmat(self, Y):
        Y = np.ascontiguousarray(gather(Y, self.row_order), dtype=self.dtype)
        Z = np.zeros((self.shape[1], Y.shape[1]), dtype=self.dtype)
        kernels.sss_rmatmat(*self._kernel_args(), Y, Z)
        return scatter(Z, self.col_order)

    def core_dense(self) -> np.ndarray:
        """The dense SSS core ``S`` (before the stored permutations are applied)."""
        out = np.zeros(self.shape, dtype=self.dtype)
        return kernels.sss_to_dense(*self._kernel_args(), out)

    def to_dense(self) -> np.ndarray:
        return unpermute(self.core_dense(), self.row_order, self.col_order)

    def transpose(self) -> "SSS":
        """``Mᵀ`` as an SSS matrix (a relabeling of the generators; see the module docstring)."""
        shapes = _shapes(self.m_sizes, self.n_sizes, self.causal_dims, self.anticausal_dims)

        def t(kind):
            return np.concatenate([x.T.ravel() for x in _split(self._flat[kind], shapes[kind])] + [np.zeros(0, self.dtype)])

        return SSS.from_flat(self.n_sizes, self.m_sizes, self.anticausal_dims, self.causal_dims,
                             A=t("E"), B=t("G"), C=t("F"), D=t("D"), E=t("A"), F=t("C"), G=t("B"),
                             row_order=self.col_order, col_order=self.row_order, dtype=self.dtype)

    # ---------------------------------------------------------------- files
    def _arrays(self):
        arrays = {"m_sizes": self.m_sizes, "n_sizes": self.n_sizes, "causal_dims": self.causal_dims,
                  "anticausal_dims": self.anticausal_dims, **self._flat}
        if self.row_order is not None:
            arrays["row_order"] = self.row_order
        if self.col_order is not None:
            arrays["col_order"] = self.col_order
        return arrays

    def _meta(self):
        return {"num_stages": self.num_stages}

    @classmethod
    def _from_arrays(cls, arrays, meta):
        return cls.from_flat(arrays["m_sizes"], arrays["n_sizes"], arrays["causal_dims"], arrays["anticausal_dims"],
                             **{kind: arrays[kind] for kind in GENERATORS},
                             row_order=arrays.get("row_order"), col_order=arrays.get("col_order"),
                             dtype=arrays["D"].dtype)

    def _repr_extra(self) -> str:
        text = (f"num_stages={self.num_stages}, causal_dims={_short(self.causal_dims)}, "
                f"anticausal_dims={_short(self.anticausal_dims)}")
        if self.row_order is not None or self.col_order is not None:
            text += ", permuted"
        return text

    @classmethod
    def random(cls, shape, *, num_stages: int = 4, state_dim: int = 2, m_sizes=None, n_sizes=None,
               seed=None, dtype=np.float64) -> "SSS":
        """A random SSS matrix: ``num_stages`` near-equal stages (or the given ``m_sizes``/``n_sizes``),
        state dims ``state_dim`` capped to a minimal realization (:func:`cap_dims`), Gaussian generators with
        transition matrices scaled to spectral norm 0.9 (so products over many stages stay bounded)."""
        m, n = (int(s) for s in shape)
        m_sizes = stage_sizes(m, num_stages) if m_sizes is None else np.asarray(m_sizes, np.int64)
        n_sizes = stage_sizes(n, num_stages) if n_sizes is None else np.asarray(n_sizes, np.int64)
        if m_sizes.shape != n_sizes.shape or int(m_sizes.sum()) != m or int(n_sizes.sum()) != n:
            raise ValueError(f"m_sizes and n_sizes must have equal lengths and sum to {shape}; got "
                             f"{m_sizes.tolist()} and {n_sizes.tolist()}")
        K = m_sizes.shape[0]
        d, e = cap_dims(m_sizes, n_sizes, np.full(K + 1, state_dim), np.full(K + 1, state_dim))
        rng = np.random.default_rng(seed)
        shapes = _shapes(m_sizes, n_sizes, d, e)
        flats = {}
        for kind in GENERATORS:
            blocks = []
            for r, c in shapes[kind]:
                x = rng.standard_normal((r, c))
                if kind in "AE" and x.size:
                    x *= 0.9 / np.linalg.norm(x, 2)
                elif kind in "BCFG" and x.size:
                    x /= np.sqrt(max(c, 1))
                blocks.append(x.ravel())
            flats[kind] = np.concatenate(blocks + [np.zeros(0)])
        return cls.from_flat(m_sizes, n_sizes, d, e, **flats, dtype=dtype)


def _split(flat: np.ndarray, shapes) -> list[np.ndarray]:
    out, start = [], 0
    for r, c in shapes:
        out.append(flat[start:start + r * c].reshape(r, c))
        start += r * c
    return out


def _short(dims: np.ndarray) -> str:
    values = dims.tolist()
    if len(values) <= 8:
        return str(values)
    return "[" + ", ".join(map(str, values[:3])) + ", …, " + ", ".join(map(str, values[-3:])) + f"] (max {max(values)})"
