"""Two sparse factors fitted in the output norm: variable-metric PALM on ``‖(W − S_1 S_2) L‖²_F``, ``L Lᵀ = H``.

The data-aware sparse-product fit minimises ``f(S_1, S_2) = ½ tr((W − S_1 S_2) H (W − S_1 S_2)ᵀ)``. Its partial
Hessians are Kronecker products, ``(S_1ᵀ S_1) ⊗ H`` for ``S_2`` and ``I ⊗ (S_2 H S_2ᵀ)`` for ``S_1``; with
``H`` as ill-conditioned as real inputs make it (condition numbers 1e5-1e8), a Euclidean PALM step
(1 / Lipschitz constant, then the largest entries) is tiny in most directions and its magnitude projection throws
away exactly the small weights that carry output energy. Each step here is a *variable-metric* proximal step
(Chouzenoux, Pesquet & Repetti 2016) in the diagonal metric ``D = diag(A) ⊗ diag(B)`` of the factor's Hessian
``A ⊗ B``, with step ``1 / (c_A c_B)``, ``c_X = λ_max(diag(X)^{-½} X diag(X)^{-½})`` (power iteration, warm
started): the majorisation is exact, so every step lowers ``f``, and the proximal map of "at most ``k`` non-zeros"
in that metric keeps the ``k`` entries with the largest ``D_ij U_ij²``, a saliency in the spirit of optimal brain
surgery. The factors are not normalised (no ``λ``).

The state follows the protocol of :mod:`structmat.approximators._continuation`, so the same budget-split
continuation drives it.

References
----------
E. Chouzenoux, J.-C. Pesquet, A. Repetti, "A block coordinate variable metric forward-backward algorithm",
J. Global Optim. 66(3):457-485, 2016 (the variable-metric block steps); J. Bolte, S. Sabach, M. Teboulle,
Math. Program. 146, 2014 (PALM); L. Le Magoarou, R. Gribonval, IEEE JSTSP 10(4), 2016 (PALM4MSA).
"""

from __future__ import annotations

import math

import numpy as np

from structmat.approximators._output_norm import OutputNorm
from structmat.approximators._selection import top_k_mask
from structmat.approximators.palm4msa import LIPSCHITZ_MARGIN, _Operand, _start_vector

__all__ = ["WeightedMixing", "weighted_topk"]

#: Diagonal entries of a metric below this share of their mean are raised to it (empty rows or columns of a
#: factor, dead inputs), so the metric stays positive definite.
METRIC_FLOOR = 1e-12


def weighted_topk(U: np.ndarray, k: int, D: np.ndarray) -> np.ndarray:
    """``U`` restricted to the ``k`` entries with the largest ``D ⊙ U²`` (``D`` broadcast; stable ties)."""
    if k >= U.size:
        return U.copy()
    return np.where(top_k_mask(U * U * D, k), U, 0.0)


def _floored(diagonal: np.ndarray) -> np.ndarray:
    mean = float(np.mean(diagonal)) if diagonal.size else 0.0
    floor = METRIC_FLOOR * mean if mean > 0 else 1.0
    return np.maximum(diagonal, floor)


def _largest_eigenvalue(apply, n: int, v=None, max_iter: int = 30, rtol: float = 1e-4):
    """``λ_max`` of a symmetric positive semi-definite operator by power iteration from ``v`` (warm start);
    returns the estimate and the last vector."""
    v = _start_vector(n) if v is None else v
    estimate = 0.0
    for _ in range(max_iter):
        w = apply(v)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0, v
        v = w / norm
        if abs(norm - estimate) <= rtol * norm:
            return norm, v
        estimate = norm
    return estimate, v


