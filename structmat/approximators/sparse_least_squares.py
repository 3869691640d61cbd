"""Sparse supports and values fitted to a layer's outputs: saliencies and least squares under an input moment.

The output error of a sparse ``S`` approximating a target ``R`` (a weight, or a residual) on inputs with second
moment ``C`` is ``‖(R − S) L‖²_F = Σ_i (r_i − s_i) C (r_i − s_i)ᵀ`` (rows ``r_i``, ``L Lᵀ = C``), so rows are
independent once supports are fixed:

- Values. For row ``i`` with kept columns ``Ω``, the best values are ``s_Ω = (r_i C)_Ω C_ΩΩ⁻¹`` (zero gradient of
  the quadratic). Rows that share a support, like the ``br`` rows of a block-row in BSR, share one Cholesky
  factor of ``C_ΩΩ``.
- Supports. Zeroing a group ``J`` of a row's entries and letting the others compensate optimally costs
  ``r_J [(C⁻¹)_JJ]⁻¹ r_Jᵀ`` (optimal brain surgeon, Hassibi & Stork 1993, eq. (5), for a group of weights; for
  one weight ``r_j² / (C⁻¹)_jj``). Keeping the groups of largest saliency is the one-shot mask that SparseGPT
  (Frantar & Alistarh, ICML 2023, §3) refines column by column; here it is used as it is, with exact values.

Everything takes ``C`` through its regularised eigendecomposition ``C = V diag(μ) Vᵀ``
(:meth:`~structmat.InputStatistics.regularized_eigh`), so ``C⁻¹`` exists.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["SecondMoment", "top_mask"]


class SecondMoment:
    """A regularised input second moment ``C = V diag(μ) Vᵀ`` (n × n) and what sparse fits need from it.

    Parameters
    ----------
    mu : ndarray of shape (n,)
        Eigenvalues, all > 0.
    V : ndarray of shape (n, n)
        Orthonormal eigenvectors.
    """

    def __init__(self, mu: np.ndarray, V: np.ndarray) -> None:
        if mu.min() <= 0.0:
            raise ValueError("the input second moment must be positive definite (pass ridge > 0)")
        self.mu, self.V = mu, V
        self.C = (V * mu) @ V.T
        self.C = (self.C + self.C.T) / 2.0
        self.L = V * np.sqrt(mu)  # L Lᵀ = C

    @classmethod
    def from_statistics(cls, stats, ridge: float) -> "SecondMoment":
        mu, V = stats.regularized_eigh(ridge)
        return cls(mu, V)

    def inverse_diagonal_blocks(self, width: int) -> np.ndarray:
        """``(C⁻¹)_JJ`` for the column groups ``J = [j·width, (j+1)·width)``, shape ``(⌈n/width⌉, width, width)``;
        columns past ``n`` get an identity (they hold no weights)."""
        n = self.mu.size
        groups = -(-n // width)
        root_inv = np.zeros((groups * width, n))
        root_inv[:n] = self.V / np.sqrt(self.mu)  # C⁻¹ = (V μ^-1/2)(V μ^-1/2)ᵀ
        root_inv = root_inv.reshape(groups, width, n)
        blocks = np.einsum("gan,gbn->gab", root_inv, root_inv)
        for j in range(n, groups * width):
            blocks[j // width, j % width, j % width] = 1.0
        return blocks

    def output_error2(self, R: np.ndarray) -> float:
        """``‖R L‖²_F`` for a residual ``R`` (m × n)."""
        RL = R @ self.L
        return float(np.einsum("ij,ij->", RL, RL))

    def least_squares(self, target: np.ndarray, groups) -> np.ndarray:
        """The best ``S`` on given supports: ``S[rows, cols] = (target[rows] C)[:, cols] C[cols, cols]⁻¹``.

        ``groups`` is a sequence of ``(rows, cols)`` index arrays (disjoint row sets, columns sorted); rows of a
        group share its support. Returns the dense ``S`` (zero off the supports).
        """
        G = target @ self.C
        S = np.zeros_like(target)
        for rows, cols in groups:
            if len(cols) == 0:
                continue
            block = self.C[np.ix_(cols, cols)]
            rhs = G[np.ix_(rows, cols)].T
            try:
                factor = scipy.linalg.cho_factor(block, check_finite=False)
                values = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
            except np.linalg.LinAlgError:  # numerically semidefinite despite the ridge: least squares
                values = scipy.linalg.lstsq(block, rhs, check_finite=False)[0]
            S[np.ix_(rows, cols)] = values.T
        return S


def top_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of the ``count`` largest ``scores`` (ties: earlier in row-major order), same shape."""
    flat = scores.ravel()
    keep = np.zeros(flat.size, dtype=bool)
    if count >= flat.size:
        keep[:] = True
    elif count > 0:
        keep[np.argsort(-flat, kind="stable")[:count]] = True
    return keep.reshape(scores.shape)
