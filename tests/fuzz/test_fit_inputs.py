"""Bad weight arrays and budgets, for every registered family, through ``structmat.approximate``.

A weight that is not a real, finite, non-empty 2-D array and a budget that is not an int >= 1 or a float in (0, 1]
must give a clear error; any other input must give a matrix of the right shape within the budget, finite, no worse
than the zero matrix, and not all zeros for a non-zero weight (or a clear error naming the smallest budget)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structmat
from structmat._validation import resolve_budget

from .._fuzz_settings import FAST, SLOW
from ._files import FAMILY_NAMES
from .outcomes import Recorder

#: Small enough that every family fits in well under a second.
MAX_SIDE = 24


@st.composite
def weights(draw):
    """``(W, valid, label)``: a weight array, whether it is a usable weight, and what it is."""
    kind = draw(st.sampled_from(["gaussian", "gaussian", "lowrank", "zeros", "constant", "scaled", "scaled",
                                 "subnormal", "integers", "float32", "float16", "nan", "inf", "complex", "bool",
                                 "object", "strings", "0-d", "1-d", "3-d", "empty", "huge-range", "list"]))
    m, n = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    G = rng.standard_normal((m, n))
    valid = True
    if kind == "lowrank":
        W = rng.standard_normal((m, 1)) @ rng.standard_normal((1, n))
    elif kind == "zeros":
        W = np.zeros((m, n))
    elif kind == "constant":
        W = np.full((m, n), draw(st.floats(-1e6, 1e6, allow_nan=False).filter(lambda v: v != 0)))
    elif kind == "scaled":
        W = G * 10.0 ** draw(st.integers(-300, 300))
    elif kind == "subnormal":
        W = G * 5e-321
    elif kind == "integers":
        W = rng.integers(-5, 6, (m, n))
    elif kind in ("float32", "float16"):
        W = G.astype(kind)
    elif kind in ("nan", "inf"):
        W = G.copy()
        W.flat[draw(st.integers(0, m * n - 1))] = np.nan if kind == "nan" else -np.inf
        valid = False
    elif kind == "complex":
        W, valid = G + 1j * G, False
    elif kind == "bool":
        W, valid = G > 0, False
    elif kind == "object":
        W, valid = G.astype(object), False
    elif kind == "strings":
        W, valid = G.astype(str), False
    elif kind == "0-d":
        W, valid = np.float64(1.5), False
    elif kind == "1-d":
        W, valid = G[0], False
    elif kind == "3-d":
        W, valid = G[None], False
    elif kind == "empty":
        W, valid = np.zeros((0, n)) if draw(st.booleans()) else np.zeros((m, 0)), False
    elif kind == "huge-range":
        W = G * np.logspace(-200, 200, n)[None, :]
    elif kind == "list":
        W = G.tolist()
    else:
        W = G
    return W, valid, f"{kind} {np.shape(W)}"


BUDGETS = st.one_of(
    st.floats(0.05, 1.0), st.floats(0.05, 1.0), st.integers(1, 2 * MAX_SIDE * MAX_SIDE),
    st.sampled_from([0, -1, 0.0, -0.5, 1.5, 2.0, math.nan, math.inf, True, False, None, "0.5", 10**30, 1, 1.0,
                     np.float32(0.5), np.int64(50), np.float64(1e-9), [0.5]]),
)


def _valid_budget(budget, shape) -> bool:
    try:
        resolve_budget(budget, shape)
    except (TypeError, ValueError):
        return False
    return True


def _check_fit(M, W, budget, family):
    W = np.asarray(W, dtype=np.float64)
    limit = resolve_budget(budget, W.shape)
    if M.shape != W.shape:
        return f"shape {M.shape} for a weight of shape {W.shape}"
    if M.nparams > limit:
        return f"{M.nparams} parameters for a budget of {limit}"
    D = M.to_dense()
    if not np.isfinite(D).all():
        return "NaN or Inf in the result"
    error = structmat.relative_error(W, M)
    if not error <= 1.0 + 1e-9:
        return f"relative error {error} is worse than the zero matrix"
    if np.any(W != 0) and not np.any(D != 0) and family != "dense":
        return "all zeros for a non-zero weight"
    return None


def _run_case(request, family, data):
    recorder = Recorder(request, "fit inputs")
    W, valid, label = data.draw(weights(), label="weight")
    budget = data.draw(BUDGETS, label="budget")
    case = f"{family}: {label}, budget {budget!r}"
    shape = np.shape(W)
    if valid and _valid_budget(budget, shape):
        recorder.call(case, lambda: structmat.approximate(W, family, budget),
                      check=lambda M: _check_fit(M, W, budget, family))
    else:  # only a clear error is right
        recorder.call(case, lambda: structmat.approximate(W, family, budget),
                      check=lambda M: f"accepted an invalid weight or budget and returned {M!r}")


@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=FAST)
@given(data=st.data())
def test_bad_weights_and_budgets(request, family, data):
    _run_case(request, family, data)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=SLOW)
@given(data=st.data())
def test_bad_weights_and_budgets_long(request, family, data):
    _run_case(request, family, data)
