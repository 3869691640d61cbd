"""``structmat bench-fits``: every mode writes its CSV and PNG, resumes, and reports mistakes in one line."""

import numpy as np
import pytest

from structmat.benchmarks.containment import containment_summary, run_containment
from structmat.benchmarks.results import read_rows
from tests.test_cli import run


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    import torch

    from structmat.features import extract_features
    from tests.features._tiny import tiny_backbone, tiny_dataset

    torch.set_num_threads(1)
    return extract_features(tiny_backbone(), tiny_dataset(120), tmp_path_factory.mktemp("cache"), progress=False)


def test_containment_rows_pair_every_family_with_low_rank(rng):
    W = rng.standard_normal((14, 10)) * np.geomspace(1, 0.05, 10)
    X = rng.standard_normal((40, 10))
    rows = run_containment({"w": W}, ["monarch", "hodlr"], [0.3, 0.6], inputs={"w": (X, X[:10])})
    assert {(r["family"], r["method"]) for r in rows} == {(f, m) for f in ("lowrank", "monarch", "hodlr")
                                                          for m in ("plain", "data-aware")}
    summary, comparison = containment_summary(rows)
    assert {s["family"]: (s["cells"], s["within"]) for s in summary} == {"monarch": (4, 4), "hodlr": (4, 4)}
    aware = [r for r in rows if r["method"] == "data-aware"]
    assert all(r["objective_error"] == r["output_error"] and r["held_out_output_error"] != "" for r in aware)
    assert all(s["worst_relative_margin"] <= 1e-9 for s in summary) and len(comparison) == 8
    worse = [dict(r, objective_error=r["objective_error"] * 1.01) if r["family"] == "hodlr" else r for r in rows]
    assert {s["family"]: s["within"] for s in containment_summary(worse)[0]}["hodlr"] == 0


def test_bench_fits_containment_with_a_cache_resumes(tiny_cache, tmp_path, capsys):
    argv = ["bench-fits", "containment", "-m", "gaussian:12x9", "--cache", tiny_cache.directory, "-f", "monarch",
            "-b", "0.4", "-o", tmp_path, "-q"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "| monarch |" in out and (tmp_path / "containment.png").stat().st_size > 0
    rows = read_rows(tmp_path / "containment.csv")
    # the Gaussian plainly, the cache's head (not among the matrices: added) plainly and to its outputs
    assert len(rows) == 2 * 1 + 2 * 2 and {r["method"] for r in rows if "cache head" in r["matrix"]} == \
        {"plain", "data-aware"}
    code, _, _ = run(capsys, *argv)
    assert code == 0 and read_rows(tmp_path / "containment.csv") == rows   # resumed: nothing refitted


def test_bench_fits_scaling_kinds_write_csv_and_plot(tmp_path, capsys):
    code, out, _ = run(capsys, "bench-fits", "scaling", "-f", "lowrank", "sparse", "-n", "16", "32", "--kind",
                       "gaussian", "powerlaw", "-o", tmp_path, "-q")
    assert code == 0 and "powerlaw lowrank: CPU time ∝ n^" in out
    for kind in ("gaussian", "powerlaw"):
        assert len(read_rows(tmp_path / f"fit_scaling_{kind}.csv")) == 4
        assert (tmp_path / f"fit_scaling_{kind}.png").stat().st_size > 0


def test_bench_fits_ldr_and_sparse_classifier(tiny_cache, tmp_path, capsys):
    code, _, _ = run(capsys, "bench-fits", "ldr", tiny_cache.directory, "-f", "toeplitz_like", "-b", "0.5",
                     "-o", tmp_path, "-q")
    assert code == 0 and (tmp_path / "ldr_fit_quality.png").stat().st_size > 0
    assert {r["method"] for r in read_rows(tmp_path / "ldr_fit_quality.csv")} == {"plain", "data-aware"}
    code, _, _ = run(capsys, "bench-fits", "sparse-classifier", tiny_cache.directory, "-f", "sparse", "-b", "0.5",
                     "--repeats", "1", "--refit", "none", "-o", tmp_path, "-q")
    assert code == 0 and (tmp_path / "classifier_fit_times.png").stat().st_size > 0
    assert len(read_rows(tmp_path / "classifier_fit_times.csv")) == 3


def test_bench_fits_compare_reads_a_containment_csv(tmp_path, capsys):
    code, _, _ = run(capsys, "bench-fits", "containment", "-m", "gaussian:10x8", "-f", "sss", "-b", "0.5",
                     "-o", tmp_path, "-q")
    assert code == 0
    code, out, _ = run(capsys, "bench-fits", "compare", tmp_path / "containment.csv")
    assert code == 0 and "| sss | 1 | 1 |" in out


@pytest.mark.parametrize("argv, message", [
    (["bench-fits", "scaling", "--share", "2"], "--share"),
    (["bench-fits", "containment", "-b", "1.5"], "--budget"),
    (["bench-fits", "compare", "missing.csv"], "no such file"),
    (["bench-fits", "containment", "-f", "nope"], "unknown family"),
])
def test_bench_fits_mistakes_are_one_line(argv, message, tmp_path, capsys):
    code, _, err = run(capsys, *argv, *(["-o", tmp_path] if argv[1] != "compare" else []))
    assert code == 2 and message in err and err.count("\n") == 1
