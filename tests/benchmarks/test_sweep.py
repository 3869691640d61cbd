import csv

import numpy as np
import pytest

from structmat.benchmarks import Variant, plot_layer_speed, plot_sweep, run_layer_speed, run_rsvd_benchmark, run_sweep
from structmat.benchmarks.sweep import SWEEP_COLUMNS


@pytest.fixture
def matrices(rng):
    return {"a": rng.standard_normal((40, 30)), "b": rng.standard_normal((25, 50))}


def test_sweep_writes_csv_and_png(matrices, tmp_path):
    csv_path = tmp_path / "sweep.csv"
    rows = run_sweep(matrices, ["lowrank", Variant("lowrank", {"method": "randomized"}, "lowrank-rsvd")],
                     [0.1, 0.5, 20], csv_path=csv_path)
    assert len(rows) == 2 * 2 * 3
    with open(csv_path) as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == SWEEP_COLUMNS and len(written) == 12
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["budget"] for r in skipped} == {"20"} and "smallest low-rank matrix" in skipped[0]["message"]
    for r in ok:
        assert r["nparams"] <= r["budget_params"] and 0 < r["relative_error"] < 1 and r["fit_seconds"] > 0
        assert r["byte_share"] == pytest.approx(r["share"])
    # more parameters, less error
    errors = {r["budget"]: r["relative_error"] for r in ok if r["matrix"] == "a" and r["variant"] == "lowrank"}
    assert errors["0.5"] < errors["0.1"]
    plot_sweep(rows, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_resumes(matrices, tmp_path, monkeypatch):
    csv_path = tmp_path / "sweep.csv"
    run_sweep(matrices, ["lowrank"], [0.1], csv_path=csv_path)
    import structmat.benchmarks.sweep as sweep

    fitted = []
    real = sweep._run_cell

    def counting(*args):
        fitted.append((args[0], args[3]))
        return real(*args)

    monkeypatch.setattr(sweep, "_run_cell", counting)
    rows = run_sweep(matrices, ["lowrank"], [0.1, 0.3], csv_path=csv_path)
    assert len(rows) == 4 and fitted == [("a", 0.3), ("b", 0.3)]


def test_sweep_saves_matrices(matrices, tmp_path):
    import structmat

    run_sweep({"a": matrices["a"]}, ["lowrank"], [0.5], save_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    assert structmat.load(path).family == "lowrank"


def test_sweep_rejects_bad_arguments(matrices):
    with pytest.raises(ValueError, match="unknown family"):
        run_sweep(matrices, ["nope"], [0.5])
    with pytest.raises(ValueError, match="budget"):
        run_sweep(matrices, ["lowrank"], [2.0])
    with pytest.raises(ValueError, match="matrix 'bad'"):
        run_sweep({"bad": np.full((3, 3), np.nan)}, ["lowrank"], [0.5])


def test_layer_speed_small(tmp_path, rng):
    rows = run_layer_speed({"w": rng.standard_normal((64, 96))}, ["lowrank"], 0.25, batch_sizes=(1, 8),
                           repeats=3, csv_path=tmp_path / "speed.csv")
    assert {(r["variant"], r["batch"]) for r in rows} == {("nn.Linear", 1), ("nn.Linear", 8), ("lowrank", 1),
                                                          ("lowrank", 8)}
    for r in rows:
        assert r["forward_backward_ms"] > 0 and r["speedup_vs_linear"] > 0 and r["cpu"]
    low = next(r for r in rows if r["variant"] == "lowrank" and r["batch"] == 1)
    assert low["target_ratio"] == max(1.5 * low["share"], 0.5) and isinstance(low["within_target"], bool)
    assert next(r for r in rows if r["variant"] == "lowrank" and r["batch"] == 8)["target_ratio"] == ""
    assert "machine" in __import__("json").loads((tmp_path / "speed.json").read_text())
    plot_layer_speed(rows, tmp_path / "speed.png")
    assert (tmp_path / "speed.png").exists()


def test_speed_targets():
    from structmat.benchmarks.layer_speed import speed_target

    assert speed_target("sss", 1, 0.25, 0.25) == 0.5
    assert speed_target("sss", 256, 0.25, 0.25) == 0.375
    assert speed_target("sparse", 1, 0.25, 0.5) == 0.75  # judged against the byte share
    assert speed_target("toeplitz_like", 1, 0.25, 0.25) is None and speed_target("sss", 32, 0.25, 0.25) is None


def test_rsvd_benchmark_small(tmp_path):
    from structmat.weights import synthetic_weight

    rows = run_rsvd_benchmark({"p": synthetic_weight("powerlaw", (300, 200))}, [10, 40], csv_path=tmp_path / "r.csv")
    assert len(rows) == 2
    for r in rows:
        assert 1.0 <= r["error_ratio"] < 1.05
    assert (tmp_path / "r.csv").exists()
