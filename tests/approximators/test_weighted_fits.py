"""Data-aware fits of Monarch, SSS and the hierarchical families: exact weighted steps that never increase the
output objective, and structure the plain fit cannot see."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import structmat
from structmat import InputStatistics, output_error
from structmat.approximators._hmatrix_weighted import refine_leaves
from structmat.approximators._monarch_weighted import _InputBlocks, _Padded, _whitened_lowrank_error2
from structmat.approximators._sss_weighted import refine_sss_on_outputs, whitened_realization
from structmat.approximators._weighted import WeightedProblem, cholesky_factor, lowrank_in_weighted_norm
from structmat.approximators.lowrank import fit_lowrank
from structmat.matrices.hmatrix import HODLRMatrix
from structmat.matrices.monarch import Monarch
from structmat.matrices.sss import SSS


def _objective(W, M, C):
    delta = W - (M if isinstance(M, np.ndarray) else M.to_dense())
    return float(np.einsum("ij,ij->", delta @ C, delta))


def _inputs(rng, n, rows=None):
    return rng.standard_normal((rows or 3 * n, n)) * np.geomspace(5.0, 0.05, n)


def test_weighted_lowrank_block_is_the_closed_form_optimum(rng):
    """min over rank-r X of tr((Y − X) C (Y − X)ᵀ) is [Y C T^{-⊤}]_r T⁻¹ (C = T Tᵀ): reduced-rank regression."""
    m, n, r = 9, 7, 2
    Y, X = rng.standard_normal((m, n)), _inputs(rng, n, 40)
    C = X.T @ X / 40
    T = cholesky_factor(C)
    G = np.linalg.solve(T, (Y @ C).T).T                       # (Y C) T^{-⊤}
    U, V, _ = lowrank_in_weighted_norm(G, T, r)
    _, R = np.linalg.qr(X)
    u, s, vt = np.linalg.svd(Y @ R.T)
    best = (u[:, :r] * s[:r]) @ vt[:r] @ np.linalg.inv(R.T)
    np.testing.assert_allclose(U @ V.T, best, atol=1e-9 * np.abs(best).max())


@pytest.mark.parametrize("m, n, r", [(9, 14, 3), (14, 9, 2), (10, 10, 9)])
def test_whitened_lowrank_bound_is_the_error_of_the_whitened_lowrank_fit(rng, m, n, r):
    """The data-aware Monarch fit skips the whitened low-rank candidate when this value shows it cannot win: it
    must be that candidate's error on the objective, not merely a bound."""
    W, X = rng.standard_normal((m, n)), _inputs(rng, n)
    stats = InputStatistics.from_rows(X)
    problem = WeightedProblem(W, stats)
    expected = problem.error2(fit_lowrank(W, r * (m + n), inputs=stats))
    assert _whitened_lowrank_error2(problem, r) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("K, J, t", [(2, 1, 2), (3, 2, 1), (4, 3, 2)])
def test_monarch_alternating_steps_never_increase_the_output_error(rng, K, J, t):
    m, n = 12, 14                                              # (4, 3) and (3, 2) pad the input side
    W, X = rng.standard_normal((m, n)), _inputs(rng, n)
    problem = WeightedProblem(W, InputStatistics.from_rows(X))
    P = _Padded(problem, W @ problem.C, _InputBlocks(problem, K), J)
    R, _ = P.start(t)
    L, captured, SC = P.l_step(R, t)
    energy = _objective(W, np.zeros_like(W), problem.C)       # tr(W C Wᵀ) of the steps' C
    history = [energy - captured]
    assert _objective(W, Monarch(R, L, shape=(m, n)), problem.C) == pytest.approx(history[0], rel=1e-9, abs=1e-12)
    for _ in range(5):
        P.r_step(R, L, SC, t)
        L, captured, SC = P.l_step(R, t)
        history.append(energy - captured)
    assert all(b <= a * (1 + 1e-10) + 1e-12 for a, b in zip(history, history[1:]))
    M = Monarch(R, L, shape=(m, n))                            # the padding holds exact zeros
    assert _objective(W, M, problem.C) == pytest.approx(history[-1], rel=1e-9, abs=1e-12)


