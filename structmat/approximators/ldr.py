"""Fit an LDR matrix with learned tridiagonal-plus-corner operators: Toeplitz-like start, then autograd.

1. **Start.** The Toeplitz-like fit at the displacement rank the budget leaves after the operators,
   ``r = (budget - 6N) // (2N)``, converted exactly: ``A = Z_1``, ``B = Z_{-1}``, ``G``, ``H' = ½ τ_{-1}(J H)``
   (``= -½ Z_{-1} H``; implementation note ldr-sparse-monarch.md §2.3).
2. **Refinement.** Adam on the operators and generators together, through PyTorch autograd on the fast product of
   :mod:`structmat.layers._ldr_functions` (Krylov recurrences and Horner sums; no operator power is formed). The
   objective is the exact ``‖W − M‖²_F / ‖W‖²_F`` when forming ``M`` from its Krylov blocks is cheap
   (``2 r N³ <= 2·10⁹`` flops), else its unbiased estimate ``‖(W − M) X‖² / ‖W X‖²`` on ``probes`` fresh Gaussian
   probe vectors per step (seeded), checked every few steps on a fixed validation set of probes.
3. **Stopping.** After ``max_iterations`` steps, after ``patience`` checks without a relative improvement of
   ``1e-3`` since the last one that had it, or when the next step would take the work past ``max_work``. Work is
   counted in *model seconds* (:func:`step_work`: a cost model of one step on one core of the machine it was
   calibrated on, from ``N``, ``r`` and the probes), never measured; the start gets half of ``max_work``
   (the Toeplitz-like fit's own work limit), the refinement the rest. So, given ``seed``, the result is the same
   on every machine and under any load; the default (30) keeps the fit times of the wall-clock limit of earlier
   versions on a quiet core. An opt-in wall-clock limit ``max_seconds`` (default None) makes the result depend on
   the machine. The best-checked candidate is compared with the start by its exact error (one Horner evaluation)
   and the better one is returned, so the fit is never worse than its Toeplitz-like start.

References
----------
A. Thomas, A. Gu, T. Dao, A. Rudra, C. Ré, "Learning compressed transforms with low displacement rank",
NeurIPS 2018, arXiv:1810.02309 (operators and generators learned jointly by gradient descent).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.approximators.toeplitz_like import check_limit, fit_toeplitz_like_rank
from structmat.matrices.ldr import LDR, shift_operator
from structmat.matrices.toeplitz_like import ToeplitzLike, tau
from structmat.metrics import relative_error
from structmat.threads import limit_threads

__all__ = ["fit_ldr", "ldr_from_toeplitz_like"]

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
#: Flops per second assumed when reserving time for the final exact check (Horner, ≈ 12 N³ flops).
_HORNER_FLOPS_PER_SECOND = 2e9
#: A check counts as progress when the objective fell by this share since the last progress.
_MIN_IMPROVEMENT = 1e-3
#: Share of ``max_work`` (and of ``max_seconds``) the Toeplitz-like start may use.
_START_SHARE = 0.5
#: Default work limit of the whole fit, in model seconds.
DEFAULT_MAX_WORK = 30.0
#: The step cost model (model seconds of a quiet core): a fixed cost per recurrence step (the Python and torch
#: overhead of the N-step Krylov and Horner loops, forward and backward), plus the products: ``r N³`` multiply-adds
#: for the exact objective, ``r N² p`` for p probes. Fitted to one-thread step times on the development machine (AMD
#: EPYC) for N = 128-1024, r = 8-32 measured with about four jobs per core, divided by 1.5 for a quieter core.
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


@guarded_fit
def fit_ldr(W, budget, *, max_iterations: int = 150, max_work: float | None = DEFAULT_MAX_WORK,
            max_seconds: float | None = None, learning_rate: float = 3e-3, probes: int | None = None,
            patience: int = 4, seed=0, progress: bool = False) -> LDR:
    """LDR approximation of ``W`` with ``2 r N + 6 N <= budget`` parameters, ``N = max(m, n)``.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``.
    max_iterations : int
        Adam steps at most (0: return the Toeplitz-like start).
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
    seed : int
        Seeds the probes and the start's randomized SVD (large N).
    progress : bool
        Show a tqdm bar over the steps.

    Runs with the thread limit of :mod:`structmat.threads` (one BLAS and torch thread by default).

    Returns
    -------
    LDR
        float64; never worse (in relative Frobenius error) than the Toeplitz-like start.

    Raises
    ------
    ValueError
        if ``budget < 8 max(m, n)`` (rank 1 plus the two operators), or for bad ``W``.

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
    import torch  # noqa: F401  (imported before the thread limit, so that the limit covers torch's pool too)

    with limit_threads():
        return _fit_ldr(W, rank, budget, max_iterations, max_work, max_seconds, learning_rate, probes, patience,
                        seed, progress)


