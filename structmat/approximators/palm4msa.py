"""PALM4MSA and its hierarchical variant: fit ``W ≈ λ S_1 S_2 ⋯ S_J`` with each ``S_j`` in a sparsity set.

PALM4MSA (Le Magoarou & Gribonval 2016, Algorithm 2) minimises ``½‖W − λ S_1 ⋯ S_J‖_F²`` by proximal
(projected) gradient steps on one factor at a time,

.. math:: S_j \\leftarrow P_{E_j}\\Bigl(S_j - \\tfrac{1}{c_j}\\, λ L^\\top (λ L S_j R - W) R^\\top\\Bigr),
   \\qquad c_j = (1 + 10^{-3})\\, λ^2 \\|L\\|_2^2 \\|R\\|_2^2,

with ``L = S_1 ⋯ S_{j-1}``, ``R = S_{j+1} ⋯ S_J`` (the identity when empty) and ``c_j`` the Lipschitz constant
of the factor's gradient, then ``λ ← ⟨W, P⟩ / ‖P‖²`` for ``P = S_1 ⋯ S_J`` once per sweep. Each set ``E_j`` is a
sparsity pattern intersected with the unit sphere, so ``λ`` carries the scale; its projection keeps the largest
entries of the pattern and normalises them (a :class:`Constraint`). The hierarchical variant (Algorithm 3 of the
paper) peels one factor at a time off a residual: ``T_{ℓ-1} ≈ λ' S_ℓ T_ℓ`` by PALM4MSA with two factors, then
refits all the factors found so far against ``W``.

Everything is dense float64 NumPy here; products with factors sparser than ``SPARSE_PRODUCT_DENSITY`` go through
the Numba CSR kernels of :mod:`structmat.matrices._sparse_product_kernels`. Results are deterministic: initialisation is fixed (identity and zero, as FAµST), ties in
the projections are broken by position (a stable order), and power iterations start from fixed vectors.

References
----------
L. Le Magoarou, R. Gribonval, "Flexible multilayer sparse approximations of matrices and applications",
IEEE J. Sel. Topics Signal Process. 10(4):688–700, 2016, Algorithms 2 (PALM4MSA) and 3 (hierarchical);
J. Bolte, S. Sabach, M. Teboulle, "Proximal alternating linearized minimization for nonconvex and nonsmooth
problems", Math. Program. 146, 2014 (PALM).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from structmat._validation import check_positive_int, check_weight
from structmat.approximators._selection import top_k_mask
from structmat.matrices._sparse_product_kernels import csr_matmat, csr_rmatmat, dense_to_csr
from structmat.matrices.sparse_product import SparseProduct

__all__ = ["Constraint", "PalmResult", "palm4msa", "hierarchical", "CONSTRAINT_KINDS"]

logger = logging.getLogger(__name__)

#: Sparsity patterns a factor can be projected on (the count ``k`` is per matrix, row, column, or both).
CONSTRAINT_KINDS = ("topk", "row_topk", "col_topk", "row_col_topk", "support", "fixed")
#: Factors with fewer stored entries than this share are multiplied through CSR, others through BLAS.
SPARSE_PRODUCT_DENSITY = 0.08
#: Below this many entries of W, fits run BLAS on one thread: their products are too small to gain from threads,
#: and oversubscribed threads (pytest -n 2 on two cores) slowed small fits sevenfold here.
ONE_THREAD_MAX_SIZE = 2**20
#: FAµST's ``lipschitz_multiplicator``: the step is 1 / (1.001 · Lipschitz constant).
LIPSCHITZ_MARGIN = 1.001


@dataclass(frozen=True)
class Constraint:
    """A factor's sparsity set ``E = {S of shape (rows, cols) in a pattern, ‖S‖_F = 1}`` and its projection.

    Parameters
    ----------
    kind : {"topk", "row_topk", "col_topk", "row_col_topk", "support"}
        ``"topk"``: at most ``k`` non-zeros in the matrix (FAµST ``sp``); ``"row_topk"`` / ``"col_topk"``: at most
        ``k`` per row / per column (``splin`` / ``spcol``); ``"row_col_topk"``: the union of the row and column
        top-``k`` supports (``splincol``, up to ``k (rows + cols)`` entries); ``"support"``: a fixed pattern;
        ``"fixed"``: the factor is not updated (it stays ``value``, normalised), e.g. to fit one factor of a
        product with the others known.
    shape : (rows, cols)
    k : int
        The count (ignored for ``"support"``).
    support : bool ndarray of shape ``shape``, for ``"support"`` only
    value : ndarray of shape ``shape``, for ``"fixed"`` only
    normalized : bool
        Project on the unit sphere too (the paper's sets); False keeps the entries as they are.

    Notes
    -----
    The projection of ``U`` keeps the entries of largest magnitude allowed by the pattern and divides them by
    their norm: ``‖S − U‖² = 1 + ‖U‖² − 2⟨S, U⟩`` is minimised by maximising ``⟨S, U⟩`` (Le Magoarou & Gribonval
    2016, Prop. 3 and its appendix). Ties are broken by position (row-major), so results are reproducible.
    """

    kind: str
    shape: tuple
    k: int = 0
    support: np.ndarray | None = field(default=None, repr=False, compare=False)
    normalized: bool = True
    value: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in CONSTRAINT_KINDS:
            raise ValueError(f"constraint kind must be one of {CONSTRAINT_KINDS}; got {self.kind!r}")
        rows, cols = (int(s) for s in self.shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"constraint shape must have two positive sides; got {self.shape}")
        object.__setattr__(self, "shape", (rows, cols))
        if self.kind == "support":
            support = np.asarray(self.support, dtype=bool) if self.support is not None else None
            if support is None or support.shape != (rows, cols):
                raise ValueError(f"a 'support' constraint needs a boolean support of shape {(rows, cols)}; got "
                                 f"{None if support is None else support.shape}")
            object.__setattr__(self, "support", support)
        elif self.kind == "fixed":
            value = None if self.value is None else np.asarray(self.value, dtype=np.float64)
            if value is None or value.shape != (rows, cols) or not np.any(value):
                raise ValueError(f"a 'fixed' constraint needs a non-zero value of shape {(rows, cols)}; got "
                                 f"{None if value is None else value.shape}")
            object.__setattr__(self, "value", value / np.linalg.norm(value) if self.normalized else value)
            object.__setattr__(self, "support", value != 0)
        else:
            check_positive_int(self.k, "constraint k", minimum=1)

    @property
    def max_nnz(self) -> int:
        """The most non-zeros a projection can keep."""
        rows, cols = self.shape
        if self.kind == "topk":
            return min(self.k, rows * cols)
        if self.kind == "row_topk":
            return rows * min(self.k, cols)
        if self.kind == "col_topk":
            return cols * min(self.k, rows)
        if self.kind == "row_col_topk":
            return min(rows * cols, rows * min(self.k, cols) + cols * min(self.k, rows))
        return int(self.support.sum())

    def mask(self, U: np.ndarray) -> np.ndarray:
        """The boolean pattern the projection of ``U`` keeps."""
        A = np.abs(U)
        if self.kind == "topk":
            return top_k_mask(A, self.k)
        if self.kind == "row_topk":
            return _row_topk_mask(A, self.k)
        if self.kind == "col_topk":
            return _row_topk_mask(A.T, self.k).T
        if self.kind == "row_col_topk":
            return _row_topk_mask(A, self.k) | _row_topk_mask(A.T, self.k).T
        return self.support

    def project(self, U: np.ndarray) -> np.ndarray | None:
        """``P_E(U)``: the kept entries of ``U``, normalised; None if they are all zero (keep the old factor)."""
        if self.kind == "fixed":
            return self.value.astype(U.dtype)
        S = np.where(self.mask(U), U, 0.0)
        if not self.normalized:
            return S
        norm = np.linalg.norm(S)
        if norm == 0:
            return None
        S /= norm
        return S


def _row_topk_mask(A: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` largest entries of each row (stable ties)."""
    rows, cols = A.shape
    if k >= cols:
        return np.ones(A.shape, dtype=bool)
    order = np.argsort(-A, axis=1, kind="stable")[:, :k]
    mask = np.zeros(A.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


class _Operand:
    """A dense factor or partial product, with a CSR copy when it is sparse enough for that to be faster.

    Sparse products use the library's serial Numba CSR kernels (contiguous inner loops over the dense operand's
    rows); dense ones use BLAS.
    """

    __slots__ = ("dense", "csr")

    def __init__(self, dense: np.ndarray) -> None:
        self.dense = dense
        self.csr = None
        if dense.size >= 64 and np.count_nonzero(dense) < SPARSE_PRODUCT_DENSITY * dense.size:
            self.csr = dense_to_csr(dense)

    def left(self, X: np.ndarray) -> np.ndarray:
        """``self @ X``."""
        if self.csr is None:
            return self.dense @ X
        out = np.empty((self.dense.shape[0], X.shape[1]), dtype=self.dense.dtype)
        csr_matmat(*self.csr, np.ascontiguousarray(X), out)
        return out

    def left_t(self, X: np.ndarray) -> np.ndarray:
        """``selfᵀ @ X``."""
        if self.csr is None:
            return self.dense.T @ X
        out = np.empty((self.dense.shape[1], X.shape[1]), dtype=self.dense.dtype)
        csr_rmatmat(*self.csr, np.ascontiguousarray(X), out)
        return out

    def right_t(self, X: np.ndarray) -> np.ndarray:
        """``X @ selfᵀ``."""
        if self.csr is None:
            return X @ self.dense.T
        return self.left(X.T).T


def _spectral_norm(op: _Operand, v: np.ndarray, max_iter: int = 10, rtol: float = 1e-4):
    """``‖A‖₂`` by power iteration on ``AᵀA`` from ``v`` (warm start); returns the estimate and the new ``v``."""
    estimate = 0.0
    for _ in range(max_iter):
        w = op.left_t(op.left(v[:, None]))[:, 0]
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0, v
        v = w / norm
        if abs(norm - estimate) <= rtol * norm:
            return np.sqrt(norm), v
        estimate = norm
    return np.sqrt(estimate), v


@dataclass(frozen=True)
class PalmResult:
    """Dense factors ``S_1 … S_J`` (each of unit norm when normalised), the scale ``lam`` and the relative error
    after every sweep (``errors[-1]`` is the final one)."""

    factors: list
    lam: float
    errors: list

    def to_matrix(self) -> SparseProduct:
        """The product as a :class:`SparseProduct`, ``λ`` folded into the first factor (float64)."""
        return SparseProduct([self.lam * self.factors[0]] + list(self.factors[1:]))


def blas_threads_for(W: np.ndarray):
    """A context limiting BLAS to one thread for matrices below ``ONE_THREAD_MAX_SIZE`` entries, else a no-op."""
    if W.size >= ONE_THREAD_MAX_SIZE:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _check_chain(W_shape, constraints) -> None:
    if not constraints:
        raise ValueError("constraints must hold one Constraint per factor; got none")
    for j, c in enumerate(constraints):
        if not isinstance(c, Constraint):
            raise TypeError(f"constraints[{j}] must be a Constraint; got {type(c).__name__}")
    shapes = [c.shape for c in constraints]
    if shapes[0][0] != W_shape[0] or shapes[-1][1] != W_shape[1] or any(
            a[1] != b[0] for a, b in zip(shapes, shapes[1:])):
        raise ValueError(f"constraint shapes {shapes} do not chain from {W_shape[0]} rows to {W_shape[1]} columns "
                         f"of W (shape {tuple(W_shape)})")


def _default_init(constraints) -> list:
    """FAµST's start: the first factor updated (the last one, right to left) is zero, the others identity."""
    factors = [np.eye(*c.shape) for c in constraints]
    factors[-1] = np.zeros(constraints[-1].shape)
    return factors


def palm4msa(W, constraints, *, init=None, lam: float = 1.0, max_iter: int = 300, tol: float = 1e-6,
             target_error: float = 0.0, progress_every: int = 0) -> PalmResult:
    """Fit ``W ≈ λ S_1 ⋯ S_J`` with each ``S_j`` in ``constraints[j]`` by PALM4MSA (Le Magoarou & Gribonval 2016,
    Algorithm 2), updating the factors from right to left.

    Parameters
    ----------
    W : array_like of shape (m, n)
    constraints : sequence of Constraint
        One per factor, shapes chaining from ``(m, d_1)`` to ``(d_{J-1}, n)``.
    init : sequence of ndarray, optional
        Starting factors (projected if they are not in their sets); default: the last factor zero, the others
        identity (rectangular identities for non-square factors), as FAµST.
    lam : float
        Starting scale.
    max_iter : int
        Sweeps over all factors.
    tol : float
        Stop when a sweep lowers the relative error by less than ``tol`` times its previous value (0: never).
    target_error : float
        Stop once the relative error ``‖W − λP‖ / ‖W‖`` is at or below this.
    progress_every : int
        Log the error at DEBUG every so many sweeps (0: never).

    Returns
    -------
    PalmResult
        Dense factors, the scale and the error history. ``result.to_matrix()`` is the :class:`SparseProduct`.

    Notes
    -----
    The stopping rule is checked after each sweep: ``error <= target_error``, or ``previous − error <= tol ·
    previous`` (also when the error rose, which a step from an underestimated spectral norm can cause), or
    ``max_iter`` sweeps. Spectral norms come from power iterations warm-started from the previous sweep's vector (at most 10,
    relative tolerance 1e-4), as FAµST's (which takes 100 and 1e-6 from a fixed start).
    """
    W = check_weight(W)
    constraints = list(constraints)
    _check_chain(W.shape, constraints)
    max_iter = check_positive_int(max_iter, "max_iter", minimum=0)
    factors = [np.array(f, dtype=np.float64) for f in (init if init is not None else _default_init(constraints))]
    if len(factors) != len(constraints) or any(f.shape != c.shape for f, c in zip(factors, constraints)):
        raise ValueError(f"init must hold {len(constraints)} factors of shapes {[c.shape for c in constraints]}; "
                         f"got {[f.shape for f in factors]}")
    with blas_threads_for(W):
        return _palm(W, factors, constraints, float(lam), max_iter, float(tol), float(target_error), progress_every)


class _PalmState:
    """Factors, scale and cached quantities of a PALM4MSA run, advanced one sweep at a time (so callers can change
    the constraints between sweeps, as the budget-split continuation of ``fit_sparse_product`` does)."""

    def __init__(self, W: np.ndarray, factors: list, lam: float, power_iterations: tuple = (10, 1e-4)) -> None:
        # W and the factors share one float dtype: float64, or float32 where a caller trades precision for speed
        self.W = W
        self.norm_w = float(np.linalg.norm(W))
        self.factors = factors
        self.lam = lam
        self.vectors: dict = {}
        self.power_iterations = power_iterations  # (at most, relative tolerance) of each warm-started power iteration
        self.full = None  # the product S_1 ⋯ S_J of the current factors, once known

    def sweep(self, constraints) -> float:
        """One right-to-left pass over the factors, then the λ update; returns the relative error."""
        W, factors, lam = self.W, self.factors, self.lam
        J = len(factors)
        ops = [_Operand(f) for f in factors]
        left = [None] * J  # left[j] = S_1 ⋯ S_{j-1}, fixed during a right-to-left sweep
        for j in range(1, J):
            left[j] = ops[0] if j == 1 else _Operand(left[j - 1].left(factors[j - 1]))
        right = None
        for j in range(J - 1, -1, -1):
            L, R = left[j], right
            if j == J - 1 and self.full is not None:
                P = self.full
            else:
                X = factors[j] if R is None else ops[j].left(R.dense)
                P = X if L is None else L.left(X)
            E = P * lam
            E -= W
            G = E if L is None else L.left_t(E)
            if R is not None:
                G = R.right_t(G)
            scale = 1.0
            for key, op in (("L", L), ("R", R)):
                if op is not None:
                    v = self.vectors.get((key, j))
                    if v is None:
                        v = _start_vector(op.dense.shape[1]).astype(W.dtype)
                    s, self.vectors[(key, j)] = _spectral_norm(op, v, *self.power_iterations)
                    scale *= s * s
            c = LIPSCHITZ_MARGIN * lam * lam * scale
            if c > 0:
                step = G * (-lam / c) if G is E or G is P else G  # G is fresh unless L and R are identities
                if step is G:
                    step *= -lam / c
                step += factors[j]
                new = constraints[j].project(step)
                if new is not None:
                    factors[j] = new
                    ops[j] = _Operand(new)
            right = ops[j] if R is None else _Operand(ops[j].left(R.dense))
        self.full = right.dense
        pp = float(np.vdot(self.full, self.full))
        wp = float(np.vdot(W, self.full))
        self.lam = wp / pp if pp > 0 else 0.0
        # with the optimal λ, ‖W − λP‖² = ‖W‖² − ⟨W,P⟩²/‖P‖²: free, but it cancels for tiny errors
        squared = 1.0 - (wp * wp / pp if pp > 0 else 0.0) / (self.norm_w * self.norm_w)
        return float(np.sqrt(squared)) if squared > 1e-6 else self.error()

    def error(self) -> float:
        """``‖W − λ P‖ / ‖W‖`` for the current product ``P``, computed directly."""
        if self.norm_w == 0.0:
            return 0.0
        return float(np.linalg.norm(self.W - self.lam * self.full)) / self.norm_w


def _palm(W, factors, constraints, lam, max_iter, tol, target_error, progress_every=0) -> PalmResult:
    """PALM4MSA on validated inputs; ``factors`` is modified in place and returned in the result."""
    if float(np.linalg.norm(W)) == 0.0:
        return PalmResult([np.zeros(c.shape) for c in constraints], 0.0, [0.0])
    state = _PalmState(W, factors, lam)
    errors: list[float] = []
    for sweep in range(max_iter):
        error = state.sweep(constraints)
        previous = errors[-1] if errors else np.inf
        errors.append(error)
        if progress_every and sweep % progress_every == 0:
            logger.debug("palm4msa sweep %d: relative error %.6g, lambda %.6g", sweep, error, state.lam)
        if error <= target_error or (np.isfinite(previous) and previous - error <= tol * previous):
            break
    return PalmResult(state.factors, state.lam, errors)


def _start_vector(n: int) -> np.ndarray:
    """A fixed start for power iterations: not orthogonal to a dominant singular vector in practice."""
    v = np.cos(np.arange(1, n + 1) * 0.7) + 1.5
    return v / np.linalg.norm(v)


def hierarchical(W, constraints, residual_constraints, *, max_iter: int = 100, global_max_iter: int | None = None,
                 tol: float = 1e-6, target_error: float = 0.0) -> PalmResult:
    """Hierarchical PALM4MSA (Le Magoarou & Gribonval 2016, Algorithm 3): peel factors off the left of ``W``.

    For ``ℓ = 1 … J-1``: split the residual ``T_{ℓ-1} ≈ λ' S_ℓ T_ℓ`` with PALM4MSA on the two sets
    ``(constraints[ℓ-1], residual_constraints[ℓ-1])`` (from ``S_ℓ = I``, ``T_ℓ = 0``), then refit
    ``W ≈ λ S_1 ⋯ S_ℓ T_ℓ`` from the current values. The last residual is the last factor, so
    ``residual_constraints[-1]`` is the last factor's set.

    Parameters
    ----------
    W : array_like of shape (m, n)
    constraints : sequence of J - 1 Constraint
        The sets of ``S_1 … S_{J-1}``, shapes ``(m, d_1), …, (d_{J-2}, d_{J-1})``.
    residual_constraints : sequence of J - 1 Constraint
        The sets of the residuals ``T_1 … T_{J-1}``, shapes ``(d_ℓ, n)``.
    max_iter, global_max_iter : int
        Sweeps of each two-factor split and of each global refit (default: ``max_iter``).
    tol, target_error : float
        As :func:`palm4msa`, for every run.

    Returns
    -------
    PalmResult
        ``J`` factors; ``errors`` holds the error after each global refit.
    """
    W = check_weight(W)
    constraints, residual_constraints = list(constraints), list(residual_constraints)
    if len(constraints) != len(residual_constraints) or not constraints:
        raise ValueError(f"constraints and residual_constraints must both hold J - 1 >= 1 sets; got "
                         f"{len(constraints)} and {len(residual_constraints)}")
    for ell, (c, r) in enumerate(zip(constraints, residual_constraints)):
        if c.shape[1] != r.shape[0] or r.shape[1] != W.shape[1]:
            raise ValueError(f"level {ell}: factor shape {c.shape} and residual shape {r.shape} do not chain to "
                             f"{W.shape[1]} columns")
    _check_chain(W.shape, constraints + [residual_constraints[-1]])
    global_max_iter = max_iter if global_max_iter is None else global_max_iter
    with blas_threads_for(W):
        return _hierarchical(W, constraints, residual_constraints, max_iter, global_max_iter, tol, target_error)


def _hierarchical(W, constraints, residual_constraints, max_iter, global_max_iter, tol, target_error):
    factors: list[np.ndarray] = []
    residual, lam, errors = W, 1.0, []
    for ell, (c, r) in enumerate(zip(constraints, residual_constraints)):
        split = _palm(residual, _default_init([c, r]), [c, r], 1.0, max_iter, tol, target_error)
        factors = factors + split.factors
        refit = _palm(W, factors, constraints[: ell + 1] + [r], lam * split.lam, global_max_iter, tol, target_error)
        factors, lam = refit.factors, refit.lam
        errors.append(refit.errors[-1])
        residual = factors.pop()
        logger.debug("hierarchical level %d: relative error %.6g", ell, errors[-1])
    return PalmResult(factors + [residual], lam, errors)
