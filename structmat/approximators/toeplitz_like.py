"""Fit a Toeplitz-like matrix: truncated displacement (closed form), then alternating least squares on ‖W − M‖.

**Closed form.** The displacement ``∇(W) = Z_1 W − W Z_{-1}`` of the (zero-padded, N×N) weight is truncated to rank
r by the SVD and mapped back by the inversion formula ``M = ½ Σ Z_1(g_j) Z_{-1}(J h_j)``. This minimises
``‖∇(W − M)‖``, not ``‖W − M‖``: ``∇⁻¹`` amplifies the discarded tail by up to ``cot(π/2N) ≈ 2N/π``, so on matrices
without displacement structure the closed form can be worse than the zero matrix (implementation note
ldr-sparse-monarch.md §1.5).

**Refinement.** ``M`` is linear in ``G`` for fixed ``H`` and in ``H`` for fixed ``G``, so alternating least squares
(ALS) lowers ``‖W − M‖_F`` monotonically. Writing ``V = J H`` and ``M = ½ 𝒜(G Vᵀ)`` (see
``structmat.matrices._toeplitz_like_kernels``), the normal equations of a half-step on the full square are
block-circulant in ``G`` (block skew-circulant in ``V``), with r×r blocks:

* G-step: ``¼ Γ(p) Ĝ(p) = b̂(p)`` at every frequency p, ``Γ_{jj'}(p) = DFT[(N − 2k) s_{jj'}(k)](p)``,
  ``s_{jj'} = Z_{-1}(v_{j'}) τ_{-1}(v_j)``, ``b = ½ 𝒜*(W) V``;
* V-step: the same in the twisted basis ``D = diag(e^{iπk/N})``, ``Ψ_{jj'}(p) = DFT[D (N − 2k) x_{jj'}](p)``,
  ``x_{jj'} = Z_1(g_j)ᵀ g_{j'}``, ``b = ½ 𝒜*(W)ᵀ G``.

The right-hand sides cost one O(N²) pass plus a GEMM; the Grams cost ``O(r² N log N)`` and the solves ``O(r³ N)``.
For a rectangular ``W`` only the m×n block is fitted (a masked least-squares problem): each half-step runs
preconditioned conjugate gradients (PCG) from the current generators, with the square solve as the preconditioner,
so every PCG step lowers the error too. Fitting the padded square and cropping is worse (note §1.4(a)).

**Start of the refinement.** The block determines part of the displacement: rows 1..m−1 of ``∇`` when
``m < n`` (they span the row space of ``Hᵀ``), columns 0..n−2 when ``m > n`` (the column space of ``G``), all of it
when square. The refinement starts from the top-r singular vectors of that part, so an exactly Toeplitz-like block
is recovered by one least-squares half-step.

The refinement's first candidate is the best multiple of the closed form (``α = <W, M>/‖M‖²``, error at most
``‖W‖``). The fit returns whichever of the closed form and the refinement has the smaller error, and logs both.
**Stopping.** The refinement stops on ``tol``, on ``max_iterations`` sweeps, or when the next half-step would take
its work past ``max_work``: work is counted in *model seconds*, the duration a cost model
(:meth:`_Problem.half_step_work`) gives each half-step on one core of the machine it was calibrated on. It is
counted, not measured, so the result is the same on every machine and under any load; the default (20) keeps the
fit times the wall-clock limit of earlier versions gave on a quiet core. A first half-step larger than
``max_work`` is not started (large ``N`` and ``r``). A wall-clock limit is available (``max_seconds``) but off by
default, because it makes the result depend on the machine's speed and load.

References
----------
V. Sindhwani, T. Sainath, S. Kumar, NeurIPS 2015 (the displacement inversion); V. Pan, "Structured Matrices and
Polynomials", 2001, Sec. 4.4 (truncating the displacement); implementation note ldr-sparse-monarch.md §1.5
(the block-circulant normal equations, checked against ``lstsq``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.linalg
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.lowrank import truncated_svd
from structmat.matrices._toeplitz_like_kernels import _adjoint, _assemble, _masked_gram_block
from structmat.matrices.toeplitz_like import ToeplitzLike, skew_twist, tau
from structmat.threads import limit_threads

__all__ = ["fit_toeplitz_like", "ToeplitzLikeFit", "fit_toeplitz_like_rank"]

logger = logging.getLogger(__name__)

#: Relative ridge added to every r×r normal-equation block (keeps singular frequencies finite).
_RIDGE = 1e-13
#: The displacement's SVD is LAPACK's (deterministic) up to this side, randomized (seeded) beyond.
_EXACT_SVD_MAX = 2048
#: Effective flops per second of one core in the half-step cost model (``half_step_work``), for a quiet core of the
#: development machine (AMD EPYC): the classifier (N = 1280, r = 125) ran about 11 half-steps in the 15.5 s the
#: earlier 20 s wall-clock limit left after the closed form at load 3.3; 1.4e9 was measured with four other jobs
#: on the same core.
_FLOPS_PER_SECOND = 4e9
#: Default work limit of the refinement, in model seconds.
DEFAULT_MAX_WORK = 20.0
#: A relative error below this is exact to rounding: nothing is refined further.
_EXACT = 1e-11
#: Rectangular half-steps with at most this many unknowns (N·r) are solved exactly through the dense normal
#: matrix (O((N r)³)); larger ones run preconditioned conjugate gradients.
DENSE_LIMIT = 2048
#: ... in the first sweep only (which is what recovers an exactly Toeplitz-like block); later sweeps use PCG unless
#: ``N·r`` is at most this.
DENSE_ALWAYS = 512
#: Blocks of this rank and above are factored by Cholesky (SciPy, a Python loop over frequencies), smaller ones
#: inverted by NumPy's batched ``inv``.
_CHOLESKY_MIN_RANK = 64
#: Numbers held by one chunk of the Gram computation (N · chunk · r complex values).
_GRAM_CHUNK = 1 << 22


@dataclass(frozen=True)
class ToeplitzLikeFit:
    """The outcome of a Toeplitz-like fit: the matrix kept and both relative errors.

    ``matrix`` is the better of the two; ``closed_form_error`` is that of the truncated displacement,
    ``refined_error`` that of the ALS refinement (None when not run), ``sweeps`` the ALS sweeps run.
    """

    matrix: ToeplitzLike
    closed_form_error: float
    refined_error: float | None
    sweeps: int
    seconds: float


@guarded_fit
def fit_toeplitz_like(W, budget, *, refine: bool = True, max_iterations: int = 8,
                      max_work: float | None = DEFAULT_MAX_WORK, max_seconds: float | None = None, tol: float = 5e-3,
                      cg_iterations: int = 3, seed=0, progress: bool = False) -> ToeplitzLike:
    """Toeplitz-like approximation of ``W`` with ``2 r max(m, n) <= budget`` parameters.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``. The displacement rank is ``r = budget // (2 max(m, n))``,
        capped at ``max(m, n)`` (which already represents every matrix).
    refine : bool
        Run the ALS refinement after the closed form (``False`` returns the closed form: a sweep variant
        ``toeplitz_like[refine=False]`` records its error beside the refined one).
    max_iterations : int
        ALS sweeps at most (one sweep = a G-step and an H-step).
    max_work : float or None
        Work limit of the refinement in model seconds (module docstring; None: no limit). Deterministic.
    max_seconds : float or None
        Opt-in wall-clock limit: no half-step is started that would end past this many seconds since the start
        (default None). Only this limit makes the result depend on the machine's speed and load.
    tol : float
        Stop when a sweep lowers the error by less than ``tol`` times itself.
    cg_iterations : int
        PCG steps per half-step for rectangular ``W`` with ``max(m, n)·r > 2048`` (smaller ones are solved
        exactly; square ones need one step). The square-solve preconditioner does most of the work in the first.
    seed : int or None
        Seeds the randomized SVD used for the closed form when ``max(m, n) > 2048`` (LAPACK's below); the fit is
        otherwise deterministic.
    progress : bool
        Show a tqdm bar over the sweeps.

    Runs with the thread limit of :mod:`structmat.threads` (one BLAS thread by default).

    Returns
    -------
    ToeplitzLike
        float64; the better of the closed form and the refinement. Both errors are logged at INFO
        (:func:`fit_toeplitz_like_rank` returns them).

    Raises
    ------
    ValueError
        if ``budget < 2 max(m, n)`` (displacement rank 1), or for bad ``W``.

    Examples
    --------
    >>> import numpy as np
    >>> T = np.array([[float(i - j) for j in range(6)] for i in range(8)])  # a Toeplitz matrix
    >>> M = fit_toeplitz_like(T, 2 * 2 * 8)
    >>> M.rank, bool(np.allclose(M.to_dense(), T))
    (2, True)
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    m, n = W.shape
    N = max(m, n)
    rank = min(limit // (2 * N), N)
    if rank < 1:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest Toeplitz-like matrix for shape "
            f"({m}, {n}): {2 * N} parameters (displacement rank 1, 2·max(m, n))"
        )
    fit = fit_toeplitz_like_rank(W, rank, refine=refine, max_iterations=max_iterations, max_work=max_work,
                                 max_seconds=max_seconds, tol=tol, cg_iterations=cg_iterations, seed=seed,
                                 progress=progress)
    return fit.matrix


def fit_toeplitz_like_rank(W, rank: int, *, refine: bool = True, max_iterations: int = 8,
                           max_work: float | None = DEFAULT_MAX_WORK, max_seconds: float | None = None,
                           tol: float = 5e-3, cg_iterations: int = 3, seed=0,
                           progress: bool = False) -> ToeplitzLikeFit:
    """The fit of :func:`fit_toeplitz_like` at a given displacement rank, with both errors."""
    W = check_weight(W)
    rank = check_positive_int(rank, "rank")
    max_iterations = check_positive_int(max_iterations, "max_iterations", minimum=0)
    cg_iterations = check_positive_int(cg_iterations, "cg_iterations")
    max_work = check_limit(max_work, "max_work")
    max_seconds = check_limit(max_seconds, "max_seconds")
    with limit_threads():
        return _fit_rank(W, rank, refine, max_iterations, max_work, max_seconds, tol, cg_iterations, seed, progress)


def check_limit(value, name: str) -> float | None:
    """A work or time limit: None, or a real number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0 or None; got {value!r}")
    return float(value)


def _fit_rank(W, rank, refine, max_iterations, max_work, max_seconds, tol, cg_iterations, seed,
              progress) -> ToeplitzLikeFit:
    start = time.perf_counter()
    problem = _Problem(W)
    rank = min(rank, problem.N)
    G, V, known = problem.closed_form(rank, seed)
    closed_error = problem.error(G, V)
    best, refined_error, sweeps = (G, V), None, 0
    if refine and max_iterations > 0 and closed_error > _EXACT * problem.norm:
        # the cheapest refinement first: the best multiple of the closed form (its error is at most ‖W‖)
        model = problem.model(G, V)
        alpha = float(np.vdot(W, model)) / max(float(np.vdot(model, model)), 1e-300)
        best, refined_error = (alpha * G, V), float(np.linalg.norm(W - alpha * model))
        G2, V2, als_error, sweeps = problem.refine(known, rank, max_iterations, max_work, max_seconds, tol,
                                                   cg_iterations, start, progress)
        if als_error < refined_error:
            best, refined_error = (G2, V2), als_error
        if refined_error >= closed_error:
            best = (G, V)
    G, V = _balance(*best)
    seconds = time.perf_counter() - start
    scale = max(problem.norm, np.finfo(float).tiny)
    closed, refined = closed_error / scale, (None if refined_error is None else refined_error / scale)
    logger.info("fit_toeplitz_like: shape=%s rank=%d closed-form error %.4g, refined %s after %d ALS sweeps, "
                "%.2f s", W.shape, rank, closed, "-" if refined is None else f"{refined:.4g}", sweeps, seconds)
    matrix = ToeplitzLike(G, V[::-1], shape=W.shape)
    return ToeplitzLikeFit(matrix, closed, refined, sweeps, seconds)


def _balance(G, V):
    """Same product ``G Vᵀ``, orthogonal columns on both sides and equal column norms."""
    QG, RG = np.linalg.qr(G)
    QV, RV = np.linalg.qr(V)
    U, s, Yt = np.linalg.svd(RG @ RV.T)
    root = np.sqrt(s)
    return QG @ U * root, QV @ Yt.T * root


class _Problem:
    """``min ‖W − ½ 𝒜(G Vᵀ)[:m, :n]‖_F`` over the generators; ``V = J H``."""

    def __init__(self, W: np.ndarray) -> None:
        self.W = W
        self.m, self.n = W.shape
        self.N = max(W.shape)
        self.square = self.m == self.n
        self.norm = float(np.linalg.norm(W))
        self.twist = skew_twist(self.N)
        self.ramp = self.N - 2.0 * np.arange(self.N)
        self.v_frequencies = np.arange(1, (self.N + 1) // 2 + 1) % self.N  # one of each pair p, 1 - p (mod N)
        self.v_partners = (1 - self.v_frequencies) % self.N
        self.W_adjoint = _adjoint(W, self.N)  # 𝒜*(W̄), the right-hand sides of every half-step

    # ---------------------------------------------------------------- the linear maps
    def model(self, G, V):
        return 0.5 * _assemble(G @ V.T, self.m, self.n)

    def residual(self, G, V):
        return self.W - self.model(G, V)

    def error(self, G, V) -> float:
        return float(np.linalg.norm(self.residual(G, V)))

    def displacement(self) -> np.ndarray:
        """``Z_1 W̄ − W̄ Z_{-1}`` of the zero-padded N×N weight."""
        W = np.zeros((self.N, self.N))
        W[: self.m, : self.n] = self.W
        shifted = np.empty_like(W)
        shifted[:, :-1] = W[:, 1:]
        shifted[:, -1] = -W[:, 0]
        return np.roll(W, 1, axis=0) - shifted

    # ---------------------------------------------------------------- closed form and the start of the refinement
    def closed_form(self, rank: int, seed):
        """Truncated SVD of the padded displacement; also the start of the refinement, ``(side, basis)``.

        The block fixes rows 1..m−1 of ``∇`` (``m < n``; they lie in the row space of ``Hᵀ``) or columns 0..n−2
        (``m > n``; the column space of ``G``). Their top singular vectors start the refinement. When they have
        fewer than ``rank`` independent directions (a Toeplitz block has one), the completion that continues the
        block with zero displacement rows (columns) adds one more: the displacement row 0 (column N−1) it implies.
        """
        D = self.displacement()
        U, s, Yt = truncated_svd(D, rank, method="svd" if self.N <= _EXACT_SVD_MAX else "auto", seed=seed)
        root = np.sqrt(s)
        G, V = U * root, (Yt.T * root)[::-1]
        if self.square:
            return G, V, ("V", V)
        m, n, N = self.m, self.n, self.N
        if m < n:  # rows: ∇[i] = W[i-1] - W[i] Z_{-1}; continuing with M[i]ᵀ = Z_{-1} M[i-1]ᵀ leaves row 0
            observed = D[1:m].T
            last = _skew_shift(self.W[m - 1], N - m)
            extra = last - np.concatenate([self.W[0, 1:], -self.W[0, :1]])
            fallback = Yt.T
        else:  # columns: ∇[:, l] = Z_1 W[:, l] - W[:, l+1]; continuing with M[:, l+1] = Z_1 M[:, l] leaves column N-1
            observed = D[:, : n - 1]
            extra = np.roll(self.W[:, n - 1], N - n + 1) + self.W[:, 0]
            fallback = U
        basis = _start_basis(observed, extra, fallback, rank, seed)
        return G, V, (("V", basis[::-1].copy()) if m < n else ("G", basis))

    # ---------------------------------------------------------------- normal-equation blocks (square)
    def g_gram(self, V):
        """``¼ Γ(p)`` for p = 0..N/2, shape (N/2+1, r, r) (G is real: the other frequencies are conjugates)."""
        N, r = V.shape
        A = scipy.fft.fft(self.twist * V.T, axis=-1)  # rows: twisted spectra of v_k
        B = scipy.fft.fft(self.twist * tau(V, -1.0).T, axis=-1)  # rows: twisted spectra of τ_{-1} v_j
        weight = 0.25 * self.twist.conj() * self.ramp
        Gamma = np.empty((N // 2 + 1, r, r), dtype=complex)
        for j0, j1 in _pair_chunks(N, r):  # Γ is Hermitian: rows j0:j1 from column j0 on
            S = scipy.fft.ifft(B[j0:j1, None, :] * A[None, j0:, :], axis=-1)  # s_{jk} = Z_{-1}(v_k) τ_{-1}(v_j)
            Gamma[:, j0:j1, j0:] = np.moveaxis(scipy.fft.rfft((S * weight).real, axis=-1), -1, 0)
            Gamma[:, j1:, j0:j1] = Gamma[:, j0:j1, j1:].conj().transpose(0, 2, 1)
        return Gamma

    def v_gram(self, G):
        """``¼ Ψ(p)`` in the twisted basis at the frequencies ``self.v_frequencies`` (a real vector's twisted
        spectrum has ``ŵ(1 - p) = conj ŵ(p)``, so the others follow)."""
        N, r = G.shape
        G_hat = scipy.fft.rfft(G.T, axis=-1)
        weight = 0.25 * self.twist * self.ramp
        Psi = np.empty((len(self.v_frequencies), r, r), dtype=complex)
        for j0, j1 in _pair_chunks(N, r):
            X = scipy.fft.irfft(G_hat.conj()[j0:j1, None, :] * G_hat[None, j0:, :], n=N, axis=-1)  # Z_1(g_j)ᵀ g_k
            spectrum = scipy.fft.fft(X * weight, axis=-1)[:, :, self.v_frequencies]
            Psi[:, j0:j1, j0:] = np.moveaxis(spectrum, -1, 0)
            Psi[:, j1:, j0:j1] = Psi[:, j0:j1, j1:].conj().transpose(0, 2, 1)
        return Psi

    def g_apply(self, factor, R):
        """``(¼ Γ)⁻¹`` applied to the columns' spectra of ``R`` (N, r)."""
        R_hat = scipy.fft.rfft(R, axis=0)
        return scipy.fft.irfft(factor(R_hat), n=self.N, axis=0)

    def v_apply(self, factor, R):
        """``(¼ Ψ)⁻¹`` applied in the twisted basis."""
        R_hat = scipy.fft.fft(self.twist[:, None] * R, axis=0)
        X_hat = np.empty_like(R_hat)
        X_hat[self.v_frequencies] = factor(R_hat[self.v_frequencies])
        X_hat[self.v_partners] = X_hat[self.v_frequencies].conj()
        return (self.twist.conj()[:, None] * scipy.fft.ifft(X_hat, axis=0)).real

    # ---------------------------------------------------------------- ALS half-steps
    def rhs(self, which: str, fixed):
        """The adjoint of the half-step's linear map applied to W: ``½ 𝒜*(W̄) V`` or ``½ 𝒜*(W̄)ᵀ G``."""
        return 0.5 * (self.W_adjoint @ fixed if which == "G" else self.W_adjoint.T @ fixed)

    def product(self, which: str, x, fixed):
        return x @ fixed.T if which == "G" else fixed @ x.T

    def half_step(self, which: str, G, V, cg_iterations: int, exact: bool = True):
        """Least squares in G (``which="G"``) or in V with the other fixed; returns ``(G, V, error)``.

        Square: one block-circulant solve. Rectangular: the dense masked normal equations when ``exact`` and
        ``N r <= DENSE_LIMIT`` (or ``N r <= DENSE_ALWAYS``), else ``cg_iterations`` PCG steps."""
        Q, R_fixed = np.linalg.qr(V if which == "G" else G)
        x = (G if which == "G" else V) @ R_fixed.T  # the same product G Vᵀ, with an orthonormal fixed side
        if self.square:
            x = self.square_solve(which, Q, self.rhs(which, Q))
        elif self.N * Q.shape[1] <= (DENSE_LIMIT if exact else DENSE_ALWAYS):
            x = self.dense_solve(which, Q)
        else:
            x = self.pcg(which, Q, x, cg_iterations)
        G, V = (x, Q) if which == "G" else (Q, x)
        return G, V, self.error(G, V)

    def square_solve(self, which: str, fixed, R):
        """The inverse of the half-step's square Gram applied to ``R`` (block-circulant solve, module doc)."""
        if which == "G":
            return self.g_apply(_factor(self.g_gram(fixed)), R)
        return self.v_apply(_factor(self.v_gram(fixed)), R)

    def dense_solve(self, which: str, fixed):
        """Exact masked least squares for small ``N r``: the normal matrix from windowed diagonal sums."""
        N, r = fixed.shape
        rows, cols = np.arange(N)[:, None], np.arange(N)[None, :]
        if which == "G":  # blocks Σ_{i<m} K[(i-a)%N, (i-a')%N], K = T_j[:, :n] T_j'[:, :n]ᵀ, T_j = Z_{-1}(v_j)
            sign = np.where(rows < cols, -1.0, 1.0)[:, : self.n]
            factors = np.moveaxis(fixed[(rows - cols)[:, : self.n] % N] * sign[:, :, None], 2, 0)  # (r, N, n)
            length, signed = self.m, False
        else:  # blocks Σ_{l<n} σσ' K[(l+k)%N, (l+k')%N], K = C_j[:m]ᵀ C_j'[:m], C_j = Z_1(g_j)
            factors = np.moveaxis(fixed[(rows - cols)[: self.m] % N], 2, 0).transpose(0, 2, 1)  # (r, N, m)
            length, signed = self.n, True
        factors = np.ascontiguousarray(factors)
        blocks = np.empty((r, r, N, N))
        for j in range(r):
            for k in range(j, r):
                blocks[j, k] = _masked_gram_block(factors[j] @ factors[k].T, length, signed)
                blocks[k, j] = blocks[j, k].T
        normal = 0.25 * blocks.transpose(2, 0, 3, 1).reshape(N * r, N * r)
        return _solve_psd(normal, self.rhs(which, fixed).ravel()).reshape(N, r)

    def pcg(self, which: str, fixed, x, iterations: int):
        """Masked least squares by PCG from ``x``, preconditioned by the square solve; every step lowers the error."""
        if which == "G":
            factor = _factor(self.g_gram(fixed))
            precondition = lambda R: self.g_apply(factor, R)  # noqa: E731
        else:
            factor = _factor(self.v_gram(fixed))
            precondition = lambda R: self.v_apply(factor, R)  # noqa: E731
        if which == "G":
            adjoint = lambda R: 0.5 * (_adjoint(R, self.N) @ fixed)  # noqa: E731
        else:
            adjoint = lambda R: 0.5 * (_adjoint(R, self.N).T @ fixed)  # noqa: E731
        residual = self.W - 0.5 * _assemble(self.product(which, x, fixed), self.m, self.n)
        gradient = adjoint(residual)
        z = precondition(gradient)
        direction = z.copy()
        rz = rz0 = float(np.vdot(gradient, z))
        for _ in range(iterations):
            if rz <= 1e-28 * rz0 or rz0 == 0.0:
                break
            image = 0.5 * _assemble(self.product(which, direction, fixed), self.m, self.n)
            curvature = float(np.vdot(image, image))
            if curvature <= 0.0:
                break
            alpha = rz / curvature
            x = x + alpha * direction
            residual = residual - alpha * image
            gradient = adjoint(residual)
            z = precondition(gradient)
            rz_new = float(np.vdot(gradient, z))
            direction = z + (rz_new / rz) * direction
            rz = rz_new
        return x

    def half_step_work(self, rank: int) -> float:
        """The work of one half-step in model seconds: the Gram (``r² N log N``), its factorisation (``r³ N``) and
        the products (``N² r``) at ``_FLOPS_PER_SECOND`` (plus the dense normal matrix of a small rectangular
        problem). Deterministic: it depends on the sizes only."""
        N = self.N
        flops = 8.0 * rank**2 * N * np.log2(max(N, 2)) + 0.7 * rank**3 * N + 8.0 * N**2 * rank  # Cholesky: ~N/2 blocks
        if not self.square and N * rank <= DENSE_LIMIT:
            flops += (N * rank) ** 3 / 3.0
        return flops / _FLOPS_PER_SECOND

    def refine(self, known, rank, max_iterations, max_work, max_seconds, tol, cg_iterations, start, progress):
        """ALS from the start ``known``; stops on ``tol``, exactness, ``max_iterations`` sweeps, ``max_work``
        (counted: a half-step is not started when its model work would take the total past it) or the opt-in
        ``max_seconds`` (a half-step is not started when the previous one's duration, or for the first one the
        model's, would overrun)."""
        side, value = known
        N = self.N
        if side == "V":
            G, V, order = np.zeros((N, rank)), value, ("G", "V")
        else:
            G, V, order = value, np.zeros((N, rank)), ("V", "G")
        error = previous = np.inf
        sweeps, last_duration, stop, work = 0, 0.0, False, 0.0
        step_work = self.half_step_work(rank)
        bar = tqdm(total=max_iterations, desc="fit_toeplitz_like ALS", disable=not progress)
        try:
            while sweeps < max_iterations and not stop:
                for which in order:
                    if max_work is not None and work + step_work > max_work:
                        logger.info("fit_toeplitz_like: stopped after %d sweeps at max_work=%s (%.3g model seconds "
                                    "per half-step)", sweeps, max_work, step_work)
                        stop = True
                        break
                    elapsed = time.perf_counter() - start
                    expected = last_duration if np.isfinite(error) else step_work
                    if max_seconds is not None and elapsed + expected > max_seconds:
                        logger.info("fit_toeplitz_like: stopped after %d sweeps at max_seconds=%s", sweeps,
                                    max_seconds)
                        stop = True
                        break
                    G, V, error = self.half_step(which, G, V, cg_iterations, exact=sweeps == 0)
                    work += step_work
                    last_duration = time.perf_counter() - start - elapsed
                    if error <= _EXACT * self.norm:
                        stop = True
                        break
                else:
                    sweeps += 1
                    bar.update(1)
                    bar.set_postfix(error=f"{error / max(self.norm, 1e-300):.4g}")
                    logger.debug("ALS sweep %d: relative error %.6g", sweeps, error / max(self.norm, 1e-300))
                    stop = previous - error < tol * error
                    previous = error
        finally:
            bar.close()
        return G, V, error, sweeps


def _skew_shift(x: np.ndarray, k: int) -> np.ndarray:
    """``Z_{-1}^k x`` for ``0 <= k <= len(x)``: shift down by k, negating what wraps around."""
    return np.concatenate([-x[len(x) - k:], x[: len(x) - k]])


def _start_basis(observed: np.ndarray, extra: np.ndarray, fallback: np.ndarray, rank: int, seed) -> np.ndarray:
    """``rank`` orthonormal columns: the independent top left singular vectors of ``observed``, then ``extra``,
    then the remaining singular vectors and ``fallback`` (all in that order of priority)."""
    if observed.shape[1] > 0:
        method = "svd" if max(observed.shape) <= _EXACT_SVD_MAX else "auto"
        U, s, _ = truncated_svd(observed, min(rank, *observed.shape), method=method, seed=seed)
        independent = int(np.count_nonzero(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0
    else:
        U, independent = np.zeros((observed.shape[0], 0)), 0
    candidates = np.column_stack([U[:, :independent], extra, U[:, independent:], fallback])
    Q, R = np.linalg.qr(candidates)
    diagonal = np.abs(np.diag(R))
    keep = np.flatnonzero(diagonal > 1e-8 * max(diagonal.max(initial=0.0), 1e-300))[:rank]
    basis = Q[:, keep]
    if basis.shape[1] < rank:  # degenerate W (e.g. zero): complete with a seeded random orthonormal basis
        noise = np.random.default_rng(seed).standard_normal((basis.shape[0], rank - basis.shape[1]))
        noise -= basis @ (basis.T @ noise)
        basis = np.column_stack([basis, np.linalg.qr(noise)[0]])
    return basis


def _solve_psd(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve a positive semi-definite system (masked normal equations may be singular) with a tiny ridge."""
    ridge = _RIDGE * max(float(np.trace(normal)) / normal.shape[0], 1e-300)
    try:
        factor = scipy.linalg.cho_factor(normal + ridge * np.eye(normal.shape[0]), lower=True)
        return scipy.linalg.cho_solve(factor, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(normal, rhs, rcond=None)[0]


def _factor(blocks: np.ndarray):
    """A solver for Hermitian positive semi-definite r×r blocks (one per frequency) plus a small relative ridge,
    raised until the factorisation succeeds (singular frequencies get a finite, minimum-norm-like answer).

    Small blocks are inverted at once (NumPy's batched ``inv``; applying is a batched GEMV); large ones get
    batched Cholesky factors (SciPy), a third of the work of an inverse."""
    r = blocks.shape[-1]
    diagonal = np.arange(r)
    scale = max(float(np.abs(blocks[:, diagonal, diagonal]).sum(axis=1).max()) / r, 1e-300)
    ridge = _RIDGE
    while True:
        shifted = blocks.copy()
        shifted[:, diagonal, diagonal] += ridge * scale
        try:
            if r < _CHOLESKY_MIN_RANK:
                inverse = np.linalg.inv(shifted)
                if np.isfinite(inverse).all():
                    return lambda R_hat: np.matmul(inverse, R_hat[:, :, None])[:, :, 0]
            else:
                factor = scipy.linalg.cho_factor(shifted, lower=True, check_finite=False)
                return lambda R_hat: scipy.linalg.cho_solve(factor, R_hat[:, :, None], check_finite=False)[:, :, 0]
        except np.linalg.LinAlgError:
            pass
        if ridge >= 1e-2:
            raise np.linalg.LinAlgError("the normal equations of a Toeplitz-like half-step could not be factored")
        ridge *= 1e3


def _pair_chunks(N: int, r: int):
    """Row ranges ``j0:j1`` of the r×r Gram blocks, each computed against columns ``j0:`` within ``_GRAM_CHUNK``."""
    j0 = 0
    while j0 < r:
        step = max(1, _GRAM_CHUNK // (N * max(r - j0, 1)))
        yield j0, min(r, j0 + step)
        j0 += step