def test_monarch_sees_structure_on_the_inputs_that_matter(rng):
    """The inputs live on the first three of four feature blocks, where the weight is a Monarch matrix (four input
    blocks, one output group, rank 2: rank 6 there, more than low rank affords at this count); the last block is
    noise the layer never sees. The data-aware fit reproduces the outputs; the plain fit spends its parameters on
    the noise."""
    m, n = 24, 32
    W = Monarch.random((m, n), in_blocks=4, out_blocks=1, rank=2, seed=1).to_dense()
    W[:, 24:] = 3 * rng.standard_normal((m, 8))
    X = np.concatenate([rng.standard_normal((200, 24)), np.zeros((200, 8))], axis=1)
    budget = 2 * (n + 4 * m)
    aware = structmat.approximate(W, "monarch", budget, inputs=X)
    assert aware.nparams <= budget
    assert output_error(W, aware, X) < 1e-5
    assert output_error(W, structmat.approximate(W, "monarch", budget), X) > 0.1
    assert output_error(W, structmat.approximate(W, "lowrank", budget, inputs=X), X) > 0.1


@pytest.mark.parametrize("depth", [1, 2])
def test_hierarchical_leaf_sweeps_never_increase_the_output_error(rng, depth):
    m, n = 20, 16
    W, X = rng.standard_normal((m, n)), _inputs(rng, n)
    C = X.T @ X / len(X) + 1e-8 * np.eye(n)
    H = HODLRMatrix.random((m, n), rank=2, depth=depth, seed=3)
    errors = [_objective(W, H, C)]
    for _ in range(4):
        H = refine_leaves(H, W, C, sweeps=1)
        errors.append(_objective(W, H, C))
    assert all(b <= a * (1 + 1e-10) for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.9 * errors[0]


def test_sss_generator_sweeps_never_increase_the_output_error(rng):
    m, n = 26, 22
    W, X = rng.standard_normal((m, n)), _inputs(rng, n)
    C = X.T @ X / len(X) + 1e-8 * np.eye(n)
    S = SSS.random((m, n), num_stages=4, state_dim=2, seed=2)
    errors, count = [_objective(W, S, C)], S.nparams
    start = whitened_realization(S, W, C)
    assert start.nparams == count and _objective(W, start, C) < errors[0]
    for _ in range(4):
        S = refine_sss_on_outputs(S, W, C, iterations=1)
        assert S.nparams == count
        errors.append(_objective(W, S, C))
    assert all(b <= a * (1 + 1e-10) for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 0.9 * errors[0]


@pytest.mark.parametrize("family", ["monarch", "sss", "hodlr", "hedlr", "hmatrix"])
@settings(max_examples=4)
@given(seed=st.integers(0, 2**16), share=st.sampled_from([0.2, 0.4, 0.7]), rows=st.sampled_from([5, 60]))
def test_rank_deficient_inputs_work_and_are_never_worse(family, seed, share, rows):
    """Fewer rows than features (a singular C) and a dead feature: no error, nothing non-finite, never worse than
    the plain fit or low rank on these rows, up to the regularisation (the fits minimise the objective with
    ``C + λI``, ``λ = 1e-6 tr(C)/n``, which separates near-exact fits by about 1e-6)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((18, 15))
    X = rng.standard_normal((rows, 15))
    X[:, 3] = 0.0
    M = structmat.approximate(W, family, share, inputs=X)
    assert np.isfinite(M.to_dense()).all() and M.nparams <= int(share * W.size)
    for other in (structmat.approximate(W, family, share), structmat.approximate(W, "lowrank", share, inputs=X)):
        assert output_error(W, M, X) <= output_error(W, other, X) * (1 + 1e-6) + 1e-5


@pytest.mark.parametrize("family, option", [("monarch", "iterations"), ("sss", "weighted_iterations"),
                                            ("hodlr", "sweeps")])
@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_iteration_counts_are_refused(rng, family, option, value, error):
    W, X = rng.standard_normal((8, 6)), rng.standard_normal((20, 6))
    with pytest.raises(error, match=f"{option} must be an int >= 0"):
        structmat.approximate(W, family, 0.5, inputs=X, **{option: value})
