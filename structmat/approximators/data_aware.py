"""Data-aware fitting: minimise the layer's output error ``‖(W − M) Xᵀ‖_F`` instead of ``‖W − M‖_F``.

With ``C = XᵀX / N = L Lᵀ`` (:class:`~structmat.InputStatistics`, regularised as documented there), the
objective is ``‖(W − M) L‖²_F`` (structmat's note ``data-aware.md``; Wang et al., "SVD-LLM", ICLR 2025, §3.1).
This module holds what every family's data-aware fit shares:

- :func:`as_statistics` turns ``inputs`` (an ``(N, n)`` array-like, a memory map, or statistics) into
  :class:`~structmat.InputStatistics`, with one clear error for bad inputs;
- :class:`OutputObjective` scores candidates: the regularised squared output error of a structured or dense
  ``M``, relative to the dense layer's output energy;
- :func:`refine_on_outputs` improves a family's matrix by L-BFGS on ``‖(W − M) L‖²_F`` through the family's
  torch layer (its fast product; autograd gives ``−2 (W − M) C`` pulled back to the parameters), a fixed number
  of iterations, so the result is deterministic;
- :func:`fit_with_inputs`, the data-aware fit of a family that has no method of its own: the best of the
  family's plain fit and (when the family can represent it) the whitened low-rank optimum, refined.

A family with its own data-aware method accepts ``inputs=`` in its ``fit_<family>``; ``approximate`` passes the
statistics there, and uses :func:`fit_with_inputs` otherwise. Every data-aware fit keeps the plain fit as a
candidate, so it is never worse than the plain fit on the fitting rows.
"""

from __future__ import annotations

import inspect
import logging

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from structmat.statistics import DEFAULT_RIDGE, InputStatistics

__all__ = ["as_statistics", "OutputObjective", "refine_on_outputs", "fit_with_inputs", "accepts_inputs",
           "DEFAULT_REFINE_ITERATIONS", "check_output_weights", "fisher_output_weights"]

logger = logging.getLogger(__name__)

#: L-BFGS iterations of :func:`refine_on_outputs` (each one forward + backward pass on n rows).
DEFAULT_REFINE_ITERATIONS = 40


def as_statistics(inputs, n_features: int) -> InputStatistics:
    """``inputs`` as :class:`~structmat.InputStatistics` of width ``n_features``.

    Accepted: an ``InputStatistics``; an ``(N, n_features)`` array, memory map, torch tensor, feature-cache array
    or anything ``np.asarray`` turns into one (real numbers, finite, at least one row).
    """
    if isinstance(inputs, InputStatistics):
        if inputs.n_features != n_features:
            raise ValueError(f"inputs are statistics of {inputs.n_features} features, but the weight has "
                             f"in_features={n_features}; expected statistics of shape ({n_features}, {n_features})")
        if inputs.count == 0:
            raise ValueError("inputs are statistics of no rows; accumulate some inputs first")
        return inputs
    if inputs is None:
        raise TypeError(f"inputs must be an (N, {n_features}) array or an InputStatistics; got None")
    shape = getattr(inputs, "shape", None)
    if shape is not None and len(shape) != 2:
        raise ValueError(f"inputs must have shape (N, {n_features}), one input per row; got shape {tuple(shape)}")
    if shape is not None and shape[1] != n_features:
        raise ValueError(f"inputs must have shape (N, {n_features}) to match the weight's in_features={n_features}; "
                         f"got shape {tuple(shape)}")
    stats = InputStatistics.from_rows(inputs)
    if stats.n_features != n_features:
        raise ValueError(f"inputs must have shape (N, {n_features}) to match the weight's in_features={n_features}; "
                         f"got {stats.n_features} features")
    return stats


def check_output_weights(weights, m: int) -> np.ndarray:
    """``weights`` as a float64 vector of ``m`` positive finite numbers, or one clear error."""
    array = np.asarray(weights)
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise TypeError(f"output_weights must be real numbers, one per output row (shape ({m},)); got dtype "
                        f"{array.dtype}")
    array = array.astype(np.float64)
    if array.shape != (m,):
        raise ValueError(f"output_weights must have shape ({m},), one per output row; got shape {array.shape}")
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"output_weights must be finite and > 0; got min {array.min():g}, max {array.max():g}")
    return array


