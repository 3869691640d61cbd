"""Polish a product of two sparse factors: exact least squares on the supports, alternated with PALM4MSA sweeps.

PALM4MSA moves the supports but converges slowly: its steps are ``1 / Lipschitz constant``, tiny in most
directions. With the supports fixed, each factor's values are an exact least-squares problem that splits into
independent small ones (block coordinate descent, each block solved exactly):

.. math:: S_2[s, j] = (G_1[s, s])^{-1} (S_1^\\top W)[s, j], \\quad G_1 = S_1^\\top S_1,
   \\qquad S_1[i, s] = (W S_2^\\top)[i, s]\\, (G_2[s, s])^{-1}, \\quad G_2 = S_2 S_2^\\top,

one Cholesky solve of the size of the support per column of ``S_2`` and per row of ``S_1``. :func:`alternating_polish`
runs rounds of one such exact sweep followed by a few PALM4MSA sweeps (which may swap entries in and out of the
supports) and keeps the best product met. On a 384×384 matrix with a power-law spectrum at half the entries, 40
rounds from FAµST's start took 5 s of CPU to 0.150, where 1000 PALM4MSA iterations of pyfaust took 400 s to 0.160.

References
----------
L. Le Magoarou, R. Gribonval, IEEE JSTSP 10(4):688–700, 2016 (PALM4MSA); the exact block steps are alternating
least squares restricted to the supports (e.g. Kolda & Bader, SIAM Review 51(3), 2009, §3.4, for ALS as block
coordinate descent).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.lapack import dposv

from structmat.approximators.palm4msa import Constraint, _PalmState

__all__ = ["alternating_polish", "support_least_squares"]

#: Relative ridge added to the support Gram blocks, so that repeated or empty rows of the other factor stay solvable.
GRAM_RIDGE = 1e-12


def support_least_squares(gram: np.ndarray, rhs: np.ndarray, support: np.ndarray) -> np.ndarray:
    """For every column ``j`` of ``support`` (bool, ``(d, k)``), the values on its support ``s`` solving
    ``gram[s, s] x = rhs[s, j]`` (``gram`` symmetric positive semi-definite ``(d, d)``, ``rhs`` ``(d, k)``);
    zero elsewhere."""
    out = np.zeros(support.shape)
    ridge = GRAM_RIDGE * max(float(np.trace(gram)) / max(gram.shape[0], 1), 1e-300)
    for j in range(support.shape[1]):
        s = np.flatnonzero(support[:, j])
        if s.size == 0:
            continue
        A = gram[np.ix_(s, s)]
        A[np.diag_indices(s.size)] += ridge
        _, x, info = dposv(A, rhs[s, j])
        out[s, j] = x if info == 0 else np.linalg.lstsq(A, rhs[s, j], rcond=None)[0]
    return out


def _exact_sweep(W: np.ndarray, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    second = support_least_squares(first.T @ first, first.T @ W, second != 0)
    first = support_least_squares(second @ second.T, second @ W.T, (first != 0).T).T
    return first, second


def alternating_polish(W: np.ndarray, factors: list, counts: tuple[int, int], *, rounds: int,
                       palm_sweeps: int = 3, tol: float = 1e-3, give_up_above: float = np.inf,
                       give_up_after: int = 8) -> tuple[list, float]:
    """At most ``rounds`` rounds of one exact least-squares sweep and ``palm_sweeps`` PALM4MSA sweeps (at most
    ``counts`` non-zeros per factor) from ``factors`` (float64, any scale); returns the best factors met (the start
    included) and their relative error.

    Stops early once a round lowers the best error by less than ``tol`` times its value, or, from round
    ``give_up_after`` on, when even the last round's relative gain kept up for every remaining round would not
    bring the best error below ``give_up_above`` (another candidate is better)."""
    norm_w = float(np.linalg.norm(W))
    if norm_w == 0.0:
        return list(factors), 0.0
    first, second = (np.array(f, dtype=np.float64) for f in factors)
    constraints = [Constraint("topk", first.shape, max(1, counts[0])), Constraint("topk", second.shape, max(1, counts[1]))]

    def error(a, b):
        return float(np.linalg.norm(W - a @ b)) / norm_w

    best = (error(first, second), [first, second])
    gain = 0.0
    for done in range(rounds):
        previous = best[0]
        if done >= give_up_after and previous * (1.0 - gain) ** (rounds - done) > give_up_above:
            break
        first, second = _exact_sweep(W, first, second)
        current = error(first, second)
        if current < best[0]:
            best = (current, [first, second])
        n1, n2 = float(np.linalg.norm(first)), float(np.linalg.norm(second))
        if n1 == 0.0 or n2 == 0.0:
            break
        state = _PalmState(W, [first / n1, second / n2], n1 * n2)
        for _ in range(palm_sweeps):
            state.sweep(constraints)
        first, second = state.lam * state.factors[0], state.factors[1]
        current = error(first, second)
        if current < best[0]:
            best = (current, [first, second])
        if previous - best[0] < tol * best[0]:
            break
        gain = (previous - best[0]) / previous
    return best[1], best[0]
