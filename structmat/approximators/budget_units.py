"""Budgets in parameters or in bytes, for the families that store indices beside their values.

A parameter budget limits ``nparams``; a byte budget limits ``nbytes`` (float32 values plus int32 indices), which is
what a deployment pays. Both are resolved to a count of 4-byte *words*: a parameter is one word, and so is an
index. A float budget is a share of ``m · n`` in either unit (for bytes, of the dense float32 bytes ``4 m n``); an
int is a parameter count, or a byte count with ``unit="bytes"``.
"""

from __future__ import annotations

import numbers

import numpy as np

from structmat._validation import resolve_budget

__all__ = ["BUDGET_UNITS", "resolve_limit", "limit_description"]

#: What a budget counts: stored numbers (``nparams``) or storage (``nbytes``, indices included).
BUDGET_UNITS = ("params", "bytes")


def resolve_limit(budget, shape: tuple[int, int], unit: str = "params") -> int:
    """The budget as a number of parameters (``unit="params"``) or of 4-byte words (``unit="bytes"``).

    Examples
    --------
    >>> resolve_limit(0.25, (100, 80)), resolve_limit(0.25, (100, 80), "bytes"), resolve_limit(4000, (100, 80), "bytes")
    (2000, 2000, 1000)
    """
    if unit not in BUDGET_UNITS:
        raise ValueError(f"unit must be one of {BUDGET_UNITS}; got {unit!r}")
    if (unit == "bytes" and isinstance(budget, numbers.Integral) and not isinstance(budget, (bool, np.bool_))):
        if budget < 4:
            raise ValueError(f"budget must be an int >= 4 (bytes) or a float in (0, 1] with unit='bytes'; got {budget}")
        return int(budget) // 4
    return resolve_budget(budget, shape)


def limit_description(limit: int, unit: str) -> str:
    """``"320 parameters"`` or ``"320 4-byte words (1280 bytes)"`` for error messages."""
    return f"{limit} parameters" if unit == "params" else f"{limit} 4-byte words ({4 * limit} bytes)"
