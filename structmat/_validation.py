"""Input checks shared by every approximator: the weight matrix and the parameter budget."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_weight", "resolve_budget", "check_positive_int"]


def check_weight(W, name: str = "W") -> np.ndarray:
    """Return ``W`` as a C-contiguous float64 array after checking it is a usable weight matrix.

    Accepted: a 2-D, non-empty, finite array of real floats (float16/32/64) or integers, or anything
    ``np.asarray`` turns into one (a torch tensor on the CPU works through ``__array__``).

    Raises
    ------
    TypeError
        complex, boolean, object or string data.
    ValueError
        not 2-D, an empty side, NaN or Inf.
    """
    if hasattr(W, "detach"):  # a torch tensor: leave autograd and the device behind
        W = W.detach().cpu().numpy()
    W = np.asarray(W)
    if W.dtype.kind == "c":
        raise TypeError(f"{name} must hold real numbers; got complex dtype {W.dtype}")
    if W.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real floats or integers; got dtype {W.dtype}")
    if W.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (out_features, in_features); got shape {W.shape}")
    if W.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {W.shape}")
    W = np.ascontiguousarray(W, dtype=np.float64)
    if not np.isfinite(W).all():
        bad = int(np.size(W) - np.count_nonzero(np.isfinite(W)))
        raise ValueError(f"{name} must be finite; found {bad} NaN or Inf entries in shape {W.shape}")
    return W


def resolve_budget(budget, shape: tuple[int, int]) -> int:
    """Turn a budget into the largest number of parameters allowed for a matrix of ``shape``.

    An int >= 1 is the count itself; a float in (0, 1] is a share of ``m * n``, floored (the budget is an
    upper bound). So ``1`` means one parameter and ``1.0`` the dense count.
    """
    m, n = shape
    if isinstance(budget, (bool, np.bool_)):
        raise TypeError(f"budget must be an int >= 1 or a float in (0, 1]; got the bool {budget}")
    if isinstance(budget, numbers.Integral):
        if budget < 1:
            raise ValueError(f"budget must be an int >= 1 or a float in (0, 1]; got {budget}")
        return int(budget)
    if isinstance(budget, numbers.Real):
        budget = float(budget)
        if not (0.0 < budget <= 1.0) or math.isnan(budget):
            raise ValueError(f"budget must be an int >= 1 or a float in (0, 1]; got {budget}")
        count = math.floor(budget * m * n)
        if count < 1:
            raise ValueError(
                f"budget={budget} is a share of {m}x{n}={m * n} that rounds down to 0 parameters; "
                "pass a larger share or an int count"
            )
        return count
    raise TypeError(f"budget must be an int >= 1 or a float in (0, 1]; got {type(budget).__name__} {budget!r}")


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Check an integer option such as a rank or a number of stages."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
    return int(value)
