r"""Column-row sampling of a matrix product (Adelman, Levy, Hakimi & Silberstein, NeurIPS 2021).

A product :math:`C = AB` with :math:`A \in \mathbb{R}^{N \times n}`, :math:`B \in \mathbb{R}^{n \times M}` is a
sum of :math:`n` outer products of column-row pairs, and is approximated by a weighted subset :math:`S` of them:

.. math::

    C = \sum_{i=1}^{n} A_{:,i} B_{i,:} \approx \sum_{i \in S} s_i A_{:,i} B_{i,:},
    \qquad w_i = \lVert A_{:,i} \rVert_2 \, \lVert B_{i,:} \rVert_2 .

The number of pairs is :math:`k = \min(\max(\lceil \rho n \rceil, k_{\min}), n)` for a sample ratio :math:`\rho`;
at :math:`k = n` the product is exact. Three schemes choose :math:`S` from the scores :math:`w_i`:

``"topk"``
    the :math:`k` largest :math:`w_i`, :math:`s_i = 1`: deterministic and biased, usually the smallest error on
    network tensors.
``"crs"``
    column-row sampling (Drineas, Kannan & Mahoney 2006): :math:`k` draws with replacement from
    :math:`q_i \propto w_i`, :math:`s_i = c_i / (k q_i)` for a pair drawn :math:`c_i` times. Unbiased.
``"bernoulli"``
    Bernoulli-CRS (Adelman et al. 2021): pair :math:`i` kept independently with probability :math:`p_i`,
    :math:`s_i = 1/p_i`. Unbiased; the number of kept pairs is random with mean :math:`k`.

Both randomised schemes mix the norm distribution with the uniform one, :math:`q = (1-\varepsilon) w/\sum w +
\varepsilon / n` (:math:`\varepsilon = 0.1` as in the authors' code), so that pairs of small norm, e.g. freshly
initialised weights, can be picked, and the scale stays below :math:`n/\varepsilon`. Bernoulli-CRS then sets
:math:`p_i = \min(\mu q_i, 1)` with :math:`\mu` found by water-filling so that :math:`\sum p_i = k` exactly;
this minimises the estimator's variance :math:`\sum_i (1-p_i)/p_i \, \lVert A_{:,i}\rVert^2 \lVert B_{i,:}\rVert^2`
under that constraint. The authors' code clamps :math:`k q_i` at 1 without refilling, so with concentrated norms it
keeps far fewer than :math:`k` pairs; here ``sample_ratio`` means the expected share of pairs.

Scales multiply the kept columns as a vector, never as a :math:`k \times k` diagonal matrix product.

References
----------
.. [1] M. Adelman, K. Levy, I. Hakimi, M. Silberstein, "Faster Neural Network Training with Approximate Tensor
       Operations", NeurIPS 2021 (arXiv:1805.08079), Sec. 3 (CRS, Bernoulli-CRS, top-k).
.. [2] P. Drineas, R. Kannan, M. W. Mahoney, "Fast Monte Carlo Algorithms for Matrices I: Approximating Matrix
       Multiplication", SIAM J. Comput. 36(1), 2006, doi:10.1137/S0097539704442684.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from structmat._validation import check_positive_int

__all__ = ["SCHEMES", "PairSampler", "num_pairs", "sample_pairs", "sampled_matmul", "check_sample_ratio"]

#: The pair-selection schemes.
SCHEMES = ("topk", "crs", "bernoulli")


def check_sample_ratio(value, name: str = "sample_ratio") -> float:
    """A share of pairs: a real number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in (0, 1]; got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a float in (0, 1]; got {value}")
    return value


def num_pairs(n: int, sample_ratio: float, minimal_k: int = 1) -> int:
    """``k = min(max(ceil(sample_ratio * n), minimal_k), n)`` column-row pairs out of ``n``.

    >>> num_pairs(100, 0.5), num_pairs(100, 0.001, minimal_k=10), num_pairs(7, 0.5, minimal_k=20)
    (50, 10, 7)
    """
    # The small tolerance keeps 0.3 * 10 at 3 pairs although it is 3.0000000000000004 in floating point.
    return min(max(math.ceil(sample_ratio * n - 1e-9), minimal_k), n)


