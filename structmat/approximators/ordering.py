"""Orderings of the rows and columns of a weight matrix that make its off-diagonal blocks cheaper to compress.

Neurons can be renumbered freely: ``W`` and ``W[row_order][:, col_order]`` describe the same layer once the
permutation is stored with the matrix (:mod:`structmat.matrices.permutation`). Families that store diagonal
blocks exactly and compress off-diagonal ones (SSS, hierarchical matrices) gain when rows and columns that
interact strongly sit near each other and similar rows (columns) are adjacent.

Methods (all return ``(row_order, col_order)``, int64 permutations of ``range(m)`` and ``range(n)``):

``"spectral"``
    One-dimensional bipartite spectral embedding (co-clustering, Dhillon 2001): with ``A = W∘W`` (the energy of
    each entry), ``D_r = diag(A 1)``, ``D_c = diag(Aᵀ 1)``, take the second singular pair ``(u, v)`` of
    ``D_r^{-1/2} A D_c^{-1/2}`` and sort rows by ``D_r^{-1/2} u`` and columns by ``D_c^{-1/2} v``. Rows and
    columns are ordered jointly, so strongly coupled rows and columns land near the diagonal.
``"bisection"``
    Recursive spectral co-bisection: split the rows and the columns of each block at the median of the joint
    embedding above, pair the halves, recurse until a side has at most ``min_size`` indices. The result is a
    hierarchical (nested-dissection-like) ordering.
``"principal"``
    Recursive bisection of the rows (as points in Rⁿ) and, separately, of the columns (points in Rᵐ) by the
    sign of their projection on the principal direction of the centred cluster (PDDP, Boley 1998; clusters
    may be unbalanced). Similar rows
    become adjacent, which lowers the numerical rank of blocks ``W[τ, σ]`` for small row clusters ``τ``.
``"kmeans"``
    As ``"principal"``, but each split is refined by a few 2-means (Lloyd) iterations started from the
    principal split.
``"none"``
    The identity, returned as ``(None, None)``.

References
----------
1. I. S. Dhillon, "Co-clustering documents and words using bipartite spectral graph partitioning",
   KDD 2001, doi:10.1145/502512.502550 (Theorem 3 and Section 4: the second singular vectors of the
   normalized matrix ``D_1^{-1/2} A D_2^{-1/2}``).
2. D. Boley, "Principal direction divisive partitioning", Data Mining and Knowledge Discovery 2(4):325-344,
   1998, doi:10.1023/A:1009740529316.
"""

from __future__ import annotations

import numpy as np

from structmat._validation import check_positive_int, check_weight

__all__ = ["ORDERINGS", "order_rows_and_columns", "spectral_order", "bisection_order", "principal_order"]

ORDERINGS = ("none", "spectral", "bisection", "principal", "kmeans")

#: A floor on row/column energies, relative to the mean, so that all-zero rows do not divide by zero.
_ENERGY_FLOOR = 1e-12
_KMEANS_ITERATIONS = 8
#: Randomized subspace iteration for leading singular pairs: block size and power iterations.
_BLOCK = 6
_POWER_ITERATIONS = 4


def order_rows_and_columns(W, method: str = "spectral", *, min_size: int = 16, seed=None):
    """Row and column orders for ``W`` by ``method`` (see the module docstring); ``(None, None)`` for ``"none"``.

    Parameters
    ----------
    W : array_like of shape (m, n)
    method : {"none", "spectral", "bisection", "principal", "kmeans"}
    min_size : int
        Recursive methods stop splitting a cluster of at most this many indices.
    seed : int or None
        Seeds the iterative eigen-solvers' start vectors (results are deterministic for a given seed).

    Returns
    -------
    row_order : ndarray of shape (m,) or None
    col_order : ndarray of shape (n,) or None
        ``W[row_order][:, col_order]`` is the reordered matrix.

    Examples
    --------
    >>> import numpy as np
    >>> W = (np.kron(np.eye(2), np.ones((3, 2))) + 0.1)[[0, 3, 1, 4, 2, 5]][:, [0, 2, 1, 3]]
    >>> rows, cols = order_rows_and_columns(W, "spectral")
    >>> P = W[rows][:, cols]
    >>> bool(np.all(P[:3, 2:] < 1) or np.all(P[:3, :2] < 1))
    True
    """
    if method not in ORDERINGS:
        raise ValueError(f"ordering method must be one of {ORDERINGS}; got {method!r}")
    W = check_weight(W)
    min_size = check_positive_int(min_size, "min_size", minimum=1)
    if method == "none":
        return None, None
    if method == "spectral":
        return spectral_order(W, seed=seed)
    if method == "bisection":
        return bisection_order(W, min_size=min_size, seed=seed)
    return principal_order(W, min_size=min_size, refine=(method == "kmeans"), seed=seed)


