r"""How a model-wide sparsity is split across layers: uniform, or Erdős–Rényi-kernel (ERK).

ERK (Evci et al., "Rigging the Lottery", ICML 2020, Sec. 3; used by SWAT-ERK, Raihan & Aamodt 2020) gives layer
:math:`l` with weight shape :math:`(n_1, \dots, n_d)` (kernel dimensions included) the density

.. math::

    d_l = \min\Bigl(1, \varepsilon \, \frac{\sum_j n_j}{\prod_j n_j}\Bigr),

with :math:`\varepsilon` solved so that the layers keep :math:`d \sum_l N_l` weights in total
(:math:`N_l = \prod_j n_j`). A layer whose density would exceed 1 is made dense, one at a time starting from the
largest, and :math:`\varepsilon` is solved again over the others. Small layers thus stay denser than large ones.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

__all__ = ["DISTRIBUTIONS", "allocate_densities", "erk_densities", "check_sparsity"]

#: The per-layer distributions of a model-wide sparsity.
DISTRIBUTIONS = ("uniform", "erk")


def check_sparsity(value, name: str = "sparsity") -> float:
    """A share of zeros: a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1); got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1); got {value}")
    return value


def erk_densities(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Per-layer densities of the Erdős–Rényi-kernel distribution keeping ``density`` of all weights.

    >>> [round(d, 3) for d in erk_densities([(64, 64), (10, 64)], 0.5)]
    [0.422, 1.0]
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    sizes = [math.prod(shape) for shape in shapes]
    raw = [sum(shape) / size for shape, size in zip(shapes, sizes)]
    dense: set[int] = set()
    target = density * sum(sizes)
    while True:
        rest = [i for i in range(len(shapes)) if i not in dense]
        if not rest:
            return [1.0] * len(shapes)
        budget = target - sum(sizes[i] for i in dense)
        eps = budget / sum(raw[i] * sizes[i] for i in rest)
        largest = max(rest, key=lambda i: raw[i])
        if eps * raw[largest] > 1.0:
            dense.add(largest)
            continue
        return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]


def allocate_densities(shapes: Sequence[Sequence[int]], sparsity: float, distribution: str = "uniform") -> list[float]:
    """Per-layer densities (shares of weights kept) for a model-wide ``sparsity`` (share of weights removed).

    ``"uniform"`` gives every layer ``1 - sparsity``; ``"erk"`` the Erdős–Rényi-kernel split, which keeps the same
    total number of weights.
    """
    sparsity = check_sparsity(sparsity)
    if distribution == "uniform":
        return [1.0 - sparsity] * len(shapes)
    if distribution == "erk":
        return erk_densities(shapes, 1.0 - sparsity)
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}; got {distribution!r}")
