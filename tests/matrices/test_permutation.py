import numpy as np
import pytest

from structmat.matrices.permutation import (
    check_permutation, count_indices, gather, inverse_permutation, permute, scatter, unpermute,
)


def test_check_permutation_accepts_and_freezes(rng):
    order = rng.permutation(7)
    out = check_permutation(order, 7)
    assert out.dtype == np.int64 and not out.flags.writeable
    np.testing.assert_array_equal(out, order)
    assert check_permutation(None, 7) is None


@pytest.mark.parametrize(
    "order, error, match",
    [
        (np.array([0, 1, 1]), ValueError, "index 2 is missing"),
        (np.array([0, 1, 3]), ValueError, "found index 3"),
        (np.array([0, -1, 2]), ValueError, "found index -1"),
        (np.array([0, 1]), ValueError, r"shape \(3,\)"),
        (np.array([0.0, 1.0, 2.0]), TypeError, "integer"),
    ],
)
def test_check_permutation_rejects(order, error, match):
    with pytest.raises(error, match=match):
        check_permutation(order, 3, "row_order")


def test_products_through_permutations(rng):
    """M = P_rᵀ S P_c: M @ x and M.T @ y from the core agree with the unpermuted dense matrix."""
    S = rng.standard_normal((6, 5))
    rows, cols = rng.permutation(6), rng.permutation(5)
    M = unpermute(S, rows, cols)
    np.testing.assert_array_equal(permute(M, rows, cols), S)
    np.testing.assert_array_equal(M[rows[2], cols[4]], S[2, 4])
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((6, 2))
    np.testing.assert_allclose(scatter(S @ gather(x, cols), rows), M @ x)
    np.testing.assert_allclose(scatter(S.T @ gather(y, rows), cols), M.T @ y)
    inv = inverse_permutation(rows)
    np.testing.assert_array_equal(inv[rows], np.arange(6))
    assert count_indices(rows, None, cols) == 11
    assert gather(x, None) is x and scatter(x, None) is x
