import numpy as np

from structmat.benchmarks.threads import THREAD_COLUMNS, plot_thread_benchmark, run_thread_benchmark


def test_thread_benchmark_rows_and_plot(tmp_path):
    W = np.random.default_rng(0).standard_normal((30, 20))
    rows = run_thread_benchmark({"g": W}, ["lowrank"], 0.5, threads=(1, 2), busy=(0, 1), repeats=1,
                                csv_path=tmp_path / "threads.csv")
    assert [(r["busy"], r["threads"]) for r in rows] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert all(r["median_seconds"] > 0 for r in rows) and rows[0]["ratio_to_one_thread"] == 1.0
    assert (tmp_path / "threads.csv").read_text().splitlines()[0] == ",".join(THREAD_COLUMNS)
    plot_thread_benchmark(rows, tmp_path / "threads.png")
    assert (tmp_path / "threads.png").stat().st_size > 0
