"""JSON that is always valid: NaN and Inf become ``null`` instead of the ``NaN`` tokens JSON does not have."""

from __future__ import annotations

import json
import math

import numpy as np

__all__ = ["finite_json", "dumps"]


def finite_json(value):
    """``value`` with every non-finite float replaced by None, NumPy scalars and arrays turned into Python ones, and
    tuples into lists (recursively through dicts and lists)."""
    if isinstance(value, dict):
        return {str(k): finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_json` ``(value)``; raises instead of ever writing ``NaN``/``Infinity``."""
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)
