import math

import pytest

from structmat.benchmarks.fit_scaling import fit_time_exponents, main, run_fit_scaling
from structmat.benchmarks.lowrank_reference import compare_with_lowrank, summarize
from structmat.benchmarks.results import read_rows
from structmat.benchmarks.sweep import plot_sweep, run_sweep
from structmat.weights import synthetic_weight


def test_fit_scaling_rows_resume_and_exponent(tmp_path):
    path = tmp_path / "fit_scaling.csv"
    rows = run_fit_scaling(["lowrank", "monarch"], [16, 32], share=0.25, csv_path=path)
    assert [(r["family"], r["n"]) for r in rows] == [("lowrank", 16), ("monarch", 16), ("lowrank", 32),
                                                     ("monarch", 32)]
    assert all(r["status"] == "ok" and r["nparams"] <= r["budget_params"] and r["cpu_seconds"] >= 0 for r in rows)
    again = run_fit_scaling(["lowrank", "monarch"], [16, 32], share=0.25, csv_path=path)
    assert len(again) == 4  # nothing refitted
    fake = [{"family": "f", "n": 512, "cpu_seconds": 1.0, "status": "ok"},
            {"family": "f", "n": 4096, "cpu_seconds": 64.0, "status": "ok"}]
    assert fit_time_exponents(fake)["f"] == pytest.approx(2.0)


def test_fit_scaling_command_writes_csv_and_plot(tmp_path, capsys):
    main(["-f", "lowrank", "-n", "16", "24", "-o", str(tmp_path), "-q"])
    assert (tmp_path / "fit_scaling.png").stat().st_size > 0
    assert len(read_rows(tmp_path / "fit_scaling.csv")) == 2
    assert "CPU time" in capsys.readouterr().out


def test_lowrank_reference_pairs_cells_and_flags_excess(tmp_path):
    W = synthetic_weight("gaussian", (20, 16), seed=0)
    rows = run_sweep({"g": W}, ["lowrank", "monarch", "hodlr", "toeplitz_like"], [0.3, 0.6])
    comparison = compare_with_lowrank(rows, cell=("matrix", "budget"))
    assert {r["family"] for r in comparison} == {"monarch", "hodlr"}  # toeplitz_like does not contain low rank
    assert all(r["within"] for r in comparison)
    lowrank = {r["budget"]: float(r["relative_error"]) for r in rows if r["variant"] == "lowrank"}
    worse = [dict(r, relative_error=lowrank[r["budget"]] * 1.001) if r["variant"] == "hodlr" else r for r in rows]
    summary = {s["family"]: s for s in summarize(compare_with_lowrank(worse, cell=("matrix", "budget")))}
    assert summary["hodlr"]["within"] == 0 and summary["hodlr"]["cells"] == 2 and summary["monarch"]["within"] == 2
    plot_sweep(rows, tmp_path / "sweep.png")  # low rank drawn as the reference line
    assert (tmp_path / "sweep.png").stat().st_size > 0
    assert math.isfinite(summary["monarch"]["largest_excess"])


def test_warmup_fits_are_run_and_recorded(tmp_path, monkeypatch):
    import types

    import structmat.benchmarks.fit_scaling as fit_scaling

    calls = []
    real = fit_scaling.get_family("lowrank")
    counting = types.SimpleNamespace(fit=lambda W, share: calls.append(W.shape) or real.fit(W, share))
    monkeypatch.setattr(fit_scaling, "get_family", lambda name: counting)
    rows = run_fit_scaling(["lowrank"], [24], share=0.25, repeats=2, warmup=3, csv_path=tmp_path / "f.csv")
    assert rows[0]["warmup"] == 3 and rows[0]["repeats"] == 2
    assert calls.count((24, 24)) == 5  # three untimed, two timed
