"""fit_sss: exact recovery, the sweep's error identity and bounds, budgets, allocation, orderings, refinement."""

import numpy as np
import pytest

from structmat import relative_error
from structmat.approximators._sss_identify import causal_sweep, greedy_dims, max_uniform_dim, uniform_dims
from structmat.approximators.sss import fit_sss, fit_sss_detailed, stage_grid
from structmat.matrices.sss import SSS, sss_nparams, stage_sizes


def test_recovers_16_stages_of_32x32_blocks_with_state_dim_8():
    """The issue's example: 512x512, 16 stages, state dim 8 both ways, budget = the realization's nparams."""
    M = SSS.random((512, 512), num_stages=16, state_dim=8, seed=0)
    W = M.to_dense()
    F, report = fit_sss_detailed(W, M.nparams)
    assert F.nparams <= M.nparams
    assert relative_error(W, F) < 1e-10
    assert report.num_stages == 16 and F.causal_dims.max() == 8


@pytest.mark.parametrize("shape", [(300, 200), (150, 420)])
def test_recovers_rectangular_proportional_stages(shape):
    M = SSS.random(shape, num_stages=12, state_dim=5, seed=1)
    W = M.to_dense()
    F = fit_sss(W, M.nparams)
    assert F.nparams <= M.nparams and relative_error(W, F) < 1e-10


def test_recovers_unequal_stages_when_given():
    m_sizes, n_sizes = [40, 5, 70, 0, 25, 60], [10, 50, 30, 20, 0, 90]
    M = SSS.random((200, 200), m_sizes=m_sizes, n_sizes=n_sizes, state_dim=6, seed=2)
    W = M.to_dense()
    F = fit_sss(W, M.nparams, stage_sizes=(m_sizes, n_sizes))
    assert F.nparams <= M.nparams and relative_error(W, F) < 1e-10
    assert F.m_sizes.tolist() == m_sizes and F.n_sizes.tolist() == n_sizes


def test_minimal_dims_are_the_hankel_ranks():
    """With room to spare the exact sweep keeps rank(H) states, not the requested (larger) number."""
    M = SSS.random((120, 90), num_stages=6, state_dim=3, seed=3)
    W = M.to_dense()
    ms, ns = M.m_sizes, M.n_sizes
    part = causal_sweep(W, ms, ns, np.full(7, 50))
    r, c = np.concatenate([[0], np.cumsum(ms)]), np.concatenate([[0], np.cumsum(ns)])
    ranks = [0] + [np.linalg.matrix_rank(W[r[b]:, : c[b]]) for b in range(1, 6)] + [0]
    assert part.dims.tolist() == ranks


def test_sweep_error_identity_and_bounds(rng):
    """‖L − L̂‖² equals the sum of the truncated s(M_k)², lies below Σ τ_k² and above max τ_k² (note §1.5)."""
    W = rng.standard_normal((90, 70)) @ np.diag(np.linspace(1, 0.1, 70))
    ms, ns = stage_sizes(90, 6), stage_sizes(70, 6)
    dims = np.array([0, 4, 6, 6, 6, 4, 0])
    for exact in (True, False):
        part = causal_sweep(W, ms, ns, dims, exact=exact)
        r, c = np.concatenate([[0], np.cumsum(ms)]), np.concatenate([[0], np.cumsum(ns)])
        L_hat = SSS(part.A, part.B, part.C, [np.zeros((a, b)) for a, b in zip(ms, ns)],
                    [np.zeros((0, 0))] * 6, [np.zeros((0, k)) for k in ns], [np.zeros((k, 0)) for k in ms]).to_dense()
        L = np.zeros_like(W)  # the strictly block-lower part of W
        for i in range(1, 6):
            L[r[i]:r[i + 1], : c[i]] = W[r[i]:r[i + 1], : c[i]]
        error2 = np.sum((L - L_hat) ** 2)
        assert error2 == pytest.approx(part.error2, rel=1e-8)
        tau2 = [np.sum(np.linalg.svd(W[r[b]:, : c[b]], compute_uv=False)[dims[b]:] ** 2) for b in range(1, 6)]
        assert max(tau2) * (1 - 1e-9) <= error2 <= sum(tau2) * (1 + 1e-9)


def test_report_errors_are_the_true_errors(rng):
    W = rng.standard_normal((80, 100))
    M, report = fit_sss_detailed(W, 0.3, refine_iterations=0)
    assert report.refined_error == report.sweep_error
    assert relative_error(W, M) == pytest.approx(report.sweep_error, rel=1e-9)
    R, refined = fit_sss_detailed(W, 0.3, refine_iterations=3)
    assert refined.sweep_error == pytest.approx(report.sweep_error, rel=1e-9)
    assert refined.refined_error <= refined.sweep_error
    assert relative_error(W, R) == pytest.approx(refined.refined_error, rel=1e-7)
    assert R.nparams == M.nparams


def test_refinement_lowers_the_error_on_a_generic_matrix(rng):
    W = rng.standard_normal((120, 100))
    _, report = fit_sss_detailed(W, 0.4, num_stages=6, ordering="none", refine_iterations=4)
    assert report.refined and report.refined_error < report.sweep_error


