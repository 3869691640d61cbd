import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from structmat._validation import check_positive_int, check_weight, resolve_budget


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.array([[np.nan, 1.0]]), ValueError, "finite; found 1 NaN or Inf"),
        (np.array([[np.inf, 1.0], [0.0, 1.0]]), ValueError, "finite"),
        (np.zeros((0, 3)), ValueError, r"must not be empty; got shape \(0, 3\)"),
        (np.zeros((3, 0)), ValueError, "must not be empty"),
        (np.zeros(5), ValueError, r"2-D array .* got shape \(5,\)"),
        (np.zeros((2, 3, 4)), ValueError, r"got shape \(2, 3, 4\)"),
        (np.zeros((2, 2), dtype=complex), TypeError, "complex"),
        (np.zeros((2, 2), dtype=bool), TypeError, "dtype bool"),
        (np.array([["a", "b"]]), TypeError, "real floats or integers"),
    ],
)
def test_check_weight_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        check_weight(bad)


def test_check_weight_converts_to_float64_copy():
    W32 = np.ones((3, 4), dtype=np.float32)
    out = check_weight(W32)
    assert out.dtype == np.float64 and out.flags.c_contiguous
    out[0, 0] = 5
    assert W32[0, 0] == 1
    assert check_weight(np.arange(6).reshape(2, 3)).dtype == np.float64


def test_check_weight_accepts_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, 2, requires_grad=True)
    assert check_weight(t).shape == (3, 2)


@pytest.mark.parametrize(
    "budget, expected", [(1, 1), (7, 7), (np.int64(9), 9), (1.0, 200), (0.5, 100), (0.999, 199), (0.0051, 1)]
)
def test_resolve_budget_values(budget, expected):
    assert resolve_budget(budget, (10, 20)) == expected


@pytest.mark.parametrize(
    "budget, error, match",
    [
        (0, ValueError, "int >= 1 or a float in \\(0, 1\\]; got 0"),
        (-3, ValueError, "got -3"),
        (0.0, ValueError, "got 0.0"),
        (-0.5, ValueError, "got -0.5"),
        (1.5, ValueError, "got 1.5"),
        (float("nan"), ValueError, "got nan"),
        (0.001, ValueError, "rounds down to 0"),
        (True, TypeError, "bool"),
        ("0.5", TypeError, "got str"),
        (None, TypeError, "got NoneType"),
    ],
)
def test_resolve_budget_rejects(budget, error, match):
    with pytest.raises(error, match=match):
        resolve_budget(budget, (10, 20))


@given(st.integers(1, 300), st.integers(1, 300), st.floats(1e-6, 1.0))
def test_resolve_budget_share_is_floored_upper_bound(m, n, share):
    if np.floor(share * m * n) < 1:
        with pytest.raises(ValueError):
            resolve_budget(share, (m, n))
        return
    count = resolve_budget(share, (m, n))
    assert 1 <= count <= share * m * n < count + 1


def test_check_positive_int():
    assert check_positive_int(3, "rank") == 3
    with pytest.raises(TypeError, match="rank must be an int"):
        check_positive_int(2.0, "rank")
    with pytest.raises(ValueError, match="rank must be an int >= 1; got 0"):
        check_positive_int(0, "rank")
