"""Weighted outputs: fit diag(d) W and scale the rows back; the Fisher weights of a classifier's logits."""

import numpy as np
import pytest

import structmat
from structmat.approximators.data_aware import fisher_output_weights
from structmat.families import FAMILIES

ROW_SCALED = sorted(f for f, e in FAMILIES.items() if e.matrix_class.supports_row_scaling())


def _weighted_output_error2(W, M, X, d):
    R = (W - M.to_dense()) @ X.T
    return float(np.sum((d[:, None] * R) ** 2))


def test_the_row_scaled_families_are_the_ones_documented():
    assert ROW_SCALED == ["dense", "lowrank", "monarch", "sparse", "sparse_product"]


@pytest.mark.parametrize("family", ROW_SCALED)
def test_scale_rows_is_diag_times_the_matrix(rng, family):
    M = structmat.approximate(rng.standard_normal((14, 11)), family, 1.0 if family == "dense" else 0.5)
    d = rng.uniform(0.5, 2.0, 14)
    scaled = M.scale_rows(d)
    assert type(scaled) is type(M) and scaled.nparams == M.nparams
    np.testing.assert_allclose(scaled.to_dense(), d[:, None] * M.to_dense(), rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        M.scale_rows(d[:5])


def test_families_that_lose_their_structure_refuse_row_scaling(rng):
    M = structmat.approximate(rng.standard_normal((16, 16)), "toeplitz_like", 0.5)
    with pytest.raises(NotImplementedError, match="row scaling"):
        M.scale_rows(np.ones(16))
    with pytest.raises(ValueError, match=r"one of \['dense', 'lowrank', 'monarch', 'sparse', 'sparse_product'\]"):
        structmat.approximate(rng.standard_normal((16, 16)), "toeplitz_like", 0.5, output_weights=np.ones(16))


def test_lowrank_with_output_weights_is_the_weighted_optimum(rng):
    """min over rank r of ‖D (W − M) Xᵀ‖: the SVD of D W R (X = Q R), then D⁻¹ and R⁻ᵀ; brute-force reference."""
    W, X = rng.standard_normal((12, 9)), rng.standard_normal((50, 9)) * np.geomspace(1, 20, 9)
    d = rng.uniform(0.2, 3.0, 12)
    M = structmat.approximate(W, "lowrank", 2 * 21, inputs=X, output_weights=d, ridge=0.0)
    _, R = np.linalg.qr(X)
    U, s, Vt = np.linalg.svd(d[:, None] * W @ R.T)
    best = ((U[:, :2] * s[:2]) @ Vt[:2] @ np.linalg.inv(R.T)) / d[:, None]
    np.testing.assert_allclose(M.to_dense(), best, rtol=1e-7, atol=1e-9 * np.abs(best).max())


@pytest.mark.parametrize("family", ["sparse", "sparse_product", "lowrank", "monarch"])
def test_weighted_fit_is_never_worse_than_the_unweighted_one_in_the_weighted_error(rng, family):
    W = rng.standard_normal((20, 16))
    X = rng.standard_normal((60, 16)) @ rng.standard_normal((16, 16))
    d = np.where(np.arange(20) < 4, 5.0, 0.2)           # four outputs that matter
    weighted = structmat.approximate(W, family, 0.3, inputs=X, output_weights=d)
    plain = structmat.approximate(W, family, 0.3, inputs=X)
    assert weighted.nparams <= int(0.3 * W.size)
    assert _weighted_output_error2(W, weighted, X, d) <= _weighted_output_error2(W, plain, X, d) * (1 + 1e-6)
    # and the outputs that matter are fitted better
    top = slice(0, 4)
    err = lambda M: np.linalg.norm((W - M.to_dense())[top] @ X.T)   # noqa: E731
    assert err(weighted) < err(plain)


@pytest.mark.parametrize("bad, error, match", [
    (np.ones(3), ValueError, r"shape \(6,\)"),
    (np.r_[np.ones(5), 0.0], ValueError, "> 0"),
    (np.r_[np.ones(5), np.nan], ValueError, "finite"),
    (np.array(["a"] * 6), TypeError, "real numbers"),
])
def test_bad_output_weights_get_one_clear_error(rng, bad, error, match):
    with pytest.raises(error, match=match):
        structmat.approximate(rng.standard_normal((6, 5)), "sparse", 0.5, output_weights=bad)


def test_fisher_weights_follow_the_classes_near_the_top(rng):
    logits = rng.standard_normal((200, 10))
    logits[:, 3] += 20.0                     # class 3 always wins: alone, p_3 near 1 and no Fisher information
    logits[:100, 7] += 20.0                  # class 7 ties with it on half the rows: information for both
    d = fisher_output_weights(logits)
    assert d.shape == (10,) and set(np.argsort(d)[-2:]) == {3, 7}
    others = np.delete(d, [3, 7])
    assert np.all(others < 0.5 * d[7]) and np.all(others >= np.sqrt(0.1))
    assert np.array_equal(fisher_output_weights(logits), d)
    with pytest.raises(ValueError, match=r"shape \(N, m\)"):
        fisher_output_weights(np.ones(5))
