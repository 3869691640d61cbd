"""The benchmark runner and the `structmat bench-c` command on small matrices."""

import csv
import json
import os
import subprocess

import numpy as np
import pytest

import structmat
from structmat.cli import main
from structmat.speed_c import C_BENCH_COLUMNS, LayerFileError, one_core, run_c_benchmark, write_input, write_layer
from structmat.speed_c.runner import OutputMismatchError, time_c


def test_run_c_benchmark_rows_and_files(driver, cache_dir, tmp_path, rng):
    W = rng.standard_normal((40, 30))
    saved = structmat.LowRank.random((16, 12), rank=2, seed=1)
    rows = run_c_benchmark({"W": W, "saved": saved}, ["lowrank"], [0.2, 0.5], cache_dir=cache_dir, warmup=1,
                           repeats=3, csv_path=tmp_path / "c.csv", json_path=tmp_path / "c.json",
                           bias={"W": rng.standard_normal(40)})
    kinds = [(r["matrix"], r["family"], r["implementation"], r["budget"]) for r in rows]
    assert kinds == [("W", "dense", "c", 1.0), ("W", "dense", "numpy-blas", 1.0), ("W", "lowrank", "c", 0.2),
                     ("W", "lowrank", "c", 0.5), ("saved", "dense", "c", 1.0), ("saved", "dense", "numpy-blas", 1.0),
                     ("saved", "lowrank", "c", "")]
    for r in rows:
        assert r["median_ns"] > 0
        if r["implementation"] == "c":
            assert r["relative_error"] < 1e-4
    low = rows[2]
    assert low["nparams"] <= 0.2 * 1200 and low["share"] == low["nparams"] / 1200
    # ratios use the dense references timed again right after the cell
    assert low["dense_c_ns"] > 0 and low["dense_blas_ns"] > 0
    assert low["ratio_to_c_dense"] == pytest.approx(low["median_ns"] / low["dense_c_ns"])
    assert low["ratio_to_blas_dense"] == pytest.approx(low["median_ns"] / low["dense_blas_ns"])
    assert rows[0]["ratio_to_c_dense"] == 1 and rows[0]["dense_c_ns"] == rows[0]["median_ns"]
    assert low["ratio_over_share"] == pytest.approx(low["ratio_to_c_dense"] / low["share"])
    assert low["within_target"] == (low["ratio_over_share"] <= 1.5)
    with open(tmp_path / "c.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == C_BENCH_COLUMNS
    document = json.loads((tmp_path / "c.json").read_text())
    assert len(document["rows"]) == len(rows) and document["build"]["flags"] == ["-O3", "-march=native"]


def test_unknown_family_is_rejected_before_work(cache_dir):
    with pytest.raises(ValueError, match="has no C kernel"):
        run_c_benchmark({"W": np.ones((3, 3))}, ["wavelet"], [0.5], cache_dir=cache_dir)


def test_mismatch_is_reported(driver, tmp_path, monkeypatch):
    import structmat.speed_c.runner as runner

    monkeypatch.setattr(runner, "_reference", lambda M, x, bias: np.ones(M.shape[0]))
    with pytest.raises(OutputMismatchError, match="differs from NumPy's"):
        time_c(structmat.LowRank.random((6, 5), seed=0), np.ones(5), binary=driver, work_dir=tmp_path)


def test_one_core_pins_and_restores():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this OS")
    before = os.sched_getaffinity(0)
    with one_core() as cpu:
        assert os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(ValueError, match="cpu must be one of"):
        with one_core(10**6):
            pass


def test_fuzzed_layer_files_never_crash_the_driver(driver, tmp_path):
    """Random byte changes in the header, table and data: the driver exits 0 or 2 with one line, never crashes."""
    rng = np.random.default_rng(0)
    good = write_layer(structmat.LowRank.random((9, 7), rank=2, seed=0), tmp_path / "good.smlayer",
                       bias=np.ones(9)).read_bytes()
    inp = write_input(np.ones(7), tmp_path / "x.f32")
    path = tmp_path / "fuzz.smlayer"
    for trial in range(60):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            data[int(rng.integers(0, 160 if trial % 2 else len(data)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data[: len(data) - int(rng.integers(0, 3)) * (trial % 3 == 0)]))
        result = subprocess.run([str(driver), str(path), str(inp), "--warmup", "0", "--repeats", "1"],
                                capture_output=True, text=True)
        assert result.returncode in (0, 2), (trial, result.returncode, result.stderr)
        if result.returncode == 2:
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("structmat-bench: error: ")


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_c_command(tmp_path, capsys, cache_dir, monkeypatch, rng):
    monkeypatch.setenv("STRUCTMAT_CACHE_DIR", str(cache_dir.parent))
    np.save(tmp_path / "W.npy", rng.standard_normal((30, 20)))
    saved = tmp_path / "M.npz"
    structmat.LowRank.random((12, 8), rank=2, seed=0).save(saved)
    code, out, err = run(capsys, "bench-c", tmp_path / "W.npy", saved, "--family", "lowrank", "--budget", "0.25",
                         "--repeats", "3", "--warmup", "1", "-o", tmp_path / "out", "-q", "--option", "method=svd")
    assert code == 0, err
    assert "numpy-blas" in out and "lowrank" in out and "ratio_over_share" in out
    for name in ("bench_c.csv", "bench_c.json", "bench_c.png"):
        assert (tmp_path / "out" / name).exists()
    with open(tmp_path / "out" / "bench_c.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6  # per matrix: dense C, BLAS, lowrank


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench-c", "gaussian:8x6", "--cc", "structmat-no-such-cc", "-q"], "not found"),
        (["bench-c", "gaussian:8x6", "-f", "wavelet", "-q"], "has no C kernel"),
        (["bench-c", "gaussian:8x6", "-f", "lowrank", "--option", "sss.num_stages=4", "-q"], "not one of the families"),
        (["bench-c", "missing.npy", "-q"], "no such file"),
    ],
)
def test_bench_c_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_layer_reported_through_time_c(driver, tmp_path, monkeypatch):
    import structmat.speed_c.runner as runner

    real = runner.write_layer

    def truncating(M, path, bias=None):
        path = real(M, path, bias)
        path.write_bytes(path.read_bytes()[:-8])
        return path

    monkeypatch.setattr(runner, "write_layer", truncating)
    with pytest.raises(LayerFileError, match="truncated"):
        time_c(structmat.LowRank.random((6, 5), seed=0), np.ones(5), binary=driver, work_dir=tmp_path)


def test_sparse_families_are_judged_against_their_byte_share():
    from structmat.speed_c.runner import _add_ratios

    def row(family, share, byte_share, median_ns):
        return {"matrix": "W", "family": family, "implementation": "c", "share": share, "byte_share": byte_share,
                "median_ns": median_ns, "dense_c_ns": 100.0, "dense_blas_ns": 100.0}

    low, sparse = _add_ratios([row("lowrank", 0.25, 0.25, 30.0), row("sparse", 0.25, 0.5, 60.0)])
    assert low["ratio_over_share"] == pytest.approx(1.2) and low["within_target"]
    assert sparse["ratio_over_share"] == pytest.approx(1.2) and sparse["within_target"]
