import numpy as np
import pytest

from structmat.approximators.ordering import ORDERINGS, order_rows_and_columns


def _planted(rng, blocks=6, rows=20, cols=25, noise=0.05):
    """A block-diagonal co-cluster matrix with scrambled rows and columns."""
    B = np.kron(np.eye(blocks), np.ones((rows, cols))) + noise * rng.standard_normal((blocks * rows, blocks * cols))
    return B[rng.permutation(B.shape[0])][:, rng.permutation(B.shape[1])]


@pytest.mark.parametrize("method", ORDERINGS)
def test_orders_are_permutations_and_deterministic(method, rng):
    W = rng.standard_normal((70, 45))
    rows, cols = order_rows_and_columns(W, method, min_size=8, seed=3)
    if method == "none":
        assert rows is None and cols is None
        return
    assert sorted(rows) == list(range(70)) and sorted(cols) == list(range(45))
    again = order_rows_and_columns(W, method, min_size=8, seed=3)
    np.testing.assert_array_equal(again[0], rows)
    np.testing.assert_array_equal(again[1], cols)


@pytest.mark.parametrize("method, share", [("spectral", 0.9), ("bisection", 0.6)])
def test_joint_orderings_recover_planted_co_clusters(method, share, rng):
    """Energy moves into the diagonal band (bisection splits clusters at medians, so it keeps less)."""
    W = _planted(rng)
    rows, cols = order_rows_and_columns(W, method, min_size=10, seed=0)
    P = W[rows][:, cols]
    i, j = np.indices(P.shape)
    band = np.abs(i / P.shape[0] - j / P.shape[1]) <= 1 / 6  # a band as wide as one co-cluster
    assert (P[band] ** 2).sum() / (P ** 2).sum() > share
    scrambled = (W[band] ** 2).sum() / (W ** 2).sum()
    assert scrambled < 0.5


@pytest.mark.parametrize("method", ["principal", "kmeans"])
def test_side_orderings_group_similar_rows(method, rng):
    W = _planted(rng)
    rows, _ = order_rows_and_columns(W, method, min_size=10, seed=0)
    P = W[rows]
    # adjacent rows come from the same cluster: their correlation is high
    corr = np.mean([np.corrcoef(P[i], P[i + 1])[0, 1] for i in range(P.shape[0] - 1)])
    assert corr > 0.8


def test_tiny_and_degenerate_inputs():
    for shape in [(1, 5), (5, 1), (2, 2)]:
        for method in ORDERINGS[1:]:
            rows, cols = order_rows_and_columns(np.ones(shape), method, min_size=1)
            assert sorted(rows) == list(range(shape[0])) and sorted(cols) == list(range(shape[1]))
    rows, cols = order_rows_and_columns(np.zeros((30, 20)), "spectral")
    assert sorted(rows) == list(range(30))


def test_bad_method_raises():
    with pytest.raises(ValueError, match=r"ordering method must be one of .*'spectral'.*; got 'fiedler'"):
        order_rows_and_columns(np.ones((4, 4)), "fiedler")
    with pytest.raises(ValueError, match="min_size"):
        order_rows_and_columns(np.ones((4, 4)), "bisection", min_size=0)
