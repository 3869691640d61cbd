"""Data-aware fitting: the whitened low-rank optimum, output errors, and never worse than the plain fit."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import structmat
from structmat import InputStatistics, output_error
from structmat.approximators.lowrank import fit_lowrank


def _reduced_rank_regression(W, X, rank):
    """min over rank-r M of ‖(W − M) Xᵀ‖_F through a QR of X (independent of the eigen-based fit)."""
    _, R = np.linalg.qr(X)                 # X = Q R, so ‖(W − M) Xᵀ‖ = ‖(W − M) Rᵀ‖
    U, s, Vt = np.linalg.svd(W @ R.T)
    return (U[:, :rank] * s[:rank]) @ Vt[:rank] @ np.linalg.inv(R.T)


@pytest.mark.parametrize("shape, rows, rank", [((12, 9), 40, 2), ((7, 15), 60, 3), ((20, 20), 25, 5)])
def test_lowrank_with_inputs_is_the_closed_form_optimum(rng, shape, rows, rank):
    W = rng.standard_normal(shape)
    X = rng.standard_normal((rows, shape[1])) @ np.diag(np.geomspace(1, 100, shape[1]))
    M = fit_lowrank(W, rank * sum(shape), inputs=X, ridge=0.0)
    best = _reduced_rank_regression(W, X, rank)
    assert M.rank == rank
    np.testing.assert_allclose(M.to_dense(), best, rtol=1e-7, atol=1e-9 * np.abs(best).max())


def test_lowrank_with_inputs_beats_alternating_least_squares(rng):
    """Brute force: the best of several random-start alternating least-squares runs is no better."""
    W, X = rng.standard_normal((10, 8)), rng.standard_normal((30, 8)) * np.geomspace(1, 30, 8)
    rank = 2
    M = fit_lowrank(W, rank * 18, inputs=X, ridge=0.0)
    best = np.inf
    for seed in range(5):
        B = np.random.default_rng(seed).standard_normal((8, rank))
        for _ in range(300):
            A = np.linalg.lstsq(X @ B, X @ W.T, rcond=None)[0].T            # min_A ‖X Wᵀ − X B Aᵀ‖
            B = np.linalg.lstsq(np.kron(A, X), (X @ W.T).T.ravel(), rcond=None)[0].reshape(rank, 8).T
        best = min(best, output_error(W, A @ B.T, X))
    assert output_error(W, M, X) <= best * (1 + 1e-8)


def test_output_error_from_rows_equals_from_statistics(rng):
    W, X = rng.standard_normal((9, 6)), rng.standard_normal((200, 6))
    M = structmat.approximate(W, "lowrank", 0.5)
    rows = output_error(W, M, X)
    stats = output_error(W, M, InputStatistics.from_rows(X))
    direct = np.linalg.norm((W - M.to_dense()) @ X.T) / np.linalg.norm(W @ X.T)
    assert rows == pytest.approx(direct, rel=1e-12) and stats == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("magnitude", [1e-300, 1e300])
def test_output_error_is_scale_free(rng, magnitude):
    W, X = rng.standard_normal((5, 4)), rng.standard_normal((30, 4))
    M = structmat.approximate(W, "lowrank", 0.5)
    reference = output_error(W, M, X)
    assert output_error(W, M, X * magnitude) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("bad, error, match", [
    (np.ones((10, 5)), ValueError, r"shape \(N, 6\)"),
    (np.ones(6), ValueError, r"shape \(N, 6\)"),
    (np.empty((0, 6)), ValueError, "at least one row"),
    (np.full((3, 6), np.inf), ValueError, "finite"),
    (np.ones((3, 6), dtype=np.complex128), TypeError, "complex"),
    (np.array([["a"] * 6]), TypeError, "real floats or integers"),
])
def test_bad_inputs_get_one_clear_error(rng, bad, error, match):
    W = rng.standard_normal((4, 6))
    with pytest.raises(error, match=match):
        structmat.approximate(W, "lowrank", 0.5, inputs=bad)


def test_statistics_of_the_wrong_width_are_refused(rng):
    with pytest.raises(ValueError, match="statistics of 5 features"):
        structmat.approximate(rng.standard_normal((4, 6)), "sss", 0.5,
                              inputs=InputStatistics.from_rows(np.ones((3, 5))))


@pytest.mark.parametrize("family", [f for f in structmat.FAMILIES if f != "dense"])
@settings(max_examples=3)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([0.3, 0.5, 0.8]))
def test_data_aware_fit_is_never_worse_on_the_fitting_rows(family, seed, share):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((16, 12))
    X = rng.standard_normal((40, 12)) * np.geomspace(0.1, 10, 12)
    try:
        plain = structmat.approximate(W, family, share)
    except ValueError as exc:  # below the family's smallest member: the data-aware fit says the same
        with pytest.raises(ValueError, match="below the smallest"):
            structmat.approximate(W, family, share, inputs=X)
        assert "below the smallest" in str(exc)
        return
    aware = structmat.approximate(W, family, share, inputs=X)
    assert aware.nparams <= int(share * W.size)
    assert output_error(W, aware, X) <= output_error(W, plain, X) * (1 + 1e-6) + 1e-12
