"""Fit an LDR matrix with learned tridiagonal-plus-corner operators, to ``W`` or to the layer's outputs.

The rank the budget leaves after the two operators is ``r = (budget - 6N) // (2N)``, ``N = max(m, n)``.

1. **Candidates** (the best one starts the refinement):

   * the Toeplitz-like fit at rank r (:func:`~structmat.approximators.toeplitz_like.fit_toeplitz_like`), converted
     exactly: ``A = Z_1``, ``B = Z_{-1}``, ``G``, ``H' = ½ τ_{-1}(J H)`` (``= -½ Z_{-1} H``; implementation note
     ldr-sparse-monarch.md §2.3);
   * the truncated SVD at rank r with ``A = 0``: then ``K(A, g) = [g, 0, …, 0]`` and ``M = G Hᵀ`` whatever ``B``
     (:meth:`~structmat.matrices.ldr.LDR.from_lowrank`), the simplest member of the family that equals a simpler
     one. ``B`` is set to ``Z_{-1}`` rather than 0, so that the refinement's gradient with respect to ``A`` does not
     vanish (at ``A = B = 0`` both operators' gradients are zero: a saddle);
   * a warm start (``init``, e.g. the fit at a smaller budget), zero-padded to rank r.

2. **Refinement.** Adam on the operators and generators together, through PyTorch autograd on the fast product of
   :mod:`structmat.layers._ldr_functions` (Krylov recurrences and Horner sums; no operator power is formed). The
   objective is the exact ``‖W − M‖²_F / ‖W‖²_F`` when forming ``M`` from its Krylov blocks is cheap
   (``2 r N³ <= 2·10⁹`` flops), else its unbiased estimate ``‖(W − M) X‖² / ‖W X‖²`` on ``probes`` fresh Gaussian
   probe vectors per step (seeded), checked every few steps on a fixed validation set of probes.

3. **Stopping.** After ``max_iterations`` steps, after ``patience`` checks without a relative improvement of
   ``1e-3`` since the last one that had it, or when the next step would take the work past ``max_work``. Work is
   counted in *model seconds* (:func:`step_work`: a cost model of one step on one core, from ``N``, ``r`` and the
   probes), never measured; the Toeplitz-like start gets half of ``max_work`` (each of its ALS runs), the
   refinement the rest. So, given ``seed``, the result is the same on every machine and under any load. An opt-in
   wall-clock limit ``max_seconds`` (default None) makes the result depend on the machine. The best-checked
   candidate is compared with the start by its exact error and the better one is returned.

**Data-aware fit** (``inputs``): the same with the output objective ``‖(W − M) L‖²_F / ‖W L‖²_F`` (``L Lᵀ = C +
λI``; structmat's note data-aware.md). Candidates: the plain LDR fit above (so the result is never worse than it
on the fitting rows), the data-aware Toeplitz-like fit converted, and the output-optimal (whitened) low rank at
rank r with ``A = 0``; the refinement runs Adam on the output objective (exact through ``L``, or probes ``X = L z``
with Gaussian ``z``, whose expected ``‖(W − M) X‖²`` is the objective).

**Monotone in the budget.** For ``N <= CHAIN_MAX_SIDE`` the fit at rank r chains the ranks 1..r, each warm-started
from the previous answer (padded), so a larger budget never gives a larger error; larger matrices fit each rank
independently unless ``init`` is given.

References
----------
A. Thomas, A. Gu, T. Dao, A. Rudra, C. Ré, "Learning compressed transforms with low displacement rank",
NeurIPS 2018, arXiv:1810.02309 (operators and generators learned jointly by gradient descent). X. Wang et al.,
"SVD-LLM", ICLR 2025, Sec. 3.1 (the whitened low rank).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.data_aware import OutputObjective, as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators._toeplitz_like_als import leading_svd
from structmat.approximators.lowrank import fit_lowrank
from structmat.approximators.toeplitz_like import (CHAIN_MAX_SIDE, check_limit, fit_toeplitz_like_pair)
from structmat.matrices.ldr import LDR, shift_operator
from structmat.matrices.lowrank import LowRank
from structmat.matrices.toeplitz_like import ToeplitzLike, tau
from structmat.statistics import DEFAULT_RIDGE
from structmat.threads import limit_threads

__all__ = ["fit_ldr", "ldr_from_toeplitz_like", "step_work", "DEFAULT_MAX_WORK"]

logger = logging.getLogger(__name__)

#: The exact objective is used when forming M from its Krylov blocks costs at most this many flops (2 r N³).
_EXACT_OBJECTIVE_FLOPS = 2e9
#: Numbers in one Krylov block of a probe product (N² per probe column): bounds its memory (~5 such blocks live).
_KRYLOV_ELEMENTS = 1 << 24
#: Probe vectors per step of the estimated objective, and the fixed validation probes it is checked on.
_PROBES = 8
_VALIDATION_PROBES = 32
#: Steps between two checks of the estimated objective (the exact objective is checked at every step).
_CHECK_EVERY = 10
#: A check counts as progress when the objective fell by this share since the last progress.
_MIN_IMPROVEMENT = 1e-3
#: Share of ``max_work`` (and of ``max_seconds``) the Toeplitz-like start may use.
_START_SHARE = 0.5
#: Default work limit of the whole fit, in model seconds.
DEFAULT_MAX_WORK = 30.0
#: The step cost model (model seconds of a quiet core): a fixed cost per recurrence step (the Python and torch
#: overhead of the N-step Krylov and Horner loops, forward and backward), plus the products: ``r N³`` multiply-adds
#: for the exact objective, ``r N² p`` for p probes (AMD EPYC development machine, one thread).
_SECONDS_PER_RECURRENCE_STEP = 1.3e-4
_SECONDS_PER_EXACT_MAC = 3.3e-10
_SECONDS_PER_PROBE_MAC = 1.3e-9


def step_work(N: int, rank: int, probes: int | None) -> float:
    """Model seconds of one refinement step (forward and backward) of an ``N``-sided LDR matrix of ``rank``, with
    the exact objective (``probes=None``) or ``probes`` probe vectors; a tenth of a check on the 32 validation
    probes is included (one check every 10 steps)."""
    overhead = _SECONDS_PER_RECURRENCE_STEP * N
    if probes is None:
        return overhead + _SECONDS_PER_EXACT_MAC * rank * N**3
    check = (overhead + _SECONDS_PER_PROBE_MAC * rank * N**2 * _VALIDATION_PROBES) / _CHECK_EVERY
    return overhead + _SECONDS_PER_PROBE_MAC * rank * N**2 * probes + check


def ldr_from_toeplitz_like(T: ToeplitzLike) -> LDR:
    """The same matrix as an :class:`LDR` with ``A = Z_1``, ``B = Z_{-1}`` (exact, float64)."""
    N = T.size
    H = 0.5 * tau(T.H[::-1].astype(np.float64), -1.0)
    return LDR(shift_operator(N, 1.0), shift_operator(N, -1.0), T.G.astype(np.float64), H, shape=T.shape)


def _ldr_from_lowrank(lowrank: LowRank, rank: int) -> LDR:
    """``U Vᵀ`` with ``A = 0`` and ``B = Z_{-1}`` (module docstring), zero-padded to ``rank``."""
    M = LDR.from_lowrank(lowrank, rank)
    return LDR(M.A, shift_operator(M.size, -1.0), M.G, M.H, shape=M.shape)


@guarded_fit
def fit_ldr(W, budget, *, inputs=None, ridge: float = DEFAULT_RIDGE, max_iterations: int = 150,
            max_work: float | None = DEFAULT_MAX_WORK, max_seconds: float | None = None,
            learning_rate: float = 3e-3, probes: int | None = None, patience: int = 4, init: LDR | None = None,
            seed=0, progress: bool = False) -> LDR:
    """LDR approximation of ``W`` with ``2 r N + 6 N <= budget`` parameters, ``N = max(m, n)``.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        Fit the layer's outputs on these inputs (module docstring) instead of ``W`` itself.
    ridge : float
        Relative regularisation of the inputs' second moment (:class:`~structmat.InputStatistics`).
    max_iterations : int
        Adam steps at most (0: return the best candidate unrefined).
    max_work : float or None
        Work limit of the whole fit, start included, in model seconds (module docstring; None: none).
        Deterministic.
    max_seconds : float or None
        Opt-in wall-clock limit for the whole fit, start included (default None). A step is not started when the
        previous one's duration would overrun it. Only this limit makes the result depend on the machine.
    learning_rate : float
        Adam's step for the generators, relative to their RMS; the operators' step is ``learning_rate / N``
        (M depends on them through powers up to N − 1).
    probes : int or None
        Probe vectors per step for the estimated objective; None chooses the exact objective when it is cheap
        (module docstring) and 8 probes otherwise (checked every 10 steps on 32 fixed ones).
    patience : int
        Checks without improvement before stopping.
    init : LDR, optional
        A warm start of the same shape and at most the fitted rank (e.g. the fit at a smaller budget): a candidate
        (zero-padded), so the result is never worse than it.
    seed : int
        Seeds the probes and the randomized SVDs (large N).
    progress : bool
        Show a tqdm bar over the steps.

    Runs with the thread limit of :mod:`structmat.threads` (one BLAS and torch thread by default), fits ``W`` divided
    by a power of two and scales the result back (:mod:`structmat.approximators.fit_guard`; ``init`` is scaled with
    it).

    Returns
    -------
    LDR
        float64; never worse (in its objective) than any candidate of the module docstring.

    Raises
    ------
    ValueError
        if ``budget < 8 max(m, n)`` (rank 1 plus the two operators), or for bad ``W``, ``inputs`` or ``init``.

    Examples
    --------
    >>> import numpy as np
    >>> T = np.array([[float(i - j) ** 2 for j in range(6)] for i in range(8)])  # Toeplitz
    >>> M = fit_ldr(T, 2 * 2 * 8 + 6 * 8)
    >>> M.rank, bool(np.allclose(M.to_dense(), T))
    (2, True)
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    max_iterations = check_positive_int(max_iterations, "max_iterations", minimum=0)
    patience = check_positive_int(patience, "patience")
    if probes is not None:
        probes = check_positive_int(probes, "probes")
    m, n = W.shape
    N = max(m, n)
    rank = min((limit - 6 * N) // (2 * N), N)
    if rank < 1:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest LDR matrix for shape ({m}, {n}): "
            f"{8 * N} parameters (rank 1: 2·N generators + 6·N operator entries, N = max(m, n))"
        )
    max_work = check_limit(max_work, "max_work")
    max_seconds = check_limit(max_seconds, "max_seconds")
    stats = None if inputs is None else as_statistics(inputs, n)
    if init is not None and (not isinstance(init, LDR) or init.shape != W.shape or init.rank > rank):
        raise ValueError(f"init must be an LDR matrix of shape {W.shape} and rank <= {rank} (the fitted rank); got "
                         f"{init!r}")
    options = dict(max_iterations=max_iterations, max_work=max_work, max_seconds=max_seconds,
                   learning_rate=learning_rate, probes=probes, patience=patience, seed=seed, progress=progress)
    import torch  # noqa: F401  (imported before the thread limit, so that the limit covers torch's pool too)

    with limit_threads():
        if N > CHAIN_MAX_SIDE:
            return _fit_rank(W, rank, stats, ridge, [] if init is None else [init], None, options)[0]
        fit, toeplitz = None, None
        for k in range(1, rank + 1):  # the chain: monotone in the budget by construction
            warm = [] if fit is None else [fit]
            if init is not None and init.rank <= k:
                warm.append(init)
            fit, toeplitz = _fit_rank(W, k, stats, ridge, warm, toeplitz, options)
        return fit


