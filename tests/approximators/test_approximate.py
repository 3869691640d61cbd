"""Properties every approximator must have, for every registered family (hypothesis over shapes and budgets)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import structmat
from structmat.families import FAMILIES

FAMILY_NAMES = list(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=25)
@given(m=st.integers(1, 300), n=st.integers(1, 300), share=st.floats(0.01, 1.0), seed=st.integers(0, 2**16))
def test_budget_is_respected_and_products_match(family, m, n, share, seed):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((m, n))
    try:
        M = structmat.approximate(W, family, share)
    except ValueError as exc:
        assert "budget" in str(exc)  # below the family's smallest matrix: a clear error, never zeros
        return
    assert M.shape == (m, n)
    assert M.nparams <= np.floor(share * m * n)
    x = rng.standard_normal((n, 2))
    D = M.to_dense()
    np.testing.assert_allclose(M @ x, D @ x, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(D).max()) * n)


@pytest.mark.parametrize("family", FAMILY_NAMES)
@settings(max_examples=25)
@given(m=st.integers(1, 120), n=st.integers(1, 120), count=st.integers(1, 20000))
def test_int_budget_is_respected(family, m, n, count):
    W = np.random.default_rng(m * 1000 + n).standard_normal((m, n))
    try:
        M = structmat.approximate(W, family, count)
    except ValueError as exc:
        assert "budget" in str(exc)
        return
    assert M.nparams <= count


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize(
    "W, budget, error, match",
    [
        (np.array([[np.nan, 1.0], [1.0, 1.0]]), 1.0, ValueError, "finite"),
        (np.array([[np.inf, 1.0], [1.0, 1.0]]), 1.0, ValueError, "finite"),
        (np.zeros((0, 4)), 1.0, ValueError, "empty"),
        (np.ones(4), 1.0, ValueError, "2-D"),
        (np.ones((2, 2, 2)), 1.0, ValueError, "2-D"),
        (np.ones((3, 3), dtype=complex), 1.0, TypeError, "complex"),
        (np.ones((3, 3)), 0, ValueError, "budget"),
        (np.ones((3, 3)), -1.0, ValueError, "budget"),
        (np.ones((3, 3)), 1.5, ValueError, "budget"),
        (np.ones((3, 3)), True, TypeError, "budget"),
    ],
)
def test_bad_inputs_raise(family, W, budget, error, match):
    with pytest.raises(error, match=match):
        structmat.approximate(W, family, budget)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tiny_int_budget_is_an_error_or_fits(family):
    W = np.random.default_rng(0).standard_normal((64, 64))
    try:
        M = structmat.approximate(W, family, 2)
    except ValueError as exc:
        assert "budget" in str(exc) and "parameters" in str(exc)
    else:
        assert M.nparams <= 2 and np.any(M.to_dense() != 0)


def test_unknown_family_lists_names():
    with pytest.raises(ValueError, match=r"unknown family 'wavelet'; known families: \['block_sparse', 'dense'"):
        structmat.approximate(np.ones((3, 3)), "wavelet", 0.5)


def test_accepts_float32_and_torch():
    torch = pytest.importorskip("torch")
    W = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    M = structmat.approximate(W, "lowrank", 0.5)
    assert M.dtype == np.float64
    assert structmat.relative_error(W.double().numpy(), M) < 1
