"""The budget-split continuation of the sparse-product fits, for any two-factor state that sweeps at a given split.

A *state* holds two factors, one of them the square "mixing" factor, and offers ``sweep(k_mix) -> relative
error`` (one pass of proximal steps with ``k_mix`` non-zeros allowed in the mixing factor and the rest of the budget
in the other), ``error()``, ``snapshot()`` and ``restore(snapshot)``. :func:`follow_budget_path` moves ``step``
non-zeros per sweep from the other factor to the mixing factor while the error falls, keeps the best state met,
turns back to it once the error has clearly risen past its minimum, and polishes it at that split until a sweep
gains less than ``tol`` (relatively). :class:`FrobeniusMixing` is the PALM4MSA state of the plain fit;
:class:`~structmat.approximators._weighted_palm.WeightedMixing` the variable-metric one of the data-aware fit.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from tqdm.auto import tqdm

from structmat.approximators.palm4msa import Constraint, _PalmState

__all__ = ["follow_budget_path", "follow_budget_schedule", "FrobeniusMixing", "RISE_TOLERANCE", "GIVE_UP_RISE"]

logger = logging.getLogger(__name__)

#: The continuation turns back once the error is this much (relatively) above the best seen.
RISE_TOLERANCE = 0.002
#: While the best state is still the start, the error may first rise as the mixing factor fills; the continuation
#: gives up only if it rises this much.
GIVE_UP_RISE = 0.05


def follow_budget_path(state, k_start: int, k_cap: int, step: int, *, max_iter: int, tol: float,
                       progress: bool = False, desc: str = "fit_sparse_product"):
    """Run the continuation from ``k_start`` mixing non-zeros (at most ``k_cap``); returns ``(error, snapshot,
    k_mix)`` of the best state met and the list of errors (the start first, then one per sweep).

    The ramp turns back to the best state met; when that is still the start (which is a fixed point of the sweeps,
    so polishing it gains nothing), to the best state with a mixing factor instead, which the polish then improves
    and which is kept only if it ends below the start.
    """
    k_mix = k_start
    best = (state.error(), state.snapshot(), k_mix)
    moved = None              # the best state whose mixing factor holds more than k_start non-zeros
    polished = None           # the best state since the ramp turned back
    errors = [best[0]]
    bar = tqdm(total=max_iter, desc=desc, disable=not progress)
    for sweep in range(max_iter):
        if polished is None:
            k_mix = min(k_mix + step, k_cap)
        error = state.sweep(k_mix)
        errors.append(error)
        bar.update(1)
        if polished is None:
            if moved is None or error < moved[0]:
                moved = (error, state.snapshot(), k_mix)
            if error < best[0]:
                best = moved
            elif (k_mix == k_cap or (best[2] > k_start and error > best[0] * (1 + RISE_TOLERANCE))
                  or (best[2] == k_start and error > best[0] * (1 + GIVE_UP_RISE))):
                polished = best if best[2] > k_start else moved
                state.restore(polished[1])
                k_mix = polished[2]
                logger.debug("continuation: turning back at sweep %d to k_mix=%d (error %.6g)", sweep, k_mix,
                             polished[0])
        elif error < polished[0]:
            improvement = polished[0] - error
            polished = (error, state.snapshot(), k_mix)
            if error < best[0]:
                best = polished
            if improvement <= tol * errors[-2]:
                break
        else:
            break
    bar.close()
    return best, errors


def follow_budget_schedule(state, k_start: int, k_target: int, ramp_sweeps: int, sweeps: int, *,
                           progress: bool = False, desc: str = "fit_sparse_product"):
    """A fixed path for when only a few sweeps are affordable: move the mixing factor's count linearly from
    ``k_start`` to ``k_target`` over ``ramp_sweeps`` sweeps, then polish at ``k_target``; returns the best state
    met as :func:`follow_budget_path` does. (With a handful of sweeps the adaptive path has no room to turn back
    and polish: on Gaussian 2048×2048 matrices at a quarter of the entries, six sweeps of this schedule reached
    0.494 where the adaptive path's six ended above the start.)"""
    best = (state.error(), state.snapshot(), k_start)
    errors = [best[0]]
    for sweep in tqdm(range(sweeps), desc=desc, disable=not progress):
        k_mix = k_start + (k_target - k_start) * min(sweep + 1, ramp_sweeps) // max(ramp_sweeps, 1)
        error = state.sweep(k_mix)
        errors.append(error)
        if error < best[0]:
            best = (error, state.snapshot(), k_mix)
    return best, errors


class FrobeniusMixing:
    """PALM4MSA on ``‖W − λ S_1 S_2‖_F`` with normalised factors (the plain fit), swept at a given split.

    ``side="left"``: ``S_1`` is the ``d × d`` mixing factor (``d = m``); ``"right"``: ``S_2`` is (``d = n``).
    """

    def __init__(self, W_fit: np.ndarray, factors: list, lam: float, limit: int, side: str, full=None,
                 power_iterations: tuple = (10, 1e-4)) -> None:
        self.W_fit, self.limit, self.side = W_fit, limit, side
        self.d = factors[0].shape[0] if side == "left" else factors[1].shape[1]
        self.power_iterations = power_iterations
        self.state = _PalmState(W_fit, factors, lam, power_iterations)
        self.state.full = full

    def _constraints(self, k_mix: int) -> list:
        mix = Constraint("topk", (self.d, self.d), k_mix)
        big = Constraint("topk", self.W_fit.shape, self.limit - k_mix)
        return [mix, big] if self.side == "left" else [big, mix]

    def sweep(self, k_mix: int) -> float:
        return self.state.sweep(self._constraints(k_mix))

    def error(self) -> float:
        return self.state.error()

    def snapshot(self):
        return list(self.state.factors), self.state.lam     # factors are replaced by sweeps, never modified

    def restore(self, snapshot) -> None:
        factors, lam = snapshot
        self.state = _PalmState(self.W_fit, list(factors), lam, self.power_iterations)

    @staticmethod
    def product_factors(snapshot) -> list:
        """The snapshot's factors in float64 with its scale (optimal for them) folded into the first."""
        (first, second), lam = snapshot
        return [lam * first.astype(np.float64), second.astype(np.float64)]


def start_step(ramp_rate: float, limit: int, size: int) -> int:
    """Non-zeros moved per sweep: a share of the budget, capped at its value for a quarter of the weights (larger
    steps made the error climb too far before the mixing factor paid off; the classifier at share 0.5)."""
    return max(1, math.ceil(ramp_rate * min(limit, size // 4)))
