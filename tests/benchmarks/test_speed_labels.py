"""Speed labels: built from a bench-layers CSV and a bench-c CSV, read back by family, shown by `families`."""

import csv

import pytest

from structmat.benchmarks.speed_labels import LABELS_PATH, speed_label, speed_labels, write_speed_labels
from structmat.cli import main


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def csvs(tmp_path):
    layer = [{"matrix": "efficientnet_lite0", "variant": v, "family": v, "budget": b, "batch": batch,
              "forward_ratio": ratio}
             for v, b, batch, ratio in [("nn.Linear", 1.0, 1, 1.0), ("sss", 0.25, 1, 0.45), ("sss", 0.25, 256, 0.3),
                                         ("sss", 0.25, 32, 0.4), ("ldr", 0.25, 1, 400.0)]]
    c = [{"matrix": "efficientnet_lite0", "family": f, "implementation": impl, "budget": b, "ratio_to_c_dense": r}
         for f, impl, b, r in [("dense", "c", 1.0, 1.0), ("sss", "c", 0.25, 0.28), ("sss", "c", 0.5, 0.6),
                               ("sss", "numpy-blas", 0.25, 9.0)]]
    write_csv(tmp_path / "layer_speed.csv", layer)
    write_csv(tmp_path / "bench_c.csv", c)
    return tmp_path / "layer_speed.csv", tmp_path / "bench_c.csv"


def test_labels_round_trip(csvs, tmp_path):
    labels = write_speed_labels(*csvs, tmp_path / "labels.json", commands=["structmat bench-layers ..."])
    sss = labels["sss"]
    assert (sss.c_ratio, sss.torch_ratio, sss.torch_ratio_batch256) == (0.28, 0.45, 0.3)
    assert labels["ldr"].c_ratio is None and labels["ldr"].torch_ratio == 400.0
    assert sss.cpu and sss.share == 0.25 and sss.commands == ("structmat bench-layers ...",)
    assert speed_label("sss", tmp_path / "labels.json") == sss
    assert speed_label("lowrank", tmp_path / "labels.json") is None
    assert "C 0.28×, torch 0.45×" in sss.describe()


def test_families_command_shows_the_labels(csvs, tmp_path, capsys):
    assert main(["speed-labels", "--layers", str(csvs[0]), "--c", str(csvs[1]), "-o", str(tmp_path / "l.json")]) == 0
    assert main(["families", "--labels", str(tmp_path / "l.json")]) == 0
    out = capsys.readouterr().out
    line = [row for row in out.splitlines() if row.startswith("sss ")][-1]  # the families table comes last
    assert "0.28x" in line and "0.45x" in line and "measured" in out


def test_shipped_labels_cover_the_families():
    from structmat.families import structured_family_names

    labels = speed_labels()
    assert LABELS_PATH.exists() and labels
    for name in structured_family_names():
        assert labels[name].torch_ratio is not None, name
    with pytest.raises(ValueError, match="unknown family"):
        speed_label("nope")
