"""Best low-rank approximation under a parameter budget: truncated SVD, exact or randomized."""

from __future__ import annotations

import logging

import numpy as np
import scipy.linalg
from sklearn.utils.extmath import randomized_svd

from structmat._validation import check_positive_int, check_weight, resolve_budget
from structmat.approximators.data_aware import as_statistics
from structmat.approximators.fit_guard import guarded_fit
from structmat.matrices.lowrank import LowRank
from structmat.statistics import DEFAULT_RIDGE

__all__ = ["fit_lowrank", "truncated_svd", "max_rank_for_budget", "lowrank_error2"]

logger = logging.getLogger(__name__)

_METHODS = ("auto", "svd", "randomized")
#: ``method="auto"`` uses the exact SVD up to this smaller side, and randomized beyond it when the rank is small.
AUTO_EXACT_MAX_SIDE = 1024
AUTO_RANDOMIZED_MAX_RANK_SHARE = 0.25


def max_rank_for_budget(shape: tuple[int, int], budget: int) -> int:
    """The largest r with ``r (m + n) <= budget``, capped at ``min(m, n)`` (a higher rank adds nothing)."""
    m, n = shape
    return min(budget // (m + n), m, n)


def lowrank_error2(W: np.ndarray, L: LowRank, norm2: float | None = None) -> float:
    """``‖W − U Vᵀ‖²_F`` of a plain :func:`fit_lowrank` result, from its factors' norms: the truncated (exact or
    randomized) SVD is an orthogonal projection of ``W``, so the error is ``‖W‖² − Σ_i s_i²`` with
    ``s_i² = ‖U_i‖² ‖V_i‖²`` (``U = U_r √Σ``, ``V = V_r √Σ``); an ``O(r (m + n))`` shortcut for the ``O(m n r)``
    residual, exact up to rounding of order ``ε ‖W‖²``."""
    if norm2 is None:
        norm2 = float(np.einsum("ij,ij->", W, W))
    kept = float(np.sum(np.einsum("ij,ij->j", L.U, L.U) * np.einsum("ij,ij->j", L.V, L.V)))
    return max(norm2 - kept, 0.0)


def truncated_svd(W: np.ndarray, rank: int, *, method: str = "auto", oversamples: int = 10,
                  power_iterations="auto", seed=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The leading ``rank`` singular triplets ``(U, s, Vt)`` of a float64 ``W``.

    ``method="svd"`` is LAPACK's full SVD (``gesdd``); ``"randomized"`` is the randomized range finder with
    ``oversamples`` extra columns and ``power_iterations`` subspace iterations (Halko, Martinsson & Tropp,
    "Finding structure with randomness", SIAM Review 53(2), 2011, Algorithms 4.4 and 5.1), via scikit-learn's
    ``randomized_svd``; ``"auto"`` picks randomized when ``min(m, n) > 1024`` and ``rank <= min(m, n) / 4``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    m, n = W.shape
    if method == "auto":
        small_rank = rank <= AUTO_RANDOMIZED_MAX_RANK_SHARE * min(m, n)
        method = "randomized" if (min(m, n) > AUTO_EXACT_MAX_SIDE and small_rank) else "svd"
    if method == "svd":
        try:
            U, s, Vt = scipy.linalg.svd(W, full_matrices=False, lapack_driver="gesdd")
        except np.linalg.LinAlgError:  # gesdd can fail to converge on rare inputs; gesvd is slower but robust
            U, s, Vt = scipy.linalg.svd(W, full_matrices=False, lapack_driver="gesvd")
        return U[:, :rank], s[:rank], Vt[:rank]
    oversamples = check_positive_int(oversamples, "oversamples", minimum=0)
    if power_iterations != "auto":
        power_iterations = check_positive_int(power_iterations, "power_iterations", minimum=0)
    return randomized_svd(W, rank, n_oversamples=oversamples, n_iter=power_iterations,
                          random_state=np.random.RandomState(np.random.default_rng(seed).integers(2**31)))


@guarded_fit
def fit_lowrank(W, budget, *, inputs=None, ridge: float = DEFAULT_RIDGE, method: str = "auto",
                oversamples: int = 10, power_iterations="auto", seed=0) -> LowRank:
    """Best rank-r approximation ``U Vᵀ`` with ``r (m + n) <= budget``, in the Frobenius or the output norm.

    Parameters
    ----------
    W : array_like of shape (out_features, in_features)
        Real, finite; fitted in float64.
    budget : int >= 1 or float in (0, 1]
        Parameter count, or a share of ``m * n``.
    inputs : array_like of shape (N, in_features), or InputStatistics, optional
        When given, minimise the output error ``‖(W − M) Xᵀ‖_F`` instead of ``‖W − M‖_F``: with
        ``C + λI = L Lᵀ`` (``λ = ridge · tr(C) / n``), ``M = [W L]_r L⁻¹``, the exact optimum of the regularised
        objective (whitening: Wang et al., "SVD-LLM", ICLR 2025, eq. (3)-(5); classical reduced-rank regression).
    ridge : float
        Relative regularisation of the input second moment (see :class:`~structmat.InputStatistics`).
    method : {"auto", "svd", "randomized"}
        Exact truncated SVD (optimal by Eckart–Young), or the randomized SVD of Halko et al. 2011; ``"auto"``
        takes randomized for large matrices at small ranks (see :func:`truncated_svd`).
    oversamples, power_iterations :
        Randomized SVD settings (``power_iterations="auto"``: 7 below a tenth of the smaller side, else 4).
    seed : int or None
        Seeds the randomized SVD (default 0, so the result is the same on every run; None draws fresh randomness).

    Returns
    -------
    LowRank
        float64, with the singular values split evenly between the factors
        (``U = U_r √Σ``, ``V = V_r √Σ``), which keeps both factors equally scaled for fine-tuning.

    Raises
    ------
    ValueError
        if ``budget < m + n`` (the size of one rank-one term), or for bad ``W``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.random.default_rng(0).standard_normal((8, 6))
    >>> fit_lowrank(W, 0.5)
    LowRank(shape=(8, 6), dtype=float64, nparams=14 (29.2%), rank=1)
    """
    W = check_weight(W)
    limit = resolve_budget(budget, W.shape)
    m, n = W.shape
    rank = max_rank_for_budget(W.shape, limit)
    if rank < 1:
        raise ValueError(
            f"budget={budget} allows {limit} parameters, below the smallest low-rank matrix for shape ({m}, {n}): "
            f"{m + n} parameters (rank 1)"
        )
    if inputs is not None:
        return _fit_whitened(W, rank, as_statistics(inputs, n), ridge, method=method, oversamples=oversamples,
                             power_iterations=power_iterations, seed=seed)
    U, s, Vt = truncated_svd(W, rank, method=method, oversamples=oversamples,
                             power_iterations=power_iterations, seed=seed)
    root = np.sqrt(s)
    logger.debug("fit_lowrank: shape=%s budget=%d rank=%d", W.shape, limit, rank)
    return LowRank(U * root, Vt.T * root)


def _fit_whitened(W, rank, stats, ridge, **svd_options) -> LowRank:
    """``[W L]_r L⁻¹`` with ``L Lᵀ = C/scale² + λI`` (the Cholesky factor; ``V diag(√μ)`` from the eigendecomposition
    when ridge=0 leaves it singular); factors balanced per column. The result does not depend on the factor."""
    T = stats.cholesky_factor(ridge)
    if T is not None:
        U, s, Vt = truncated_svd(W @ T, rank, **svd_options)
        right = scipy.linalg.solve_triangular(T, Vt.T, lower=True, trans="T", check_finite=False)  # L⁻ᵀ V_r
    else:
        mu, Vc = stats.regularized_eigh(ridge)
        if mu[0] <= 0.0:
            raise ValueError("the input second moment is singular and ridge=0; pass ridge > 0 (the default is "
                             f"{DEFAULT_RIDGE}) to fit low rank to these inputs")
        root_mu = np.sqrt(mu)
        U, s, Vt = truncated_svd(W @ (Vc * root_mu), rank, **svd_options)
        right = Vc @ (Vt.T / root_mu[:, None])         # (V_rᵀ L⁻¹)ᵀ = Vc diag(1/√μ) V_r
    left = U * s                                   # M = left @ right.T
    balance = np.sqrt(np.linalg.norm(right, axis=0) / np.maximum(np.linalg.norm(left, axis=0), 1e-300))
    balance = np.where(np.isfinite(balance) & (balance > 0), balance, 1.0)
    logger.debug("fit_lowrank: shape=%s rank=%d, fitted to %d input rows", W.shape, rank, stats.count)
    return LowRank(left * balance, right / balance)
