"""The thread limit of fits and commands (structmat.threads) and the guard every fit runs through."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import structmat
from structmat.approximators.fit_guard import guarded_fit
from structmat.threads import THREADS_ENV, current_threads, default_threads, limit_threads


def blas_threads() -> set:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_default_is_one_thread_and_the_environment_changes_it(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert default_threads() == 1 and current_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert default_threads() == 2
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        default_threads()


def test_limit_threads_nests_and_restores():
    import torch

    before_torch = torch.get_num_threads()
    with limit_threads(1):
        assert blas_threads() == {1} and torch.get_num_threads() == 1 and current_threads() == 1
        with limit_threads(2):
            assert current_threads() == 2
        assert current_threads() == 1
    assert torch.get_num_threads() == before_torch
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises((TypeError, ValueError)):
            with limit_threads(bad):
                pass


def test_a_fit_runs_with_the_limit_and_scale_invariantly():
    seen = {}

    @guarded_fit
    def fit_probe(W, budget, **options):
        seen["threads"] = blas_threads()
        seen["peak"] = float(np.abs(W).max())
        seen["options"] = options
        return structmat.Dense(W)

    W = np.random.default_rng(0).standard_normal((5, 4)) * 1e300
    M = fit_probe(W, 1.0, inputs="kept")
    assert seen["threads"] == {1} and 1.0 <= seen["peak"] < 2.0 and seen["options"] == {"inputs": "kept"}
    np.testing.assert_array_equal(M.to_dense(), W)
    fit_probe(W, 1.0, threads=2)
    assert seen["threads"] == {2} or len(seen["threads"]) == 1  # a BLAS built for fewer threads caps it


def test_a_non_finite_result_is_refused():
    @guarded_fit
    def fit_overshooting(W, budget):
        return structmat.Dense(4 * W)  # fine for W / 2^e, overflows once scaled back near the float64 maximum

    with pytest.raises(ValueError, match="NaN or Inf values"):
        fit_overshooting(np.full((3, 3), 1e308), 1.0)
    assert np.isfinite(fit_overshooting(np.full((3, 3), 1e300), 1.0).to_dense()).all()


def test_a_command_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    import os

    import torch

    from structmat.cli import main

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch_before = torch.get_num_threads()
    assert main(["approximate", "gaussian:8x6", "-f", "lowrank", "-b", "0.5", "-o", str(tmp_path / "M.npz"),
                 "--threads", "2"]) == 0
    assert THREADS_ENV not in os.environ and os.environ["OMP_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == torch_before
