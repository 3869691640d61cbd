"""The output norm the data-aware sparse fits work in: ``H = C / scale² + λ I`` and errors measured with it.

``‖(W − M) Xᵀ‖²_F / N = tr((W − M) C (W − M)ᵀ)``, so every data-aware fit of the sparse families needs only the
regularised second moment ``H`` (the same regularisation as :meth:`InputStatistics.regularized_eigh`, without the
eigendecomposition: ``λ = ridge · tr(C / scale²) / n``, or 1 when every input is zero). Errors are relative to the
dense layer's output energy ``tr(W H Wᵀ)``, as :class:`~structmat.approximators.data_aware.OutputObjective`.
"""

from __future__ import annotations

import numpy as np

from structmat.statistics import InputStatistics

__all__ = ["OutputNorm"]


class OutputNorm:
    """``H = C / scale² + λ I`` of one weight's inputs (``λ``: ``shift``), with ``W H`` and ``H⁻¹`` computed once, when
    first needed.

    Parameters
    ----------
    W : ndarray of shape (m, n), float64
    stats : InputStatistics
    ridge : float
        Relative regularisation ``λ = ridge · tr(C / scale²) / n``.

    Raises
    ------
    ValueError
        when ``H`` is singular (``ridge=0`` and dead or too few inputs): the sparse fits need ``H⁻¹``.
    """

    def __init__(self, W: np.ndarray, stats: InputStatistics, ridge: float) -> None:
        ridge = float(ridge)
        if not (ridge >= 0.0 and np.isfinite(ridge)):
            raise ValueError(f"ridge must be a finite float >= 0; got {ridge}")
        C = stats.normalized_second_moment
        n = C.shape[0]
        trace = float(np.trace(C))
        lam = ridge * trace / n if trace > 0.0 else 1.0
        H = (C + C.T) / 2.0
        H[np.diag_indices(n)] += lam
        self.W = W
        self.H = H
        self.ridge = ridge
        self.shift = lam
        self._WH = None
        self._energy = None
        self._inverse = None

    @property
    def WH(self) -> np.ndarray:
        """``W H`` (computed once, when first needed)."""
        if self._WH is None:
            self._WH = self.W @ self.H
        return self._WH

    @property
    def energy(self) -> float:
        """The dense layer's output energy ``tr(W H Wᵀ)``."""
        if self._energy is None:
            self._energy = float(np.einsum("ij,ij->", self.WH, self.W))
        return self._energy

    @property
    def inverse(self) -> np.ndarray:
        """``H⁻¹`` (symmetric, from a Cholesky factorisation, LAPACK ``potrf`` + ``potri``; computed once)."""
        if self._inverse is None:
            from scipy.linalg.lapack import dpotrf, dpotri

            factor, info = dpotrf(self.H, lower=1)
            if info == 0:
                inverse, info = dpotri(factor, lower=1, overwrite_c=1)
            if info != 0:
                raise ValueError("the input second moment is singular and ridge=0 (dead features, or fewer input "
                                 "rows than features); pass ridge > 0 (as the defaults do) to fit sparse "
                                 "matrices to these inputs")
            self._inverse = inverse + np.tril(inverse, -1).T   # potrf/potri leave the upper triangle zero
        return self._inverse

    def squared_error(self, M) -> float:
        """``tr((W − M) H (W − M)ᵀ)`` for a dense array or a StructuredMatrix ``M`` (one product with ``H``)."""
        D = self.W - (M if isinstance(M, np.ndarray) else M.to_dense())
        return max(float(np.einsum("ij,ij->", D @ self.H, D)), 0.0)

    def exceeds(self, M, error: float, *, regularized: bool = True) -> bool:
        """Whether ``tr((W − M) H (W − M)ᵀ) > error`` (or, with ``regularized=False``, the same with ``C`` for
        ``H``: the error on the fitting rows).

        Every row adds a non-negative term, so the rows of largest diagonal part ``Σ_j D_ij² H_jj`` (an eighth of
        them) are scored first and often settle it; all rows are scored only when they do not. For a candidate far
        worse than ``error``, this costs an eighth of :meth:`squared_error`.
        """
        D = self.W - (M if isinstance(M, np.ndarray) else M.to_dense())
        shift = 0.0 if regularized else self.shift
        first = np.argsort(-(D * D) @ np.diag(self.H), kind="stable")[:max(1, -(-D.shape[0] // 8))]
        for rows in (np.sort(first), slice(None)):
            part = D[rows]
            total = float(np.einsum("ij,ij->", part @ self.H, part)) - shift * float(np.einsum("ij,ij->", part, part))
            if total > error:
                return True
        return False

    def error2(self, M) -> float:
        """``tr((W − M) H (W − M)ᵀ) / tr(W H Wᵀ)`` for a dense array or a StructuredMatrix ``M``."""
        residual = self.squared_error(M)
        if self.energy == 0.0:
            return 0.0 if residual == 0.0 else float("inf")
        return residual / self.energy