def fisher_output_weights(logits, *, temperature: float = 1.0, floor: float = 0.1) -> np.ndarray:
    """Weights of a classifier's outputs for :func:`~structmat.approximate`'s ``output_weights``.

    ``d_i = sqrt(F_i / mean(F) + floor)`` with ``F_i = mean over rows of p_i (1 − p_i)``, ``p = softmax(z / T)``
    of the layer's logits ``z``: ``p_i (1 − p_i)`` is the diagonal of the Hessian of the distillation loss
    ``KL(p ‖ softmax(s / T))`` in the student's logits ``s`` at ``s = z`` (the Fisher information of the softmax),
    so ``Σ_i d_i² ‖(W − M)_i Xᵀ‖²`` is the separable second-order approximation of that loss near the teacher.
    Logits that are never near the top get little budget; ``floor`` (relative to the mean) keeps every weight
    positive. Weighting rows by Fisher information follows Hsu et al., "Language model compression with weighted
    low-rank factorization", ICLR 2022 (FWSVD).

    Parameters
    ----------
    logits : array_like of shape (N, m)
        The dense layer's outputs on the fitting rows (a feature cache's cached logits, say).
    temperature, floor : float > 0 and >= 0
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, m) with N, m >= 1; got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    if not temperature > 0 or not floor >= 0:
        raise ValueError(f"temperature must be > 0 and floor >= 0; got {temperature!r}, {floor!r}")
    fisher = np.zeros(z.shape[1])
    for start in range(0, z.shape[0], 4096):
        part = z[start:start + 4096] / temperature
        p = np.exp(part - part.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        fisher += (p * (1.0 - p)).sum(axis=0)
    fisher /= z.shape[0]
    mean = fisher.mean()
    relative = fisher / mean if mean > 0 else np.ones_like(fisher)
    weights = np.sqrt(relative + floor)
    return weights if floor > 0 else np.maximum(weights, 1e-12)


def accepts_inputs(fit) -> bool:
    """Whether a ``fit_<family>`` function has its own data-aware method (an ``inputs`` keyword)."""
    try:
        return "inputs" in inspect.signature(fit).parameters
    except (TypeError, ValueError):
        return False


class OutputObjective:
    """The regularised output objective of one weight on one set of input statistics.

    ``error2(M)`` is ``‖(W − M) L‖²_F / ‖W L‖²_F`` with ``L Lᵀ = C + λI`` (both scaled to avoid overflow), the
    relative squared output error the fits minimise; ``relative_error(M)`` is its square root.

    Parameters
    ----------
    W : ndarray of shape (m, n), float64
    stats : InputStatistics
    ridge : float
        Relative regularisation (see :meth:`InputStatistics.regularized_eigh`).
    """

    def __init__(self, W: np.ndarray, stats: InputStatistics, ridge: float = DEFAULT_RIDGE) -> None:
        self.W = W
        self.stats = stats
        self.ridge = ridge
        self.L = stats.whitening_factor(ridge)          # n × n, C/scale² + λI = L Lᵀ
        self._lower = stats.cholesky_factor(ridge) is not None   # L is the (lower-triangular) Cholesky factor
        self.WL = W @ self.L
        self.energy = float(np.einsum("ij,ij->", self.WL, self.WL))

    def error2(self, M) -> float:
        """Relative squared output error of ``M`` (a StructuredMatrix or a dense array)."""
        dense = np.asarray(M if isinstance(M, np.ndarray) else M.to_dense(), dtype=np.float64)
        if self._lower:
            # ((W − M) L)ᵀ = Lᵀ (W − M)ᵀ by a triangular product: half the multiply-adds of a full one
            R = scipy.linalg.blas.dtrmm(1.0, self.L.T, (self.W - dense).T, side=0, lower=0, overwrite_b=1)
        else:
            R = self.WL - dense @ self.L
        residual = float(np.einsum("ij,ij->", R, R))
        if self.energy == 0.0:
            return 0.0 if residual == 0.0 else float("inf")
        return residual / self.energy

    def relative_error(self, M) -> float:
        return float(np.sqrt(self.error2(M)))

    def best(self, candidates):
        """The candidate with the smallest output error (the first one on ties) and its squared error."""
        scored = [(self.error2(M), i, M) for i, M in enumerate(candidates)]
        error2, _, M = min(scored, key=lambda t: (t[0], t[1]))
        return M, error2


def refine_on_outputs(M, W: np.ndarray, stats: InputStatistics, *, ridge: float = DEFAULT_RIDGE,
                      iterations: int = DEFAULT_REFINE_ITERATIONS, objective: OutputObjective | None = None):
    """Improve ``M`` on ``‖(W − M) L‖²_F`` by L-BFGS over its family's parameters; return the better matrix.

    The family's torch layer (float64, no bias) computes ``M L`` as ``layer(Lᵀ)ᵀ`` through its fast product, so
    a step costs about two products with ``n`` columns. The structure (ranks, supports, partitions) is kept and
    ``nparams`` is unchanged. Deterministic: a fixed number of iterations, no time limit. Returns ``M`` itself
    when refinement does not lower the objective (or the family's layer cannot be trained).
    """
    import torch

    from structmat.layers.base import layer_from_matrix

    objective = objective or OutputObjective(W, stats, ridge)
    start_error2 = objective.error2(M)
    if iterations < 1 or start_error2 == 0.0:
        return M
    layer = layer_from_matrix(M, None, dtype=torch.float64)
    params = [p for name, p in layer.named_parameters() if p.requires_grad]
    if not params:
        return M
    X = torch.from_numpy(np.ascontiguousarray(objective.L.T))
    Y = torch.from_numpy(np.ascontiguousarray(objective.WL.T))
    norm = objective.energy if objective.energy > 0 else 1.0
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, history_size=20,
                                  tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = ((layer(X) - Y) ** 2).sum() / norm
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
    except (RuntimeError, ValueError) as exc:  # a layer whose structure autograd cannot train: keep the start
        logger.debug("refine_on_outputs: %s layer not refined (%s)", M.family, exc)
        return M
    refined = layer.to_matrix()
    refined_error2 = objective.error2(refined)
    logger.debug("refine_on_outputs: %s output error %.6g -> %.6g", M.family, np.sqrt(start_error2),
                 np.sqrt(refined_error2))
    return refined if refined_error2 < start_error2 else M


def fit_with_inputs(W: np.ndarray, budget, family: str, stats: InputStatistics, *, ridge: float = DEFAULT_RIDGE,
                    refine_iterations: int = DEFAULT_REFINE_ITERATIONS, **options):
    """Data-aware fit of a family without a method of its own.

    Candidates: the family's plain fit (``fit(W, budget, **options)``) and, when the family's matrix class has
    ``from_lowrank(LowRank)`` (its exact representation of a low-rank matrix, or None), the whitened low-rank
    optimum at the largest rank the budget allows. The best by output error is refined by
    :func:`refine_on_outputs`. Never worse than the plain fit on the objective.
    """
    from structmat._validation import resolve_budget
    from structmat.approximators.lowrank import fit_lowrank
    from structmat.families import get_family

    entry = get_family(family)
    limit = resolve_budget(budget, W.shape)
    objective = OutputObjective(W, stats, ridge)
    candidates = [entry.fit(W, budget, **options)]
    embed = getattr(entry.matrix_class, "from_lowrank", None)
    if embed is not None:
        try:
            whitened = fit_lowrank(W, limit, inputs=stats, ridge=ridge)
        except ValueError:  # the budget is below one rank-one term
            whitened = None
        embedded = embed(whitened) if whitened is not None else None
        if embedded is not None and embedded.nparams <= limit:
            candidates.append(embedded)
    best, _ = objective.best(candidates)
    return refine_on_outputs(best, W, stats, ridge=ridge, iterations=refine_iterations, objective=objective)