def _leading_pair(X: np.ndarray, rng, deflate=None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate leading singular pair ``(u, v)`` of ``X`` (or of ``X - a bᵀ`` for ``deflate=(a, b)``) by
    randomized subspace iteration (Halko, Martinsson & Tropp 2011, Algorithm 4.4) with a block of
    ``_BLOCK`` vectors; enough accuracy for an ordering, at ``O(m n)`` cost."""
    m, n = X.shape

    def apply(V):  # X V, deflated
        out = X @ V
        return out if deflate is None else out - np.outer(deflate[0], deflate[1] @ V)

    def apply_t(U):  # Xᵀ U, deflated
        out = X.T @ U
        return out if deflate is None else out - np.outer(deflate[1], deflate[0] @ U)

    k = min(_BLOCK, m, n)
    Q, _ = np.linalg.qr(apply(rng.standard_normal((n, k))))
    for _ in range(_POWER_ITERATIONS):
        P, _ = np.linalg.qr(apply_t(Q))
        Q, _ = np.linalg.qr(apply(P))
    B = apply_t(Q).T  # (k, n) = Qᵀ X
    Ub, _, Vt = np.linalg.svd(B, full_matrices=False)
    return Q @ Ub[:, 0], Vt[0]


def _bipartite_embedding(A: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates from the second singular pair of the normalized bipartite matrix ``A ≥ 0``."""
    m, n = A.shape
    if min(m, n) <= 2:
        return np.arange(m, dtype=float), np.arange(n, dtype=float)
    floor = _ENERGY_FLOOR * max(float(A.mean()), np.finfo(float).tiny)
    row_energy = np.maximum(A.sum(axis=1), floor)
    col_energy = np.maximum(A.sum(axis=0), floor)
    dr, dc = 1.0 / np.sqrt(row_energy), 1.0 / np.sqrt(col_energy)
    An = A * dr[:, None] * dc[None, :]
    # The leading pair of An is known: singular value 1 with vectors ∝ sqrt(energies); deflate it.
    u1 = np.sqrt(row_energy) / np.linalg.norm(np.sqrt(row_energy))
    v1 = np.sqrt(col_energy) / np.linalg.norm(np.sqrt(col_energy))
    u, v = _leading_pair(An, rng, deflate=(u1 * (u1 @ An @ v1), v1))
    x, y = u * dr, v * dc
    sign = 1.0 if (x.sum() + y.sum()) >= 0 else -1.0  # a deterministic orientation
    return sign * x, sign * y


def spectral_order(W, *, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Joint row/column order from the bipartite spectral (Fiedler) embedding of ``W∘W`` (Dhillon 2001)."""
    W = check_weight(W)
    x, y = _bipartite_embedding(W * W, np.random.default_rng(seed))
    return np.argsort(x, kind="stable").astype(np.int64), np.argsort(y, kind="stable").astype(np.int64)


def bisection_order(W, *, min_size: int = 16, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Recursive spectral co-bisection: median splits of the joint embedding, halves paired, recursively."""
    W = check_weight(W)
    min_size = check_positive_int(min_size, "min_size", minimum=1)
    A = W * W
    rng = np.random.default_rng(seed)
    row_out: list[np.ndarray] = []
    col_out: list[np.ndarray] = []
    stack = [(np.arange(W.shape[0]), np.arange(W.shape[1]))]
    while stack:
        rows, cols = stack.pop()
        if rows.size <= min_size or cols.size <= min_size:
            row_out.append(rows)
            col_out.append(cols)
            continue
        x, y = _bipartite_embedding(A[np.ix_(rows, cols)], rng)
        rows, cols = rows[np.argsort(x, kind="stable")], cols[np.argsort(y, kind="stable")]
        hr, hc = rows.size // 2, cols.size // 2
        stack.append((rows[hr:], cols[hc:]))  # popped second, so it ends up after the first half
        stack.append((rows[:hr], cols[:hc]))
    return np.concatenate(row_out).astype(np.int64), np.concatenate(col_out).astype(np.int64)


def _split_points(X: np.ndarray, refine: bool, rng) -> np.ndarray:
    """A boolean mask splitting the rows of ``X`` (points) by the principal direction, optionally 2-means refined."""
    centred = X - X.mean(axis=0)
    u, _ = _leading_pair(centred, rng)
    score = u
    mask = score > 0.0  # the sign of the projection on the principal direction (PDDP)
    if not mask.any() or mask.all():
        mask = np.zeros(X.shape[0], dtype=bool)
        mask[np.argsort(score, kind="stable")[X.shape[0] // 2:]] = True
    if refine:
        for _ in range(_KMEANS_ITERATIONS):
            a, b = X[~mask].mean(axis=0), X[mask].mean(axis=0)
            new = ((X - b) ** 2).sum(axis=1) < ((X - a) ** 2).sum(axis=1)
            if new.all() or not new.any() or np.array_equal(new, mask):
                break
            mask = new
    return mask


def _bisect_side(X: np.ndarray, min_size: int, refine: bool, rng) -> np.ndarray:
    """Recursive bisection order of the rows of ``X``."""
    out: list[np.ndarray] = []
    stack = [np.arange(X.shape[0])]
    while stack:
        idx = stack.pop()
        if idx.size <= min_size:
            out.append(idx)
            continue
        mask = _split_points(X[idx], refine, rng)
        stack.append(idx[mask])
        stack.append(idx[~mask])
    return np.concatenate(out).astype(np.int64)


def principal_order(W, *, min_size: int = 16, refine: bool = False, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns each ordered by recursive principal-direction bisection (PDDP, Boley 1998);
    ``refine=True`` adds 2-means iterations to every split."""
    W = check_weight(W)
    min_size = check_positive_int(min_size, "min_size", minimum=1)
    rng = np.random.default_rng(seed)
    return _bisect_side(W, min_size, refine, rng), _bisect_side(W.T.copy(), min_size, refine, rng)