def _fit_rank(W, rank, stats, ridge, warm, toeplitz_init, options):
    """The fit at ``rank`` (the output fit with ``stats``, else the plain one) and the Toeplitz-like start's fit.

    ``warm`` holds LDR warm starts, each a candidate; ``toeplitz_init`` warm-starts the Toeplitz-like fit."""
    start = time.perf_counter()
    max_work, max_seconds = options["max_work"], options["max_seconds"]
    share = lambda value: None if value is None else _START_SHARE * value  # noqa: E731
    m, n = W.shape
    toeplitz, toeplitz_output = fit_toeplitz_like_pair(
        W, rank, inputs=stats, ridge=ridge, max_work=share(max_work), max_seconds=share(max_seconds),
        init=toeplitz_init, chain=False, seed=options["seed"])
    refine_options = {key: value for key, value in options.items() if key != "max_seconds"}
    refine_options.update(max_work=share(max_work), deadline=None if max_seconds is None else start + max_seconds)
    # the plain fit
    norm = max(float(np.linalg.norm(W)), np.finfo(float).tiny)
    frobenius = lambda M: float(np.linalg.norm(W - _dense(M))) / norm  # noqa: E731
    candidates = [("Toeplitz-like", ldr_from_toeplitz_like(toeplitz.matrix), toeplitz.error)]
    U, s, Vt = leading_svd(W, min(rank, m, n), options["seed"])
    lowrank = LowRank(U * s, Vt.T)
    candidates.append(("low rank", _ldr_from_lowrank(lowrank, rank), frobenius(lowrank)))
    for i, M in enumerate(warm):
        candidates.append((f"warm start {i}", M.padded(rank), frobenius(M)))
    plain = _refined_best(W, candidates, None, refine_options, "plain")
    if stats is None:
        return plain, toeplitz.matrix
    objective = OutputObjective(W, stats, ridge)
    output = lambda M: objective.relative_error(_dense(M))  # noqa: E731
    whitened = fit_lowrank(W, min(rank, m, n) * (m + n), inputs=stats, ridge=ridge, seed=options["seed"])
    candidates = [("plain fit", plain, output(plain)),
                  ("Toeplitz-like", ldr_from_toeplitz_like(toeplitz_output.matrix), toeplitz_output.error),
                  ("whitened low rank", _ldr_from_lowrank(whitened, rank), output(whitened))]
    for i, M in enumerate(warm):
        candidates.append((f"warm start {i}", M.padded(rank), output(M)))
    return _refined_best(W, candidates, objective, refine_options, "output"), toeplitz_output.matrix


