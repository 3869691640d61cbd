import csv

import pytest

from structmat.cli import main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bench_sampled_writes_csv_and_plot_and_resumes(tmp_path, capsys):
    args = ["bench-sampled", "--ratio", "0.5", "--seeds", "0", "--epochs", "1", "-q", "-o", str(tmp_path)]
    assert main(args) == 0
    rows = _rows(tmp_path / "sampled.csv")
    assert [r["variant"] for r in rows] == ["exact", "forward-topk-0.5", "forward-bernoulli-0.5", "forward-crs-0.5",
                                            "backward-bernoulli-0.5", "forward-topk-0.5-first-exact"]
    shares = {r["variant"]: float(r["train_macs_share"]) for r in rows}
    assert shares["exact"] == 1.0 and shares["forward-topk-0.5"] == pytest.approx(0.5, abs=0.01)
    first_exact = rows[-1]
    assert float(first_exact["first_layer_macs_share"]) == 1.0
    assert float(first_exact["other_layers_macs_share"]) == pytest.approx(0.5, abs=0.01)
    assert 0.5 < shares["backward-bernoulli-0.5"] < 1.0  # exact forward, sampled gradients
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert (tmp_path / "sampled.png").stat().st_size > 0 and (tmp_path / "sampled_summary.csv").exists()
    assert main(args) == 0  # resumes: the same rows, not retrained
    assert _rows(tmp_path / "sampled.csv") == rows
    assert "forward-topk-0.5" in capsys.readouterr().out


def test_bench_swat_reports_sparsity_and_flop_reduction(tmp_path):
    assert main(["bench-swat", "--sparsity", "0.7", "--seeds", "0", "--epochs", "1", "-q", "-o", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in _rows(tmp_path / "swat.csv")}
    assert set(rows) == {"dense", "swat-u-0.7", "swat-u-0.7-period1", "swat-erk-0.7"}
    assert float(rows["dense"]["train_macs_share"]) == 1.0
    assert float(rows["swat-u-0.7"]["weight_sparsity"]) == pytest.approx(0.7, abs=0.01)
    assert float(rows["swat-u-0.7"]["train_macs_share"]) == pytest.approx(0.3, abs=0.03)
    assert float(rows["swat-erk-0.7"]["activation_sparsity"]) < float(rows["swat-u-0.7"]["activation_sparsity"])
    assert (tmp_path / "swat.png").stat().st_size > 0


def test_bench_sum_product_runs_the_stages(tmp_path):
    assert main(["bench-sum-product", "--budget", "8", "--distill", "8", "--stage-epochs", "1", "1", "1",
                 "--seeds", "0", "-q", "-o", str(tmp_path)]) == 0
    rows = {r["variant"]: r for r in _rows(tmp_path / "sum_product.csv")}
    assert set(rows) == {"dense", "sum-product-8", "sum-product-8-kd"}
    sp = rows["sum-product-8"]
    assert all(sp[k] != "" for k in ("full_precision_accuracy", "ternary_switch_accuracy", "ternary_accuracy",
                                     "final_accuracy"))
    assert int(sp["multiplications"]) == 8 + 8 + 128 * 10 < int(rows["dense"]["multiplications"])
    assert (tmp_path / "sum_product.png").stat().st_size > 0


def test_bad_arguments_exit_with_code_2(tmp_path, capsys):
    assert main(["bench-sampled", "--ratio", "1.5", "-o", str(tmp_path)]) == 2
    assert "--ratio must be a float in (0, 1]" in capsys.readouterr().err
    assert main(["bench-swat", "--sparsity", "1.0", "-o", str(tmp_path)]) == 2