@dataclass(frozen=True)
class PairSampler:
    """How one product is sampled: a share of pairs, a floor on their number, a scheme and the uniform mix.

    ``PairSampler(1.0)`` is the exact product.
    """

    sample_ratio: float = 1.0
    minimal_k: int = 1
    scheme: str = "topk"
    eps: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "sample_ratio", check_sample_ratio(self.sample_ratio))
        object.__setattr__(self, "minimal_k", check_positive_int(self.minimal_k, "minimal_k"))
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}; got {self.scheme!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real) or not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must be a float in [0, 1]; got {self.eps!r}")

    def num_pairs(self, n: int) -> int:
        return num_pairs(n, self.sample_ratio, self.minimal_k)

    def is_exact(self, n: int) -> bool:
        return self.num_pairs(n) >= n

    def sample(self, scores: torch.Tensor, generator: torch.Generator | None = None):
        """``(indices, scale)`` of the chosen pairs for these scores, or None for the exact product."""
        return sample_pairs(scores, self.num_pairs(scores.numel()), self.scheme, eps=self.eps, generator=generator)


def _water_fill(q: torch.Tensor, k: int) -> torch.Tensor:
    """``p = min(mu q, 1)`` with ``sum(p) = k`` for a probability vector ``q`` (``k`` < number of positive q)."""
    p = torch.clamp(k * q, max=1.0)
    for _ in range(q.numel()):
        full = p >= 1.0
        num_full = int(full.sum())
        mu = (k - num_full) / q[~full].sum()
        p = torch.where(full, torch.ones_like(q), torch.clamp(mu * q, max=1.0))
        if int((p >= 1.0).sum()) == num_full:
            break
    return p


def sample_pairs(scores: torch.Tensor, k: int, scheme: str = "topk", *, eps: float = 0.1,
                 generator: torch.Generator | None = None):
    """Choose column-row pairs by their scores ``w_i = ||A[:, i]|| ||B[i, :]||``.

    Parameters
    ----------
    scores : Tensor of shape (n,)
        Non-negative pair scores.
    k : int
        Number of pairs (for ``"bernoulli"`` the expected number).
    scheme : {"topk", "crs", "bernoulli"}
    eps : float
        Weight of the uniform distribution mixed into the sampling distribution of the randomised schemes.
    generator : torch.Generator, optional
        Source of randomness (seeded by the layers), on the device of ``scores``.

    Returns
    -------
    None or (indices, scale)
        None when the product should be exact (``k >= n``, or all scores zero so that the product is zero).
        Otherwise ``indices``, a sorted int64 tensor of distinct pairs, and ``scale``, a tensor of the same length
        multiplying those pairs (None for ``"topk"``, whose pairs are not rescaled).
    """
    n = scores.numel()
    if k >= n:
        return None
    scores = scores.detach().reshape(-1)
    if scheme == "topk":
        return torch.sort(torch.topk(scores, k, sorted=False).indices).values, None
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}")
    work = scores.double()
    total = work.sum()
    if not torch.isfinite(total) or total <= 0:
        return None
    q = (1.0 - eps) * work / total + eps / n
    if scheme == "crs":
        draws = torch.multinomial(q, k, replacement=True, generator=generator)
        indices, counts = torch.unique(draws, sorted=True, return_counts=True)
        scale = counts.double() / (k * q[indices])
        return indices, scale.to(scores.dtype)
    # Bernoulli-CRS
    positive = int((q > 0).sum())
    if positive <= k:  # every pair that can contribute is kept with probability one: the product is exact
        return None
    p = _water_fill(q, k)
    keep = torch.rand(n, generator=generator, dtype=torch.float64, device=scores.device) < p
    indices = keep.nonzero().reshape(-1)
    return indices, (1.0 / p[indices]).to(scores.dtype)


def sampled_matmul(A: torch.Tensor, B: torch.Tensor, sampler: PairSampler,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """``A @ B`` from sampled column-row pairs; returns the product and the number of pairs it used.

    ``A`` has shape ``(N, n)`` and ``B`` shape ``(n, M)``. With an exact sampler (or ``k >= n``) this is
    ``A @ B`` itself.

    >>> import torch
    >>> A, B = torch.randn(5, 8), torch.randn(8, 3)
    >>> C, used = sampled_matmul(A, B, PairSampler(1.0))
    >>> bool(torch.equal(C, A @ B)), used
    (True, 8)
    """
    n = A.shape[1]
    if B.shape[0] != n:
        raise ValueError(f"A of shape {tuple(A.shape)} and B of shape {tuple(B.shape)} cannot be multiplied")
    if sampler.is_exact(n):
        return A @ B, n
    scores = torch.linalg.vector_norm(A, dim=0) * torch.linalg.vector_norm(B, dim=1)
    sample = sampler.sample(scores, generator)
    if sample is None:
        return A @ B, n
    indices, scale = sample
    A_kept = A.index_select(1, indices)
    if scale is not None:
        A_kept = A_kept * scale
    return A_kept @ B.index_select(0, indices), indices.numel()
