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
    """``H = C / scale² + λ I`` of one weight's inputs, with ``W H`` and the output energy cached.

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
        self.WH = W @ H
        self.energy = float(np.einsum("ij,ij->", self.WH, W))
        self._inverse = None

    @property
    def inverse(self) -> np.ndarray:
        """``H⁻¹`` (symmetric, from a Cholesky factorisation, LAPACK ``potrf`` + ``potri``; computed once)."""
        if self._inverse is None:
            from scipy.linalg.lapack import dpotrf, dpotri

            factor, info = dpotrf(self.H, lower=1)
            if info == 0:
                inverse, info = dpotri(factor, lower=1)
            if info != 0:
                raise ValueError("the input second moment is singular and ridge=0 (dead features, or fewer input "
                                 "rows than features); pass ridge > 0 (the default is 1e-6) to fit sparse "
                                 "matrices to these inputs")
            lower = np.tril(inverse)
            self._inverse = lower + np.tril(lower, -1).T
        return self._inverse

    def error2(self, M) -> float:
        """``tr((W − M) H (W − M)ᵀ) / tr(W H Wᵀ)`` for a dense array or a StructuredMatrix ``M``."""
        D = self.W - (M if isinstance(M, np.ndarray) else M.to_dense())
        residual = float(np.einsum("ij,ij->", D @ self.H, D))
        if self.energy == 0.0:
            return 0.0 if residual == 0.0 else float("inf")
        return max(residual, 0.0) / self.energy