@pytest.mark.parametrize("budget", [0.05, 0.1, 0.25, 0.5, 0.9, 1.0, 700, 3001])
def test_budget_is_respected(budget, rng):
    W = rng.standard_normal((60, 90))
    M, report = fit_sss_detailed(W, budget)
    limit = budget if isinstance(budget, int) else int(np.floor(budget * W.size))
    assert M.nparams <= limit and report.budget == limit
    assert M.nparams == sss_nparams(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims)
    if budget == 1.0:
        assert relative_error(W, M) == 0.0 and M.num_stages == 1


def test_uniform_dim_is_the_largest_that_fits():
    ms, ns = stage_sizes(768, 24), stage_sizes(3072, 24)
    budget = int(0.2 * 768 * 3072)
    d = max_uniform_dim(ms, ns, budget)
    assert d == 41  # the closed form gives 40; 41 still fits (note §1.6)
    assert sss_nparams(ms, ns, *uniform_dims(ms, ns, d)) <= budget < sss_nparams(ms, ns, *uniform_dims(ms, ns, d + 1))


def test_greedy_allocation_fits_and_favours_heavy_boundaries(rng):
    """A matrix whose lower-left quarter is rank 12 and everything else small: the greedy puts states there."""
    W = 0.01 * rng.standard_normal((160, 160))
    W[80:, :80] += rng.standard_normal((80, 12)) @ rng.standard_normal((12, 80))
    ms = ns = stage_sizes(160, 8)
    budget = int(np.sum(ms * ns)) + 3000
    d0 = max_uniform_dim(ms, ns, budget)
    base_c = causal_sweep(W, ms, ns, uniform_dims(ms, ns, d0)[0], keep_spectra=True)
    base_a = causal_sweep(np.ascontiguousarray(W.T), ns, ms, uniform_dims(ms, ns, d0)[1], keep_spectra=True)
    d, e = greedy_dims(ms, ns, base_c.spectra, base_a.spectra, budget)
    assert sss_nparams(ms, ns, d, e) <= budget
    assert d[4] >= 12 and d.sum() > e.sum()
    _, report = fit_sss_detailed(W, budget, num_stages=8, ordering="none", refine_iterations=0)
    assert report.allocation == "greedy"


def test_orderings_store_a_permutation_and_help_a_scrambled_structure(rng):
    """A scrambled block-diagonal-plus-noise matrix: reordering recovers it, the stored permutation is applied."""
    B = np.kron(np.eye(4), rng.standard_normal((30, 30))) + 0.01 * rng.standard_normal((120, 120))
    W = B[rng.permutation(120)][:, rng.permutation(120)]
    plain = relative_error(W, fit_sss(W, 0.3, ordering="none"))
    M, report = fit_sss_detailed(W, 0.3)
    assert report.ordering != "none" and M.row_order is not None
    assert relative_error(W, M) < 0.5 * plain
    x = rng.standard_normal(120)
    np.testing.assert_allclose(M @ x, M.to_dense() @ x, atol=1e-10)


def test_too_small_budget_names_the_smallest(rng):
    W = rng.standard_normal((64, 64))
    with pytest.raises(ValueError, match=r"below the smallest SSS matrix for shape \(64, 64\): 64 parameters "
                                         r"\(num_stages=64, state dims 0\)"):
        fit_sss(W, 63)
    assert fit_sss(W, 64).nparams == 64
    with pytest.raises(ValueError, match=r"with the given stages: 2048 parameters"):
        fit_sss(W, 1000, num_stages=2)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"allocation": "best"}, ValueError, "allocation must be one of"),
        ({"ordering": "random"}, ValueError, "ordering must be 'auto' or one of"),
        ({"boundaries": "dp"}, ValueError, "boundaries must be one of"),
        ({"refine_iterations": -1}, ValueError, "refine_iterations must be an int >= 0"),
        ({"num_stages": 0}, ValueError, "num_stages must be an int >= 1"),
        ({"num_stages": 99}, ValueError, r"num_stages must be <= max\(m, n\) = 30"),
        ({"stage_sizes": ([10, 10], [5, 10])}, ValueError, "sum to W's shape"),
        ({"stage_sizes": ([20], [10, 10])}, ValueError, "equal length"),
    ],
)
def test_bad_options_raise(options, error, match, rng):
    with pytest.raises(error, match=match):
        fit_sss(rng.standard_normal((20, 30)), 0.5, **options)


def test_stage_grid():
    assert stage_grid(40) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40]
    assert stage_grid(1) == [1]


def test_deterministic(rng):
    W = rng.standard_normal((70, 50))
    a, b = fit_sss(W, 0.3, seed=1), fit_sss(W, 0.3, seed=1)
    np.testing.assert_array_equal(a.to_dense(), b.to_dense())


def test_boundary_refinement_finds_planted_unequal_stages():
    """Unequal planted stages: proportional cuts miss them, the cut search recovers most of the error."""
    m_sizes, n_sizes = [24, 3, 42, 0, 15, 36], [6, 30, 18, 12, 0, 54]
    M = SSS.random((120, 120), m_sizes=m_sizes, n_sizes=n_sizes, state_dim=4, seed=2)
    W = M.to_dense()
    errors = {}
    for boundaries in ("uniform", "search", "refine"):
        F, report = fit_sss_detailed(W, M.nparams, boundaries=boundaries, ordering="none", refine_iterations=0)
        assert F.nparams <= M.nparams
        errors[boundaries] = relative_error(W, F)
        if boundaries == "refine":
            assert report.boundaries == "refined"
    assert errors["search"] <= errors["uniform"] and errors["refine"] < 0.2 * errors["uniform"]
