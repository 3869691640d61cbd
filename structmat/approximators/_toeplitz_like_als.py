"""Least squares for Toeplitz-like generators: the half-steps of alternating least squares, plain or weighted.

The model is ``M(G, V) = ½ 𝒜(G Vᵀ)[:m, :n]`` with ``V = J H`` (:mod:`structmat.matrices._toeplitz_like_kernels`).
It is linear in ``G`` for fixed ``V`` and in ``V`` for fixed ``G``, so every half-step of alternating least squares
(ALS) is a linear least-squares problem in ``N r`` unknowns, for the objective

.. math:: f(G, V) = \\|(W - M) L\\|_F^2 = \\operatorname{tr}((W - M)\\, C\\, (W - M)^\\top), \\qquad L L^\\top = C,

with ``C = I`` (the Frobenius fit) or ``C`` the regularised second moment of the layer's inputs (the output fit;
structmat's note data-aware.md). Each half-step first orthonormalises the fixed side (a QR that keeps ``G Vᵀ``),
which conditions the normal equations, then:

* **square, unweighted, rank ≤ ``FULL_MAX_RANK``**: the normal equations are block-circulant (G) or block
  skew-circulant (V) with r×r blocks, so one r×r Cholesky solve per frequency gives the exact minimiser (note
  ldr-sparse-monarch.md §1.5: ``¼ Γ(p) Ĝ(p) = b̂(p)``, ``Γ_{jj'}(p) = DFT[(N − 2k) s_{jj'}(k)](p)``,
  ``s_{jj'} = Z_{-1}(v_{j'}) τ_{-1}(v_j)``; the V-step the same in the twisted basis ``D = diag(e^{iπk/N})``);
* **small rectangular (masked), unweighted, first sweep**: the dense masked normal equations (exact; this is what
  recovers an exactly Toeplitz-like block in one half-step);
* **otherwise** — a rectangular block, a weight ``C``, or a rank too large for per-frequency r×r factorisations —
  preconditioned conjugate gradients (PCG) on the normal equations from the current generators, so every step lowers
  ``f``. The normal operator is ``x ↦ ¼ 𝒜*(𝒜(x Fᵀ) C) F`` (one GEMM with ``C``, two with the fixed side ``F``
  and two O(N²) passes per step). The preconditioner is the square unweighted solve above: exact for the square
  Frobenius problem, and for a weight it removes the displacement's ill-conditioning (``∇⁻¹`` spans singular values
  from 1/2 to ``N/π``) and leaves that of ``C`` (see below). Its per-frequency factorisations cost ``O(N r³)``;
  beyond ``2 BAND`` columns (unweighted) or ``FULL_MAX_RANK`` (weighted) a banded approximation costs ``O(N r)``
  (:meth:`ToeplitzLikeProblem.banded_solver`; :meth:`ToeplitzLikeProblem.preconditioner_kind` says which is used).

**The weight in the preconditioner.** In the G-step the weight enters through vectors: for ``C = u uᵀ``,
``M u = ½ Σ_j Z_1(g_j) y_j = ½ Σ_j Z_1(y_j) g_j`` with ``y_j = Z_{-1}(v_j) u`` (circulants commute), whose Hessian in
G is ``¼ ŷ(p)* ŷ(p)ᵀ`` at each frequency p. So ``C ≈ ρ I + Σ_{t<k} d_t u_t u_tᵀ`` (its ``WEIGHT_DIRECTIONS``
dominant eigenpairs, the other eigenvalues replaced by their mean ρ) keeps the G-step frequency-decoupled, and the
weighted G-step preconditioner is exact for that ``C`` on the square: on the EfficientNet-Lite0 classifier's inputs
(the top eigenvalue is 58 % of the trace) four PCG steps then do what sixty did with the unweighted one. In the
V-step the unknowns meet ``C`` inside ``Z_{-1}(v_j) u = Z_{-1}(u) v_j``, a skew-circulant that the circulant
``Z_1(g_j)`` does not commute with, so each direction couples all frequencies: the V-step keeps the unweighted
preconditioner (only a skew-circulant ``C`` would commute with it, and T. Chan's optimal circulant approximation,
SIAM J. Sci. Stat. Comput. 9(4), 1988, of these inputs' ``C`` is no better than ``tr(C)/n · I``: the features have no
shift structure) and three times the G-step's PCG steps.

Work is counted in *model seconds* (:meth:`ToeplitzLikeProblem.half_step_work`): a cost model of each half-step from
the sizes alone, never a measured time, so limits on it are deterministic.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.fft
import scipy.linalg
from scipy.linalg.lapack import ztrtri
from tqdm.auto import tqdm

from structmat.approximators.lowrank import truncated_svd
from structmat.matrices._toeplitz_like_kernels import _adjoint, _assemble, _masked_gram_block
from structmat.matrices.toeplitz_like import skew_twist, tau

__all__ = ["ToeplitzLikeProblem", "balance", "leading_svd", "FULL_MAX_RANK", "BAND", "BLOCK"]

logger = logging.getLogger(__name__)

#: Relative ridge added to every r×r normal-equation block (keeps singular frequencies finite).
_RIDGE = 1e-13
#: Above this side every SVD is randomized (seeded), with few power iterations (:func:`leading_svd`).
_EXACT_SVD_MAX = 2048
#: The work model (:meth:`ToeplitzLikeProblem.half_step_work`): one-thread CPU seconds of the parts of a half-step,
#: measured on the development machine (AMD EPYC, loaded) at N = 512-2048, r = 64-256.
GEMM_FLOPS = 5e10
SECONDS_PER_PASS_ELEMENT = 6e-9
_SECONDS_PER_GRAM_FLOP = 1e-9
_SECONDS_PER_FACTOR_FLOP = 1e-10
_SECONDS_PER_FACTOR = 0.02
_SECONDS_PER_BAND_SETUP = 3e-10
_SECONDS_PER_BAND_APPLY = 1.4e-9
#: A relative error below this is exact to rounding: nothing is refined further.
EXACT = 1e-11
#: Rectangular half-steps with at most this many unknowns (N·r) are solved exactly through the dense normal
#: matrix (O((N r)³)) in the first sweep; later sweeps use PCG unless ``N·r`` is at most ``DENSE_ALWAYS``.
DENSE_LIMIT = 2048
DENSE_ALWAYS = 512
#: Square unweighted half-steps are solved exactly, and weighted ones preconditioned with full r×r factors, up to
#: this rank; beyond it, and for unweighted PCG beyond ``2 BAND`` columns, the preconditioner is banded
#: (:meth:`ToeplitzLikeProblem.banded_solver`, ``2 BAND`` kernel terms kept), except for a weighted G-step, which
#: keeps the diagonal r×r blocks of ``BLOCK`` columns (block Jacobi). See :meth:`ToeplitzLikeProblem.preconditioner_kind`.
FULL_MAX_RANK = 160
BAND = 16
BLOCK = 32
#: Frequencies per chunk of the banded preconditioner (its gathered terms hold chunk · 2 BAND · r numbers).
_BAND_CHUNK = 128
#: Dominant eigen-directions of the weight kept exactly by the weighted G-step preconditioner.
WEIGHT_DIRECTIONS = 64
#: Numbers held by one chunk of the Gram computation (N · chunk · r complex values).
_GRAM_CHUNK = 1 << 22
#: Complex numbers held by one chunk of directions in :meth:`ToeplitzLikeProblem.weighted_g_gram` (N · r · chunk):
#: all 64 directions at once held 160 MB on EfficientNet-Lite0's classifier (1280 × 125 × 64); in chunks, 16 MB.
_WEIGHTED_GRAM_CHUNK = 1 << 20


def leading_svd(A: np.ndarray, rank: int, seed, *, start_only: bool = False):
    """The leading ``rank`` singular triplets of ``A``: :func:`~structmat.approximators.lowrank.truncated_svd` with
    ``method="auto"`` (LAPACK up to a smaller side of 1024, else the seeded randomized SVD of Halko, Martinsson &
    Tropp 2011 at small ranks) up to a side of ``_EXACT_SVD_MAX``; beyond, always randomized with 2 power iterations,
    or 1 for a ``start_only`` basis (the ALS refines it; exact on an exactly low-rank ``A`` either way)."""
    if max(A.shape) <= _EXACT_SVD_MAX:
        return truncated_svd(A, rank, method="auto", seed=seed)
    return truncated_svd(A, rank, method="randomized", power_iterations=1 if start_only else 2, seed=seed)


def balance(G, V):
    """Same product ``G Vᵀ``, orthogonal columns on both sides and equal column norms."""
    QG, RG = np.linalg.qr(G)
    QV, RV = np.linalg.qr(V)
    U, s, Yt = np.linalg.svd(RG @ RV.T)
    root = np.sqrt(s)
    return QG @ U * root, QV @ Yt.T * root


class ToeplitzLikeProblem:
    """``min ‖(W − ½ 𝒜(G Vᵀ)[:m, :n]) L‖_F`` over the generators (``V = J H``, ``L Lᵀ = weight``).

    Parameters
    ----------
    W : ndarray of shape (m, n), float64
    weight : ndarray of shape (n, n), optional
        Symmetric positive definite ``C`` (None: the identity, the Frobenius fit).
    """

    def __init__(self, W: np.ndarray, weight: np.ndarray | None = None, weight_eigh=None) -> None:
        self.W = W
        self.m, self.n = W.shape
        self.N = max(W.shape)
        self.square = self.m == self.n
        self.weight = weight
        self.directions = None if weight is None else _dominant_directions(weight, weight_eigh, self.N)
        self.twist = skew_twist(self.N)
        self.ramp = self.N - 2.0 * np.arange(self.N)
        self.v_frequencies = np.arange(1, (self.N + 1) // 2 + 1) % self.N  # one of each pair p, 1 - p (mod N)
        self.v_partners = (1 - self.v_frequencies) % self.N
        target = W if weight is None else W @ weight
        self.W_adjoint = _adjoint(np.ascontiguousarray(target), self.N)  # 𝒜*(W̄ C): the right-hand sides
        self.norm = float(np.sqrt(max(np.vdot(target, W), 0.0)))       # f at M = 0

    # ---------------------------------------------------------------- the model and the objective
    def model(self, G, V):
        return 0.5 * _assemble(G @ V.T, self.m, self.n)

    def error_of(self, M) -> float:
        """``‖(W − M) L‖`` for a dense ``M`` (m, n)."""
        return self.error_of_residual(self.W - M)

    def error(self, G, V) -> float:
        return self.error_of(self.model(G, V))

    def error_of_residual(self, R) -> float:
        """``‖R L‖`` for a residual ``R = W − M`` (m, n)."""
        if self.weight is None:
            return float(np.linalg.norm(R))
        return float(np.sqrt(max(np.vdot(R @ self.weight, R), 0.0)))

    def rescaled(self, G, V):
        """The best multiple ``α (G, V)`` of the model and its error (never above ``‖W L‖``)."""
        model = self.model(G, V)
        weighted = model if self.weight is None else model @ self.weight
        curvature = float(np.vdot(weighted, model))
        alpha = float(np.vdot(self.W, weighted)) / curvature if curvature > 0 else 0.0
        return alpha * G, self.error_of(alpha * model)

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
        U, s, Yt = leading_svd(D, rank, seed, start_only=True)
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

    # ---------------------------------------------------------------- normal-equation blocks (square, unweighted)
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

    def g_apply(self, solve, R):
        """``(¼ Γ)⁻¹`` (or its block-diagonal part) applied to the columns' spectra of ``R`` (N, r)."""
        R_hat = scipy.fft.rfft(R, axis=0)
        return scipy.fft.irfft(solve(R_hat), n=self.N, axis=0)

    def v_apply(self, solve, R):
        """``(¼ Ψ)⁻¹`` (or its block-diagonal part) applied in the twisted basis."""
        R_hat = scipy.fft.fft(self.twist[:, None] * R, axis=0)
        X_hat = np.empty_like(R_hat)
        X_hat[self.v_frequencies] = solve(R_hat[self.v_frequencies])
        X_hat[self.v_partners] = X_hat[self.v_frequencies].conj()
        return (self.twist.conj()[:, None] * scipy.fft.ifft(X_hat, axis=0)).real

    def preconditioner_kind(self, which: str, rank: int) -> str:
        """Which square solve preconditions (or, unweighted and square, solves) a half-step: ``"full"`` (one r×r
        Cholesky factor per frequency; for a weighted G-step with C's dominant directions, :meth:`weighted_g_gram`),
        ``"banded"`` (:meth:`banded_solver`) or ``"blocks"`` (the weighted G-step's full blocks over ``BLOCK``
        columns: block Jacobi).

        The exact square solve is worth its ``O(N r³)`` up to ``FULL_MAX_RANK``; inside PCG the unweighted banded
        solve does as well per second beyond ``2 BAND`` columns (on the classifier at r = 125: 11 sweeps in 5 s to an
        error of 0.802, against 4 sweeps in 8 s to 0.803), while the weighted V-step, whose preconditioner misses
        ``C`` anyway, loses with it (0.155 against 0.146 after three sweeps) and keeps the full one.
        """
        if self.weight is not None:
            if rank <= FULL_MAX_RANK:
                return "full"
            return "blocks" if which == "G" else "banded"
        if self.square and rank <= FULL_MAX_RANK:
            return "full"
        return "full" if rank <= 2 * BAND else "banded"

    def preconditioner(self, which: str, fixed):
        """The square solve of a half-step (:meth:`preconditioner_kind`) as a function of ``R`` (N, r)."""
        if which == "G":
            gram = self.g_gram if self.weight is None else self.weighted_g_gram
            apply = self.g_apply
        else:
            gram, apply = self.v_gram, self.v_apply
        r = fixed.shape[1]
        kind = self.preconditioner_kind(which, r)
        if kind == "full":
            solve = _factor(gram(fixed))
        elif kind == "banded":
            solve = self.banded_solver(which, fixed)
        else:
            blocks = [(j0, min(j0 + BLOCK, r)) for j0 in range(0, r, BLOCK)]
            solvers = [_factor(gram(fixed[:, j0:j1])) for j0, j1 in blocks]

            def solve(R_hat):
                out = np.empty_like(R_hat)
                for (j0, j1), block_solve in zip(blocks, solvers):
                    out[:, j0:j1] = block_solve(R_hat[:, j0:j1])
                return out
        return lambda R: apply(solve, R)

    def banded_solver(self, which: str, fixed):
        """The inverse of the square unweighted blocks with the kernel outside a band replaced by its mean (Woodbury).

        With an orthonormal fixed side, both Grams are kernel sums over rank-one terms of its spectrum ``S``
        (``fft(D v_j)`` for G, ``fft(g_j)`` for V): ``¼Γ(p) = (N/4) Σ_q κ(q − p + s) S_q* S_qᵀ`` with
        ``κ(d) = 1 / (N sin(π(2d − 1)/2N))²`` (``κ(0) = κ(1) ≈ 4/π²``, decaying like 1/d²; s = 0 for G, 1 for V) and
        ``Σ_q S_q* S_qᵀ = N I``. Keeping the ``2 BAND`` largest terms and the mean α of the others,
        ``(N/4)(α N I + Σ_band (κ − α) S* Sᵀ)`` is inverted per frequency through a ``2 BAND``-sized capacitance
        matrix: ``O(N r BAND)`` work instead of ``O(N r³)`` (generalized condition numbers about 7 against about
        1800 for 32-column block Jacobi at N = 512, r = 64).
        """
        N, r = fixed.shape
        band = min(BAND, N // 2)
        shift = 0 if which == "G" else 1
        offsets = np.arange(-band + 1, band + 1)                            # q - p + s
        kernel = 1.0 / (N * np.sin(np.pi * (2.0 * np.arange(N) - 1.0) / (2.0 * N))) ** 2
        inside = np.zeros(N, dtype=bool)
        inside[offsets % N] = True
        alpha = float(kernel[~inside].mean()) if (~inside).any() else 0.0
        spectra = scipy.fft.fft((self.twist[:, None] * fixed) if which == "G" else fixed, axis=0)  # S (N, r)
        frequencies = np.arange(N // 2 + 1) if which == "G" else self.v_frequencies
        rows = (frequencies[:, None] - shift + offsets[None, :]) % N       # q for every (p, band term)
        beta = 0.25 * N * alpha * N
        scaled = 0.25 * N * (kernel[offsets % N] - alpha)                  # > 0: κ decreases away from the band
        chunks = [slice(c, min(c + _BAND_CHUNK, len(frequencies))) for c in range(0, len(frequencies), _BAND_CHUNK)]
        small = np.empty((len(frequencies), 2 * band, 2 * band), dtype=complex)
        for chunk in chunks:  # the terms S_q* are gathered per chunk of frequencies: (c, 2b, r) at a time
            terms = spectra[rows[chunk]]                                   # S_q (conjugated below)
            capacitance = np.matmul(terms, terms.conj().transpose(0, 2, 1)) / max(beta, 1e-300)  # CᴴC / β
            capacitance[:, np.arange(2 * band), np.arange(2 * band)] += 1.0 / scaled
            small[chunk] = np.linalg.inv(capacitance)

        def solve(R_hat):  # (P, r): x = (y − C (D⁻¹ + CᴴC/β)⁻¹ Cᴴ y / β) / β, C's columns S_q*
            out = np.empty_like(R_hat)
            for chunk in chunks:
                terms = spectra[rows[chunk]]
                projected = np.matmul(terms, R_hat[chunk, :, None])         # Cᴴ y = Σ_j S_qj y_j: (c, 2b, 1)
                weights = np.matmul(small[chunk], projected).conj()
                correction = np.matmul(terms.transpose(0, 2, 1), weights).conj()[:, :, 0]  # C z = (Sᵀ z*)*
                out[chunk] = (R_hat[chunk] - correction / beta) / beta
            return out
        return solve

    def weighted_g_gram(self, V):
        """The G-step blocks for ``C ≈ ρ I + Σ_t d_t u_t u_tᵀ`` (its ``WEIGHT_DIRECTIONS`` dominant eigenpairs, the
        others replaced by their mean ρ), exact for that weight on the square: ``ρ ¼Γ(p) + ¼ Σ_t d_t ŷ_t(p)* ŷ_t(p)ᵀ``.

        For a rank-one weight ``u uᵀ``, ``M u = ½ Σ_j Z_1(g_j) Z_{-1}(v_j) u = ½ Σ_j Z_1(y_j) g_j`` with
        ``y_j = Z_{-1}(v_j) u`` (circulants commute), so its Hessian in G is ``¼ ŷ(p)* ŷ(p)ᵀ`` at every frequency p of
        the real DFT (``ŷ_j = rfft(y_j)``): the weight stays frequency-decoupled in the G-step as long as it enters
        through vectors. Costs ``2 r k`` FFTs and ``r² k N / 2`` multiply-adds on top of :meth:`g_gram`.
        """
        U, d, rho = self.directions
        spectra = scipy.fft.fft(self.twist[:, None] * V, axis=0)              # twisted spectra of v_j
        directions = scipy.fft.fft(self.twist[:, None] * U, axis=0)          # twisted spectra of u_t
        gram = rho * self.g_gram(V)
        N, r = spectra.shape
        step = max(1, _WEIGHTED_GRAM_CHUNK // (N * r))     # directions at a time: bounded memory, same sums
        for t0 in range(0, len(d), step):
            t = slice(t0, t0 + step)
            Y = scipy.fft.ifft(spectra[:, :, None] * directions[:, None, t], axis=0)
            Y = scipy.fft.rfft((self.twist.conj()[:, None, None] * Y).real, axis=0)  # ŷ_{j,t}: (N/2+1, r, c)
            gram += 0.25 * np.matmul(Y.conj() * d[t], Y.transpose(0, 2, 1))
        return gram

    # ---------------------------------------------------------------- ALS half-steps
    def rhs(self, which: str, fixed):
        """The adjoint of the half-step's linear map applied to ``W C``: ``½ 𝒜*(W̄C) V`` or ``½ 𝒜*(W̄C)ᵀ G``."""
        return 0.5 * (self.W_adjoint @ fixed if which == "G" else self.W_adjoint.T @ fixed)

    def product(self, which: str, x, fixed):
        return x @ fixed.T if which == "G" else fixed @ x.T

    def exact_available(self, which: str, rank: int, first_sweep: bool) -> bool:
        """Whether the half-step is solved exactly (no PCG)."""
        if self.weight is not None:
            return False
        if self.square:
            return rank <= FULL_MAX_RANK
        return self.N * rank <= (DENSE_LIMIT if first_sweep else DENSE_ALWAYS)

    def cg_steps(self, which: str, cg_iterations: int) -> int:
        """PCG steps of a half-step: a weighted G-step, whose preconditioner holds C's dominant directions,
        converges in about a third of the V-step's."""
        return max(2, -(-cg_iterations // 3)) if (which == "G" and self.weight is not None) else cg_iterations

    def half_step(self, which: str, G, V, cg_iterations: int, first_sweep: bool = True, residual=None):
        """Least squares in G (``which="G"``) or in V with the other fixed; returns ``(G, V, error, residual)``.

        ``residual`` is ``W − M(G, V)`` (m, n) when the caller has it (the previous half-step's), else None."""
        Q, R_fixed = np.linalg.qr(V if which == "G" else G)
        x = (G if which == "G" else V) @ R_fixed.T  # the same product G Vᵀ, with an orthonormal fixed side
        if self.exact_available(which, Q.shape[1], first_sweep):
            x = self.square_solve(which, Q) if self.square else self.dense_solve(which, Q)
            G, V = (x, Q) if which == "G" else (Q, x)
            residual = self.W - self.model(G, V)
        else:
            x, residual = self.pcg(which, Q, x, self.cg_steps(which, cg_iterations), residual)
            G, V = (x, Q) if which == "G" else (Q, x)
        return G, V, self.error_of_residual(residual), residual

    def square_solve(self, which: str, fixed):
        """The exact square unweighted half-step (block-circulant solve, module doc)."""
        return self.preconditioner(which, fixed)(self.rhs(which, fixed))

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

    def pcg(self, which: str, fixed, x, iterations: int, residual=None):
        """Least squares in the half-step's unknowns by PCG from ``x`` (module doc); every step lowers ``f``.

        Returns ``(x, W − M)``; ``residual`` is ``W − M`` at ``x`` if known (it is the same before and after the QR
        of the fixed side, which keeps the product)."""
        precondition = self.preconditioner(which, fixed)
        N, C = self.N, self.weight
        if which == "G":
            adjoint = lambda R: 0.5 * (_adjoint(np.ascontiguousarray(R), N) @ fixed)  # noqa: E731
        else:
            adjoint = lambda R: 0.5 * (_adjoint(np.ascontiguousarray(R), N).T @ fixed)  # noqa: E731
        weigh = (lambda R: R) if C is None else (lambda R: R @ C)  # noqa: E731
        if residual is None:
            residual = self.W - 0.5 * _assemble(self.product(which, x, fixed), self.m, self.n)
        gradient = adjoint(weigh(residual))
        z = precondition(gradient)
        direction = z.copy()
        rz = rz0 = float(np.vdot(gradient, z))
        for step in range(iterations):
            if rz <= 1e-28 * rz0 or rz0 == 0.0:
                break
            image = 0.5 * _assemble(self.product(which, direction, fixed), self.m, self.n)
            weighted = weigh(image)
            curvature = float(np.vdot(weighted, image))
            if curvature <= 0.0:
                break
            alpha = rz / curvature
            x = x + alpha * direction
            residual = residual - alpha * image
            if step == iterations - 1:
                break
            gradient = gradient - alpha * adjoint(weighted)
            z = precondition(gradient)
            rz_new = float(np.vdot(gradient, z))
            direction = z + (rz_new / rz) * direction
            rz = rz_new
        return x, residual

    # ---------------------------------------------------------------- work model and the ALS loop
    def half_step_work(self, rank: int, cg_iterations: int, first_sweep: bool = False, which: str = "V") -> float:
        """Model seconds of one half-step: a cost model from the sizes only (so limits on it are deterministic).

        GEMMs at ``GEMM_FLOPS``, O(N²) passes (the Numba assembly and its adjoint) at ``SECONDS_PER_PASS_ELEMENT``,
        the per-frequency Gram and Cholesky factors at ``SECONDS_PER_GRAM_FLOP`` (``r² N log₂N``, FFT-bound) and
        ``SECONDS_PER_FACTOR_FLOP`` (``r³ N``, small batched LAPACK calls), plus their fixed overhead.
        """
        N, m, n, r = self.N, self.m, self.n, rank
        logN = np.log2(max(N, 2))
        kind = self.preconditioner_kind(which, r)
        if kind == "banded":
            factor = _SECONDS_PER_FACTOR + _SECONDS_PER_BAND_SETUP * N * r * (2 * BAND) ** 2
            apply = _SECONDS_PER_BAND_APPLY * N * r * 2 * BAND + _SECONDS_PER_GRAM_FLOP * 2.0 * r * N * logN
            block = 2 * BAND
        else:
            block = r if kind == "full" else BLOCK
            blocks = -(-r // block)
            factor = blocks * (_SECONDS_PER_FACTOR + _SECONDS_PER_GRAM_FLOP * block**2 * N * logN
                               + _SECONDS_PER_FACTOR_FLOP * block**3 * N)
            apply = _SECONDS_PER_GRAM_FLOP * (2.0 * r * N * logN + 4.0 * N * r * block)
        gemm = 4.0 * N * r**2 + 4.0 * N**2 * r  # QR of the fixed side; the right-hand side and the final model
        passes = 2.0 * N**2
        seconds = factor + apply
        cg_iterations = self.cg_steps(which, cg_iterations)
        if which == "G" and self.weight is not None:  # the dominant directions in the preconditioner
            k = self.directions[0].shape[1]
            seconds += _SECONDS_PER_GRAM_FLOP * 3.0 * r * k * N * logN
            gemm += 4.0 * N * r * block * k
        if not self.exact_available("G", r, first_sweep):  # PCG: a residual, then per step two GEMMs, two passes
            gemm += 2.0 * N**2 * r + cg_iterations * 4.0 * N**2 * r
            passes += 2.0 * N**2 + cg_iterations * 2.0 * N**2
            seconds += cg_iterations * apply
            if self.weight is not None:
                gemm += (cg_iterations + 2) * 2.0 * m * n**2
        elif not self.square:
            gemm += (N * r) ** 3 / 3.0 + 2.0 * r**2 * N**3
        return seconds + gemm / GEMM_FLOPS + passes * SECONDS_PER_PASS_ELEMENT

    def refine(self, G, V, order, *, max_iterations: int, tol: float, cg_iterations: int,
               max_work: float | None = None, max_seconds: float | None = None, start: float | None = None,
               progress: bool = False, label: str = "fit_toeplitz_like ALS"):
        """ALS from ``(G, V)``, first half-step ``order[0]``; returns ``(G, V, error, sweeps, work)``.

        Stops on ``tol`` (a sweep lowering the error by less than ``tol`` times itself), exactness,
        ``max_iterations`` sweeps, ``max_work`` (a half-step is not started when its model work would take the
        total past it) or the opt-in ``max_seconds`` (a half-step is not started when the previous one's duration,
        or for the first one the model's, would overrun). Every half-step lowers the objective or keeps it.
        """
        start = time.perf_counter() if start is None else start
        rank = G.shape[1]
        error = previous = np.inf
        sweeps, last_duration, stop, work, residual = 0, 0.0, False, 0.0, None
        bar = tqdm(total=max_iterations, desc=label, disable=not progress)
        try:
            while sweeps < max_iterations and not stop:
                for which in order:
                    step_work = self.half_step_work(rank, cg_iterations, first_sweep=sweeps == 0, which=which)
                    if max_work is not None and work + step_work > max_work:
                        logger.info("%s: stopped after %d sweeps at max_work=%s (%.3g model seconds per "
                                    "half-step)", label, sweeps, max_work, step_work)
                        stop = True
                        break
                    elapsed = time.perf_counter() - start
                    expected = last_duration if np.isfinite(error) else step_work
                    if max_seconds is not None and elapsed + expected > max_seconds:
                        logger.info("%s: stopped after %d sweeps at max_seconds=%s", label, sweeps, max_seconds)
                        stop = True
                        break
                    G, V, error, residual = self.half_step(which, G, V, cg_iterations, first_sweep=sweeps == 0,
                                                           residual=residual)
                    work += step_work
                    last_duration = time.perf_counter() - start - elapsed
                    if error <= EXACT * self.norm:
                        stop = True
                        break
                else:
                    sweeps += 1
                    bar.update(1)
                    bar.set_postfix(error=f"{error / max(self.norm, 1e-300):.4g}")
                    logger.debug("%s sweep %d: relative error %.6g", label, sweeps, error / max(self.norm, 1e-300))
                    stop = previous - error < tol * error
                    previous = error
        finally:
            bar.close()
        return G, V, error, sweeps, work


def _dominant_directions(weight: np.ndarray, eigh, N: int):
    """``(U, d, ρ)``: the ``WEIGHT_DIRECTIONS`` dominant eigenvectors of ``weight`` (zero-padded to N rows), their
    eigenvalues minus ρ, and ρ, the mean of the other eigenvalues (the smallest one if none is left)."""
    mu, V = np.linalg.eigh(weight) if eigh is None else eigh
    order = np.argsort(mu)[::-1]
    k = min(WEIGHT_DIRECTIONS, len(mu))
    top, rest = order[:k], order[k:]
    rho = float(mu[rest].mean()) if rest.size else float(mu.min())
    U = np.zeros((N, k))
    U[: weight.shape[0]] = V[:, top]
    return U, np.maximum(mu[top] - rho, 0.0), max(rho, 0.0)


def _skew_shift(x: np.ndarray, k: int) -> np.ndarray:
    """``Z_{-1}^k x`` for ``0 <= k <= len(x)``: shift down by k, negating what wraps around."""
    return np.concatenate([-x[len(x) - k:], x[: len(x) - k]])


def _start_basis(observed: np.ndarray, extra: np.ndarray, fallback: np.ndarray, rank: int, seed) -> np.ndarray:
    """``rank`` orthonormal columns: the independent top left singular vectors of ``observed``, then ``extra``,
    then the remaining singular vectors and ``fallback`` (all in that order of priority)."""
    if observed.shape[1] > 0:
        U, s, _ = leading_svd(observed, min(rank, *observed.shape), seed, start_only=True)
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


#: Eigenvalues of the masked normal equations below this share of the largest are treated as zero.
PSEUDO_INVERSE_CUTOFF = 1e-10


def _solve_psd(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The minimum-norm solution of a positive semi-definite system (masked normal equations are singular).

    The generators of a masked (rectangular) block have directions that do not change ``M``; the normal equations
    are exactly singular along them, and the right-hand side holds only rounding there. A ridge solve would divide
    that rounding by the ridge (1e-16 / 1e-13: a change of ``W`` in its last bit, e.g. ``W · 10^k`` instead of
    ``W``, moved the next half-steps' starting point by 1e-3 and the final error by 1e-6); the pseudo-inverse
    (eigenvalues below ``PSEUDO_INVERSE_CUTOFF`` times the largest dropped) sets them to zero, so the half-step is
    a continuous function of ``W`` and a rounding-level change of ``W`` stays a rounding-level change of the fit.
    An eigendecomposition costs about twelve Cholesky factorisations (1.2 s at the largest size, ``N r = 2048``,
    one thread), paid in the first sweep only (later sweeps solve exactly up to ``N r = 512``)."""
    values, vectors = scipy.linalg.eigh(normal, check_finite=False)
    keep = values > PSEUDO_INVERSE_CUTOFF * max(float(values[-1]), 1e-300)
    basis = vectors[:, keep]
    return basis @ ((basis.T @ rhs) / values[keep])


def _factor(blocks: np.ndarray):
    """A solver for Hermitian positive semi-definite r×r blocks (one per frequency) plus a small relative ridge,
    raised until the factorisation succeeds (singular frequencies get a finite, minimum-norm-like answer).

    Batched Cholesky factors (NumPy), inverted triangle by triangle (LAPACK ``trtri``), so that applying the
    inverse is two batched triangular products: ``B⁻¹ = L⁻ᴴ L⁻¹``."""
    r = blocks.shape[-1]
    diagonal = np.arange(r)
    scale = max(float(np.abs(blocks[:, diagonal, diagonal]).sum(axis=1).max()) / r, 1e-300)
    ridge = _RIDGE
    while True:
        shifted = blocks.copy()
        shifted[:, diagonal, diagonal] += ridge * scale
        try:
            lower = np.linalg.cholesky(shifted)
            inverse = np.empty_like(lower)
            for k in range(lower.shape[0]):
                inverse[k], info = ztrtri(lower[k], lower=1)
                if info != 0:
                    raise np.linalg.LinAlgError("singular triangular factor")
            if np.isfinite(inverse).all():
                transposed = inverse.transpose(0, 2, 1)  # L⁻ᴴ z = conj((L⁻¹)ᵀ conj z): no conjugated copy of L⁻¹
                return lambda R_hat: np.matmul(transposed, np.matmul(inverse, R_hat[:, :, None]).conj()).conj()[:, :, 0]
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
