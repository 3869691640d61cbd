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


def test_sweep_resumes(matrices, tmp_path):
    csv_path = tmp_path / "sweep.csv"
    run_sweep(matrices, ["lowrank"], [0.1], csv_path=csv_path)
    # Mark the finished rows: a resumed sweep must keep them as they are, not fit them again.
    marked = csv_path.read_text().replace(",ok,", ",ok,from the first run")
    csv_path.write_text(marked)
    rows = run_sweep(matrices, ["lowrank"], [0.1, 0.3], csv_path=csv_path)
    assert [(r["matrix"], r["budget"], r["message"]) for r in rows] == [
        ("a", "0.1", "from the first run"), ("a", "0.3", ""), ("b", "0.1", "from the first run"), ("b", "0.3", "")]
    with open(csv_path) as f:
        assert [(r["matrix"], r["budget"]) for r in csv.DictReader(f)] == [(r["matrix"], r["budget"]) for r in rows]


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
    assert speed_target("block_sparse", 256, 0.25, 0.28) == pytest.approx(0.42)  # indices per block count too
    assert speed_target("toeplitz_like", 1, 0.25, 0.25) is None and speed_target("sss", 32, 0.25, 0.25) is None


def test_rsvd_benchmark_small(tmp_path):
    from structmat.weights import synthetic_weight

    rows = run_rsvd_benchmark({"p": synthetic_weight("powerlaw", (300, 200))}, [10, 40], csv_path=tmp_path / "r.csv")
    assert len(rows) == 2
    for r in rows:
        assert 1.0 <= r["error_ratio"] < 1.05
    assert (tmp_path / "r.csv").exists()


def _correlated_inputs(rng, rows, n):
    """Rows with a decaying spectrum and a few dead features, as real layer inputs have."""
    X = rng.standard_normal((rows, n)) @ (rng.standard_normal((n, n)) * np.geomspace(1, 1e-3, n))
    X[:, :2] = 0.0
    return X


def test_sweep_with_inputs_fits_to_the_outputs_and_reports_their_error(matrices, rng, tmp_path):
    import structmat

    W = matrices["a"]
    X = _correlated_inputs(rng, 80, W.shape[1])
    csv_path = tmp_path / "sweep.csv"
    rows = run_sweep({"a": W}, ["lowrank", "sparse"], [0.2, 0.5], inputs=X, methods=["data-aware", "plain"],
                     csv_path=csv_path, save_dir=tmp_path / "m")
    assert [(r["variant"], r["method"], r["budget"]) for r in rows] == [
        (f, m, b) for f in ("lowrank", "sparse") for m in ("data-aware", "plain") for b in ("0.2", "0.5")]
    by_cell = {(r["variant"], r["method"], r["budget"]): r for r in rows}
    for family in ("lowrank", "sparse"):
        for budget in ("0.2", "0.5"):
            aware, plain = by_cell[family, "data-aware", budget], by_cell[family, "plain", budget]
            assert aware["status"] == plain["status"] == "ok" and aware["input_rows"] == 80
            assert aware["output_error"] <= plain["output_error"] * (1 + 1e-9)
            # the reported output error is the saved matrix's, on the inputs given
            M = structmat.load(tmp_path / "m" / f"a__{family}__{budget}__data-aware.npz")
            assert aware["output_error"] == pytest.approx(structmat.output_error(W, M, X), rel=1e-9)
            P = structmat.load(tmp_path / "m" / f"a__{family}__{budget}.npz")
            assert plain["relative_error"] == pytest.approx(structmat.relative_error(W, P), rel=1e-12)
    assert by_cell["lowrank", "data-aware", "0.2"]["output_error"] < 0.9 * by_cell["lowrank", "plain", "0.2"][
        "output_error"]
    plot_sweep(rows, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_inputs_per_matrix_and_resuming_an_older_csv(matrices, rng, tmp_path):
    from structmat import InputStatistics

    csv_path = tmp_path / "sweep.csv"
    run_sweep(matrices, ["lowrank"], [0.3], csv_path=csv_path)
    # a CSV written before the method column existed: its rows are plain fits and are kept
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("method")
    old = "\n".join(",".join(v for i, v in enumerate(line.split(",")) if i != drop) for line in lines) + "\n"
    csv_path.write_text(old.replace(",ok,", ",ok,kept"))
    stats = InputStatistics.from_rows(rng.standard_normal((60, 50)))
    rows = run_sweep(matrices, ["lowrank"], [0.3], csv_path=csv_path, inputs={"b": stats},
                     methods=("data-aware", "plain"))
    assert [(r["matrix"], r["method"], r["message"]) for r in rows] == [
        ("a", "plain", "kept"), ("b", "data-aware", ""), ("b", "plain", "kept")]
    assert rows[1]["input_rows"] == 60 and rows[1]["output_error"] > 0


def test_sweep_refuses_inputs_it_cannot_use(matrices, rng):
    with pytest.raises(ValueError, match=r"matrix 'a' \(40x30\).*shape \(N, 30\)"):
        run_sweep(matrices, ["lowrank"], [0.3], inputs=rng.standard_normal((10, 50)))
    with pytest.raises(ValueError, match="not among the matrices"):
        run_sweep(matrices, ["lowrank"], [0.3], inputs={"c": rng.standard_normal((10, 30))})
    with pytest.raises(ValueError, match="needs inputs"):
        run_sweep(matrices, ["lowrank"], [0.3], methods=["data-aware"])
    with pytest.raises(ValueError, match="methods must be"):
        run_sweep(matrices, ["lowrank"], [0.3], inputs={"a": rng.standard_normal((10, 30))}, methods=["nope"])


def test_sweep_statistics_reach_pool_workers_as_bytes(rng, tmp_path):
    """The same rows from one process and from two workers: the statistics cross as the bytes of their file."""
    W = rng.standard_normal((36, 28))
    X = _correlated_inputs(rng, 50, 28)
    rows = {}
    for jobs in (1, 2):
        rows[jobs] = [{k: v for k, v in r.items() if k != "fit_seconds"}
                      for r in run_sweep({"w": W}, ["lowrank", "sparse"], [0.25, 0.5], inputs=X, jobs=jobs,
                                         csv_path=tmp_path / f"sweep{jobs}.csv")]
    assert rows[1] == rows[2] and all(r["method"] == "data-aware" and r["output_error"] > 0 for r in rows[1])
