"""The dense "approximation": W itself, for reference rows in sweeps. Needs a budget of at least m·n."""

from __future__ import annotations

from structmat._validation import check_weight, resolve_budget
from structmat.approximators.fit_guard import guarded_fit
from structmat.matrices.dense import Dense

__all__ = ["fit_dense"]


@guarded_fit
def fit_dense(W, budget=1.0) -> Dense:
    """Return ``W`` as a :class:`Dense` matrix (float64); exact, ``nparams = m * n``.

    Raises
    ------
    ValueError
        if ``budget`` is below ``m * n``.
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    m, n = W.shape
    if limit < m * n:
        raise ValueError(f"budget={budget} allows {limit} parameters; a dense {m}x{n} matrix needs {m * n}")
    return Dense(W)
