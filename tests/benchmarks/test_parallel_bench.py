import pytest

from structmat.benchmarks.parallel_bench import PARALLEL_COLUMNS, parse_run, run_parallel_benchmark
from structmat.weights import synthetic_weight


def test_parallel_benchmark_times_each_run_and_checks_the_rows(tmp_path):
    matrices = {"g": synthetic_weight("gaussian", (40, 30)), "p": synthetic_weight("powerlaw", (30, 50))}
    summary, tasks = run_parallel_benchmark(matrices, ["lowrank", "sparse"], [0.2, 0.5], ["serial", "processes:2"],
                                            output_dir=tmp_path)
    assert [s["run"] for s in summary] == ["serial", "processes:2"]
    serial, pooled = summary
    assert serial["ratio_to_serial"] == 1 and pooled["ratio_to_serial"] == pytest.approx(
        pooled["wall_s"] / serial["wall_s"])
    assert pooled["same_rows_as_serial"] == "yes" and pooled["cells"] == 8
    assert 0 < serial["fit_s_sum"] <= serial["task_s_sum"] <= serial["wall_s"]
    assert pooled["startup_s"] >= 0 and pooled["between_tasks_s"] >= 0 and pooled["result_latency_s"] >= 0
    assert len(tasks) == 16 and {t["worker"] for t in tasks if t["run"] == "serial"} == {tasks[0]["worker"]}
    assert all(t["start_s"] <= t["finish_s"] <= t["received_s"] for t in tasks)
    header = (tmp_path / "parallel.csv").read_text().splitlines()[0].split(",")
    assert header == PARALLEL_COLUMNS and (tmp_path / "parallel.png").read_bytes()[:4] == b"\x89PNG"


def test_runs_are_named_plainly():
    assert parse_run("serial") == ("serial", 1) and parse_run("processes:2") == ("processes", 2)
    assert parse_run("dask-local:8") == ("dask:local", 8)
    for bad in ("serial:2", "processes", "dask-local:0", "threads:4"):
        with pytest.raises(ValueError, match="'serial', 'processes:N' or 'dask-local:N'"):
            parse_run(bad)
