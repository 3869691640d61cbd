import numpy as np
import pytest

from structmat import LowRank, fit_lowrank, relative_error
from structmat.approximators.lowrank import max_rank_for_budget, truncated_svd


def test_eckart_young_optimum(rng):
    W = rng.standard_normal((60, 45))
    s = np.linalg.svd(W, compute_uv=False)
    for rank in (1, 5, 20, 45):
        M = fit_lowrank(W, rank * (60 + 45), method="svd")
        assert M.rank == rank
        optimum = np.sqrt(np.sum(s[rank:] ** 2)) / np.linalg.norm(W)
        assert relative_error(W, M) == pytest.approx(optimum, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("shape", [(50, 50), (80, 30), (30, 80)])
def test_rank_r_matrix_is_recovered(shape, rng):
    m, n = shape
    W = rng.standard_normal((m, 4)) @ rng.standard_normal((4, n))
    M = fit_lowrank(W, 4 * (m + n))
    assert M.rank == 4
    assert relative_error(W, M) < 1e-12


def test_budget_maps_to_largest_fitting_rank(rng):
    W = rng.standard_normal((30, 20))
    assert fit_lowrank(W, 99).rank == 1          # 2 * 50 = 100 > 99
    assert fit_lowrank(W, 100).rank == 2
    assert fit_lowrank(W, 1.0).rank == 12        # 600 // 50 = 12 < min(m, n) = 20
    assert max_rank_for_budget((30, 20), 10**9) == 20


def test_too_small_budget_names_the_minimum(rng):
    with pytest.raises(ValueError, match=r"smallest low-rank matrix for shape \(30, 20\): 50 parameters"):
        fit_lowrank(rng.standard_normal((30, 20)), 49)


def test_factors_are_balanced(rng):
    W = rng.standard_normal((25, 15))
    M = fit_lowrank(W, 0.9)
    np.testing.assert_allclose(np.linalg.norm(M.U, axis=0), np.linalg.norm(M.V, axis=0), rtol=1e-10)


def test_randomized_is_close_and_seeded(rng):
    # a decaying spectrum, like trained weights
    U, _ = np.linalg.qr(rng.standard_normal((1200, 300)))
    V, _ = np.linalg.qr(rng.standard_normal((1100, 300)))
    W = (U * np.arange(1, 301) ** -0.8) @ V.T
    budget = 40 * (1200 + 1100)
    exact = relative_error(W, fit_lowrank(W, budget, method="svd"))
    a = fit_lowrank(W, budget, method="randomized", seed=3)
    b = fit_lowrank(W, budget, method="randomized", seed=3)
    np.testing.assert_array_equal(a.U, b.U)
    assert relative_error(W, a) <= 1.01 * exact


def test_auto_method_choice(rng, monkeypatch):
    calls = []
    import structmat.approximators.lowrank as module

    real = module.randomized_svd

    def spy(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "randomized_svd", spy)
    truncated_svd(rng.standard_normal((100, 80)), 5)
    assert calls == []
    truncated_svd(rng.standard_normal((1100, 1030)), 10)
    assert calls == [10]


def test_bad_method(rng):
    with pytest.raises(ValueError, match="method must be one of"):
        fit_lowrank(rng.standard_normal((5, 5)), 1.0, method="qr")


def test_float32_input_is_fitted_in_float64(rng):
    W = rng.standard_normal((20, 10)).astype(np.float32)
    M = fit_lowrank(W, 1.0)
    assert M.dtype == np.float64 and isinstance(M, LowRank)