class WeightedMixing:
    """Variable-metric PALM on the output norm for ``W ≈ S_1 S_2``, swept at a given split (module docstring).

    Parameters
    ----------
    norm : OutputNorm
        ``W``, ``H`` and ``W H``.
    factors : [S_1 (m, d), S_2 (d, n)]
        The start (float64, unnormalised).
    limit : int
        Total non-zeros.
    side : {"left", "right"}
        Which factor is the square mixing one (``"left"``: ``S_1``, ``d = m``).
    """

    def __init__(self, norm: OutputNorm, factors: list, limit: int, side: str) -> None:
        self.norm, self.limit, self.side = norm, limit, side
        self.h = _floored(np.diag(norm.H).copy())
        root = 1.0 / np.sqrt(self.h)
        self.h_scale, _ = _largest_eigenvalue(lambda v: root * (norm.H @ (root * v)), norm.H.shape[0])
        self.factors = [np.array(f, dtype=np.float64) for f in factors]
        self.vectors: dict = {}
        self._PH = None            # S_1 S_2 H of the current factors, once known

    def _counts(self, k_mix: int) -> tuple[int, int]:
        return (k_mix, self.limit - k_mix) if self.side == "left" else (self.limit - k_mix, k_mix)

    def sweep(self, k_mix: int) -> float:
        """One variable-metric step on ``S_2``, then on ``S_1``; returns the relative output error."""
        H, WH = self.norm.H, self.norm.WH
        first, second = self.factors
        k_first, k_second = self._counts(k_mix)
        op = _Operand(first)
        if self._PH is None:
            self._PH = op.left(second @ H)
        # S_2: Hessian (S_1ᵀ S_1) ⊗ H, metric diag(S_1ᵀ S_1) ⊗ diag(H)
        gradient = op.left_t(self._PH - WH)
        a = _floored(np.einsum("ij,ij->j", first, first))
        root_a = 1.0 / np.sqrt(a)
        c_a, self.vectors["a"] = _largest_eigenvalue(lambda v: root_a * op.left_t(op.left((root_a * v)[:, None]))[:, 0],
                                                     a.size, self.vectors.get("a"))
        metric = a[:, None] * self.h[None, :]
        step = LIPSCHITZ_MARGIN * c_a * self.h_scale
        if step > 0:
            second = weighted_topk(second - gradient / (step * metric), k_second, metric)
        # S_1: Hessian I ⊗ (S_2 H S_2ᵀ), metric I ⊗ diag(S_2 H S_2ᵀ)
        second_H = second @ H
        gradient = (op.left(second_H) - WH) @ second.T
        b = _floored(np.einsum("ij,ij->i", second_H, second))
        root_b = 1.0 / np.sqrt(b)
        c_b, self.vectors["b"] = _largest_eigenvalue(lambda v: root_b * (second_H @ (second.T @ (root_b * v))),
                                                     b.size, self.vectors.get("b"))
        step = LIPSCHITZ_MARGIN * c_b
        if step > 0:
            first = weighted_topk(first - gradient / (step * b[None, :]), k_first, b[None, :])
        self.factors = [first, second]
        self._PH = _Operand(first).left(second_H)
        return self.error()

    def error(self) -> float:
        """``‖(W − S_1 S_2) L‖ / ‖W L‖`` of the current factors."""
        if self._PH is None:
            self._PH = _Operand(self.factors[0]).left(self.factors[1] @ self.norm.H)
        P = _Operand(self.factors[0]).left(self.factors[1])
        squared = self.norm.energy - 2.0 * float(np.vdot(self.norm.WH, P)) + float(np.vdot(self._PH, P))
        if self.norm.energy <= 0.0:
            return 0.0
        if squared < 1e-8 * self.norm.energy:       # cancellation: measure directly
            squared = self.norm.error2(P) * self.norm.energy
        return math.sqrt(max(squared, 0.0) / self.norm.energy)

    def snapshot(self):
        return list(self.factors)        # sweeps replace the factors, never modify them

    def restore(self, snapshot) -> None:
        self.factors = list(snapshot)
        self._PH = None
        self.vectors = {}

    def product_factors(self, snapshot) -> list:
        """The snapshot's factors with the output-optimal scale ``⟨W, P⟩_H / ‖P‖²_H`` folded into the first."""
        first, second = snapshot
        P = _Operand(first).left(second)
        PH = _Operand(first).left(second @ self.norm.H)
        energy = float(np.vdot(PH, P))
        scale = float(np.vdot(self.norm.WH, P)) / energy if energy > 0 else 1.0
        return [scale * first, second]


def output_norm_start(norm: OutputNorm, sparse: np.ndarray, side: str) -> list:
    """The product ``I · S`` (``side="left"``) or ``S · I`` (``"right"``) of a sparse fit ``S``."""
    m, n = sparse.shape
    return [np.eye(m), sparse] if side == "left" else [sparse, np.eye(n)]