def _fit_ldr(W, rank, budget, max_iterations, max_work, max_seconds, learning_rate, probes, patience, seed,
             progress):
    start = time.perf_counter()
    start_seconds = None if max_seconds is None else _START_SHARE * max_seconds
    start_work = None if max_work is None else _START_SHARE * max_work
    toeplitz = fit_toeplitz_like_rank(W, rank, max_work=start_work, max_seconds=start_seconds, seed=seed)
    best = ldr_from_toeplitz_like(toeplitz.matrix)
    errors = [e for e in (toeplitz.closed_form_error, toeplitz.refined_error) if e is not None]
    start_error = min(errors)
    if max_iterations == 0 or start_error <= 1e-11:
        return best
    reserve = 12.0 * best.size**3 / _HORNER_FLOPS_PER_SECOND  # the final exact check of a candidate
    deadline = None if max_seconds is None else start + max_seconds - reserve
    refine_work = None if max_work is None else (1 - _START_SHARE) * max_work
    candidate = _refine(W, best, max_iterations=max_iterations, max_work=refine_work, deadline=deadline,
                        learning_rate=learning_rate, probes=probes, patience=patience, seed=seed, progress=progress)
    if candidate is None:
        logger.info("fit_ldr: shape=%s rank=%d: no step improved the Toeplitz-like start (error %.4g)",
                    W.shape, rank, start_error)
        return best
    error = relative_error(W, candidate)
    logger.info("fit_ldr: shape=%s rank=%d Toeplitz-like start %.4g, learned operators %.4g, %.1f s",
                W.shape, rank, start_error, error, time.perf_counter() - start)
    return candidate if error < start_error else best


def _refine(W, start: LDR, *, max_iterations, max_work, deadline, learning_rate, probes, patience, seed, progress):
    """Adam on (A, B, G, H); returns the best-checked candidate if a check improved on the start, else None."""
    import torch

    from structmat.layers._ldr_functions import ldr_dense, ldr_product

    m, n = W.shape
    N, r = start.size, start.rank
    generator = torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**31)))
    params = {k: torch.tensor(np.array(getattr(start, k)), dtype=torch.float64, requires_grad=True) for k in "ABGH"}
    W_t = torch.from_numpy(W)
    exact = probes is None and 2.0 * r * N**3 <= _EXACT_OBJECTIVE_FLOPS
    probes = _PROBES if probes is None else check_positive_int(probes, "probes")
    columns = max(1, _KRYLOV_ELEMENTS // N**2)  # probe columns per product: its Krylov blocks hold N² of each
    if deadline is not None and time.perf_counter() >= deadline:
        logger.info("fit_ldr: no time left for the refinement (N=%d, rank=%d)", N, r)
        return None
    if not exact and probes > columns:
        logger.info("fit_ldr: %d probes per step instead of %d (N=%d: Krylov blocks of N² per probe)", columns,
                    probes, N)
        probes = columns

    def model(X=None):
        A, B, G, H = (params[k] for k in "ABGH")
        if X is None:
            return ldr_dense(A, G, B, H)[:m, :n]
        X_pad = torch.nn.functional.pad(X, (0, 0, 0, N - n))
        return ldr_product(A, G, B, H, X_pad)[:m]

    def objective(X=None):
        if X is None:
            return (W_t - model()).square().sum() / W_t.square().sum().clamp_min(1e-300)
        target = W_t @ X
        residual = sum((target[:, s:s + columns] - model(X[:, s:s + columns])).square().sum()
                       for s in range(0, X.shape[1], columns))
        return residual / target.square().sum().clamp_min(1e-300)

    validation = None if exact else torch.randn(n, _VALIDATION_PROBES, generator=generator, dtype=torch.float64)
    check = (lambda: objective()) if exact else (lambda: objective(validation))  # noqa: E731
    # M depends on the operators through powers up to N-1, so their steps are N times smaller (relative to 1)
    groups = [{"params": [params["A"], params["B"]], "lr": learning_rate / N}]
    for k in "GH":
        rms = float(params[k].detach().square().mean().sqrt())
        groups.append({"params": [params[k]], "lr": learning_rate * max(rms, 1e-12)})
    optimizer = torch.optim.Adam(groups)
    every = 1 if exact else _CHECK_EVERY
    if max_work is not None:
        per_step = step_work(N, r, None if exact else probes)
        steps = int(max_work // per_step)
        if steps < max_iterations:
            logger.info("fit_ldr: %d steps fit in max_work=%.3g (%.3g model seconds per step)", steps, max_work,
                        per_step)
            max_iterations = steps
        if max_iterations == 0:
            return None
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
            X = None if exact else torch.randn(n, probes, generator=generator, dtype=torch.float64)
            loss = objective(X)
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