def _dense(M) -> np.ndarray:
    """``M.to_dense()`` in float64, without Horner's ``12 N³`` flops when ``A = 0`` (then ``M = G Hᵀ``)."""
    if isinstance(M, LDR) and not M.A.any():
        m, n = M.shape
        return (M.G.astype(np.float64) @ M.H.astype(np.float64).T)[:m, :n]
    return np.asarray(M.to_dense(), dtype=np.float64)


def _refined_best(W, candidates, objective, options, label):
    """The best candidate by relative error (Frobenius, or ``objective``), refined; the better of the two."""
    name, best, error = min(candidates, key=lambda c: c[2])
    logger.info("fit_ldr (%s): shape=%s rank=%d candidates %s; refining %r", label, W.shape, best.rank,
                ", ".join(f"{c[0]} {c[2]:.4g}" for c in candidates), name)
    if options["max_iterations"] == 0 or error <= 1e-11:
        return best
    weight = None if objective is None else objective.L
    # Adam's eps is an absolute floor on the gradients' scale: refine W / max|W| so that W and c·W (e.g. 10^k W,
    # which the fit guard's power-of-two normalisation leaves a factor up to 2 apart) take the same steps
    # (equivariant up to rounding: the error moved by 3e-8 under powers of ten without it)
    peak = float(np.max(np.abs(W))) or 1.0
    refined = _refine(W / peak, best.scaled(1.0 / peak), weight=weight,
                      **{k: v for k, v in options.items() if k != "max_seconds"})
    refined = None if refined is None else refined.scaled(peak)
    if refined is None:
        logger.info("fit_ldr (%s): no step improved the start (error %.4g)", label, error)
        return best
    dense = _dense(refined)
    if objective is None:
        refined_error = float(np.linalg.norm(W - dense)) / max(float(np.linalg.norm(W)), 1e-300)
    else:
        refined_error = objective.relative_error(dense)
    logger.info("fit_ldr (%s): start %.4g, learned operators %.4g", label, error, refined_error)
    return refined if refined_error < error else best


