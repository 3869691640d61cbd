"""Monarch projection (Dao et al. 2022): exact on Monarch inputs, optimal per block, and the budget search."""

import math

import numpy as np
import pytest

import structmat
from structmat.approximators.monarch import block_candidates, fit_monarch, monarch_projection
from structmat.matrices.monarch import Monarch


@pytest.mark.parametrize("shape, K, J, t", [((16, 16), 4, 4, 1), ((20, 36), 6, 4, 2), ((10, 13), 4, 3, 1)])
def test_monarch_matrix_is_recovered_exactly_by_its_projection(shape, K, J, t):
    M = Monarch.random(shape, in_blocks=K, out_blocks=J, rank=t, seed=0)
    P = monarch_projection(M.to_dense(), K, J, t)
    assert P.nparams == M.nparams
    assert structmat.relative_error(M.to_dense(), P) < 1e-12


def test_projection_error_is_the_discarded_singular_values(rng):
    W = rng.standard_normal((24, 30))
    K, J, t = 5, 4, 2
    P = monarch_projection(W, K, J, t)
    blocks = W.reshape(6, J, K, 6).transpose(1, 2, 0, 3)
    tail = sum(np.sum(np.linalg.svd(blocks[j, k], compute_uv=False)[t:] ** 2) for j in range(J) for k in range(K))
    assert np.linalg.norm(W - P.to_dense()) == pytest.approx(math.sqrt(tail), rel=1e-10)
    # optimal: random perturbations of the factors never help
    for seed in range(5):
        noise = np.random.default_rng(seed)
        Q = Monarch(P.R + 1e-3 * noise.standard_normal(P.R.shape), P.L + 1e-3 * noise.standard_normal(P.L.shape))
        assert np.linalg.norm(W - Q.to_dense()) > np.linalg.norm(W - P.to_dense())


def test_search_respects_budget_and_options(rng):
    W = rng.standard_normal((40, 48))
    M = fit_monarch(W, 0.3)
    assert M.nparams <= int(0.3 * W.size)
    assert structmat.relative_error(W, M) <= structmat.relative_error(W, structmat.approximate(W, "lowrank", 0.3)) + 1e-12
    fixed = fit_monarch(W, 0.3, in_blocks=4, out_blocks=5)
    assert (fixed.in_blocks, fixed.out_blocks) == (4, 5)
    assert structmat.relative_error(W, M) <= structmat.relative_error(W, fixed) + 1e-12
    assert fit_monarch(W, 0.3, in_blocks=1, out_blocks=1).nparams == 6 * (40 + 48)  # low rank as a Monarch


def test_too_small_budget_names_the_smallest_size():
    with pytest.raises(ValueError, match=r"budget=10 allows 10 parameters, below the smallest Monarch matrix"):
        fit_monarch(np.ones((40, 40)), 10)


@pytest.mark.parametrize("kwargs, match", [({"rank": 100}, "rank must be"), ({"in_blocks": 50}, "in_blocks")])
def test_bad_projection_options(kwargs, match):
    args = {"in_blocks": 4, "out_blocks": 4, "rank": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        monarch_projection(np.ones((16, 16)), args["in_blocks"], args["out_blocks"], args["rank"])


def test_block_candidates():
    assert block_candidates(1) == [1]
    assert 32 in block_candidates(1024) and block_candidates(1024)[0] == 1
