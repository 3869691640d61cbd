import csv

import numpy as np
import pytest

from structmat.benchmarks.sss_baseline import PlainSSS
from structmat.benchmarks.sss_bench import (
    SSS_COMPARISON_COLUMNS, run_sss_comparison, run_sss_scaling, scaling_exponents,
)
from structmat.cli import main
from structmat.matrices.sss import SSS
from structmat.metrics import relative_error


def test_plain_approach_recovers_exact_structure_and_respects_budgets(rng):
    M = SSS.random((96, 80), num_stages=8, state_dim=3, seed=0)
    P, info = PlainSSS(M.to_dense(), stage_grid=(4, 8)).fit(M.nparams)
    assert P.nparams <= M.nparams and info["num_stages"] == 8 and info["error"] < 1e-10
    W = rng.standard_normal((60, 50))
    plain = PlainSSS(W)
    for share in (0.2, 0.5):
        P, info = plain.fit(share)
        assert P.nparams <= share * W.size and info["error"] == pytest.approx(relative_error(W, P))


def test_comparison_csv_has_both_side_by_side(rng, tmp_path):
    matrices = {"a": rng.standard_normal((48, 40)), "b": rng.standard_normal((30, 64))}
    rows = run_sss_comparison(matrices, [0.25, 0.5], csv_path=tmp_path / "c.csv", stage_grid=(2, 4, 8))
    with open(tmp_path / "c.csv") as f:
        written = list(csv.DictReader(f))
    assert len(rows) == 4 and list(written[0]) == SSS_COMPARISON_COLUMNS
    for r in rows:
        assert r["fast_nparams"] <= r["budget_params"] and r["plain_nparams"] <= r["budget_params"]
        assert r["fast_error"] <= r["fast_sweep_error"] + 1e-12
        assert 0 < r["fast_error"] < 1 and 0 < r["plain_error"] <= 1
    again = run_sss_comparison(matrices, [0.25, 0.5], csv_path=tmp_path / "c.csv")  # resumes: nothing recomputed
    assert len(again) == 4


def test_scaling_rows_and_exponent():
    rows = run_sss_scaling((48, 96), repeats=1, kind="gaussian")
    assert {r["regime"] for r in rows} == {"share=0.25", "state_dim=32"} and len(rows) == 4
    exponents = scaling_exponents(rows)
    assert set(exponents) == {"share=0.25", "state_dim=32"}
    assert scaling_exponents([{"regime": "x", "n": 10, "seconds": 1.0}, {"regime": "x", "n": 20, "seconds": 4.0}]) \
        == {"x": pytest.approx(2.0)}


def test_cli_bench_sss(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench-sss", "-m", "gaussian:40x36", "-b", "0.3", "-o", str(out), "-q"]) == 0
    assert (out / "sss_vs_plain.csv").exists() and "fast_error" in capsys.readouterr().out
    assert main(["bench-sss", "--scaling", "--sizes", "32", "64", "--repeats", "1", "-o", str(out), "-q"]) == 0
    assert "fit time grows like n^" in capsys.readouterr().out