def _refine(W, start: LDR, *, weight, max_iterations, max_work, deadline, learning_rate, probes, patience, seed,
            progress):
    """Adam on (A, B, G, H) for ``‖(W − M) L‖²`` (``L = weight``, or the identity); returns the best-checked
    candidate if a check improved on the start, else None."""
    import torch

    from structmat.layers._ldr_functions import ldr_dense, ldr_product

    m, n = W.shape
    N, r = start.size, start.rank
    generator = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**31)))
    params = {k: torch.tensor(np.array(getattr(start, k)), dtype=torch.float64, requires_grad=True) for k in "ABGH"}
    W_t = torch.from_numpy(W)
    L_t = None if weight is None else torch.from_numpy(np.ascontiguousarray(weight))
    exact = probes is None and 2.0 * r * N**3 <= _EXACT_OBJECTIVE_FLOPS
    probes = _PROBES if probes is None else probes
    columns = max(1, _KRYLOV_ELEMENTS // N**2)  # probe columns per product: its Krylov blocks hold N² of each
    if deadline is not None and time.perf_counter() >= deadline:
        logger.info("fit_ldr: no time left for the refinement (N=%d, rank=%d)", N, r)
        return None
    if not exact and probes > columns:
        logger.info("fit_ldr: %d probes per step instead of %d (N=%d: Krylov blocks of N² per probe)", columns,
                    probes, N)
        probes = columns
    if max_work is not None:
        per_step = step_work(N, r, None if exact else probes)
        steps = int(max_work // per_step)
        if steps < max_iterations:
            logger.info("fit_ldr: %d steps fit in max_work=%.3g (%.3g model seconds per step)", steps, max_work,
                        per_step)
            max_iterations = steps
        if max_iterations == 0:
            return None

    def model(X=None):
        A, B, G, H = (params[k] for k in "ABGH")
        if X is None:
            return ldr_dense(A, G, B, H)[:m, :n]
        X_pad = torch.nn.functional.pad(X, (0, 0, 0, N - n))
        return ldr_product(A, G, B, H, X_pad)[:m]

    def objective(X=None):
        if X is None:
            residual = W_t - model()
            target = W_t
            if L_t is not None:
                residual, target = residual @ L_t, W_t @ L_t
            return residual.square().sum() / target.square().sum().clamp_min(1e-300)
        target = W_t @ X
        residual = sum((target[:, s:s + columns] - model(X[:, s:s + columns])).square().sum()
                       for s in range(0, X.shape[1], columns))
        return residual / target.square().sum().clamp_min(1e-300)

    def draw(count):  # probes whose expected ‖(W − M) X‖² is the objective: Gaussian, or L times Gaussian
        Z = torch.randn(n, count, generator=generator, dtype=torch.float64)
        return Z if L_t is None else L_t @ Z

    validation = None if exact else draw(_VALIDATION_PROBES)
    check = (lambda: objective()) if exact else (lambda: objective(validation))  # noqa: E731
    # M depends on the operators through powers up to N-1, so their steps are N times smaller (relative to 1)
    groups = [{"params": [params["A"], params["B"]], "lr": learning_rate / N}]
    for k in "GH":
        rms = float(params[k].detach().square().mean().sqrt())
        groups.append({"params": [params[k]], "lr": learning_rate * max(rms, 1e-12)})
    optimizer = torch.optim.Adam(groups)
    every = 1 if exact else _CHECK_EVERY
    with torch.no_grad():
        best_value = float(check())
    start_value, reference, best_state, stale, last = best_value, best_value, None, 0, 0.0
    bar = tqdm(total=max_iterations, desc="fit_ldr", disable=not progress)
    try:
        for step in range(max_iterations):
            now = time.perf_counter()
            if deadline is not None and now + last > deadline:
                logger.info("fit_ldr: stopped at max_seconds after %d steps", step)
                break
            optimizer.zero_grad()
            loss = objective(None if exact else draw(probes))
            loss.backward()
            optimizer.step()
            bar.update(1)
            if (step + 1) % every == 0:
                with torch.no_grad():
                    value = float(check())
                bar.set_postfix(objective=f"{value:.4g}")
                if value < best_value:
                    best_value = value
                    best_state = {k: v.detach().numpy().copy() for k, v in params.items()}
                if value < reference * (1 - _MIN_IMPROVEMENT):
                    reference, stale = value, 0
                else:
                    stale += 1
                    if stale >= patience:
                        break
            last = time.perf_counter() - now
    finally:
        bar.close()
    logger.debug("fit_ldr refinement: checked objective %.6g -> %.6g", start_value, best_value)
    if best_state is None:
        return None
    return LDR(best_state["A"], best_state["B"], best_state["G"], best_state["H"], shape=(m, n))
