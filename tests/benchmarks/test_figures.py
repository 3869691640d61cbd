import json
from pathlib import Path

import pytest

from structmat.benchmarks.figures import FIGURES, make_figures
from structmat.benchmarks.plot_style import family_style, group_label, identical_groups
from structmat.benchmarks.results import read_rows, write_rows
from structmat.families import structured_family_names

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "docs" / "figures"


def _png_ok(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < path.stat().st_size < 200_000


def test_every_family_has_its_own_look_and_lowrank_is_the_reference():
    looks = {(s["color"], s["marker"], s["linestyle"]) for s in map(family_style, structured_family_names())}
    assert len(looks) == len(structured_family_names())
    assert family_style("lowrank")["color"] == "black" and family_style("lowrank")["linestyle"] == "--"
    assert family_style("sss[ordering=none]")  # a variant label gets a style too


def test_identical_groups_keep_order_and_tolerance():
    series = {"lowrank": [(0.1, 0.9), (0.25, 0.7)], "sss": [(0.1, 0.9), (0.25, 0.71)],
              "hodlr": [(0.1, 0.9), (0.25, 0.7 + 1e-7)], "hedlr": [(0.1, 0.9)]}
    assert identical_groups(series, atol=1e-6) == [["lowrank", "hodlr"], ["sss"], ["hedlr"]]
    assert identical_groups(series, atol=0.0) == [["lowrank"], ["sss"], ["hodlr"], ["hedlr"]]
    assert identical_groups({"a": [None, 1.0], "b": [None, 1.0], "c": [0.0, 1.0]}) == [["a", "b"], ["c"]]
    assert group_label(["lowrank", "hodlr"]) == "lowrank (reference) = hodlr (identical)"
    assert group_label(["sss"]) == "sss"


def _curve_rows():
    rows = []
    for family, scale in (("lowrank", 1.0), ("sss", 1.0), ("monarch", 0.8), ("sparse", 0.6)):
        for share in (0.1, 0.25, 0.5):
            for method, column in (("plain", 1.0), ("data-aware", 0.3)):
                rows.append({"family": family, "share": repr(share), "method": method, "params_share": share,
                             "relative_error": (1 - share) * scale * column ** 0,
                             "output_error": (1 - share) * scale * column, "status": "ok"})
    rows.append({"family": "ldr", "share": "0.1", "method": "plain", "status": "skipped", "message": "too small"})
    return rows


def _c_rows():
    rows = [{"matrix": "efficientnet_lite0", "m": 1000, "n": 1280, "family": "dense", "implementation": "c",
             "share": 1.0, "byte_share": 1.0, "median_ns": 50_000, "ratio_to_c_dense": 1.0}]
    for family, ratio, byte_share in (("lowrank", 0.24, 0.25), ("sparse", 1.9, 0.5), ("toeplitz_like", 700, 0.25)):
        rows.append({"matrix": "efficientnet_lite0", "m": 1000, "n": 1280, "family": family, "implementation": "c",
                     "budget": 0.25, "share": 0.25, "byte_share": byte_share, "median_ns": 50_000 * ratio,
                     "dense_c_ns": 50_000, "ratio_to_c_dense": ratio})
    return rows


def _allocation_rows():
    families = ["lowrank", "dense", "monarch", "sparse"]
    return [{"name": f"blocks.{i}.conv", "kind": "conv1x1", "family": families[i % 4], "out_features": 96,
             "in_features": 16, "dense_nparams": 1536, "nparams": 1536 if i % 4 == 1 else 400,
             "share": 1.0 if i % 4 == 1 else 400 / 1536, "output_error": 0.0 if i % 4 == 1 else 0.1 * (i % 3)}
            for i in range(12)]


def test_from_csv_redraws_every_figure_without_measuring(tmp_path):
    from structmat.compress.report import REPORT_COLUMNS
    from structmat.benchmarks.data_aware import DATA_AWARE_COLUMNS
    from structmat.speed_c.runner import C_BENCH_COLUMNS

    write_rows(tmp_path / "family-curves.csv", _curve_rows(), DATA_AWARE_COLUMNS)
    write_rows(tmp_path / "c-speed.csv", _c_rows(), C_BENCH_COLUMNS)
    write_rows(tmp_path / "allocation.csv", _allocation_rows(), REPORT_COLUMNS)
    written = make_figures(tmp_path, from_csv=True)
    assert [p.name for p in written] == [f"{f}.png" for f in FIGURES]
    assert all(_png_ok(p) for p in written)
    first = written[0].read_bytes()
    make_figures(tmp_path, ["family-curves"], from_csv=True)
    assert written[0].read_bytes() == first  # same CSV, same bytes


def test_from_csv_names_the_missing_csv_and_rejects_unknown_figures(tmp_path):
    with pytest.raises(FileNotFoundError, match="c-speed.csv does not exist"):
        make_figures(tmp_path, ["c-speed"], from_csv=True)
    with pytest.raises(ValueError, match="figures must be some of"):
        make_figures(tmp_path, ["speed"], from_csv=True)


def test_family_curves_are_measured_on_a_cache_and_recorded(tmp_path):
    import torch

    from structmat.features import extract_features
    from tests.features._tiny import tiny_backbone, tiny_dataset

    torch.set_num_threads(1)
    cache = extract_features(tiny_backbone(), tiny_dataset(120), tmp_path / "cache", progress=False)
    written = make_figures(tmp_path / "out", ["family-curves"], cache=cache, families=["lowrank", "hodlr"],
                           shares=[0.25, 0.5], command="structmat figures --only family-curves")
    rows = read_rows(tmp_path / "out" / "family-curves.csv")
    assert {(r["family"], r["share"], r["method"]) for r in rows} == {
        (f, s, m) for f in ("lowrank", "hodlr") for s in ("0.25", "0.5") for m in ("plain", "data-aware")}
    record = json.loads((tmp_path / "out" / "family-curves.json").read_text())
    assert record["command"] == "structmat figures --only family-curves" and record["machine"]["cpu"]
    assert record["settings"]["shares"] == [0.25, 0.5] and "load" in record["machine"]
    assert _png_ok(written[-1])


@pytest.mark.parametrize("figure", FIGURES)
def test_the_committed_figures_redraw_from_their_committed_csvs(tmp_path, figure):
    csv = COMMITTED / f"{figure}.csv"
    if not csv.exists():
        pytest.skip(f"{csv} not committed")
    (tmp_path / csv.name).write_bytes(csv.read_bytes())
    (png,) = make_figures(tmp_path, [figure], from_csv=True)
    assert _png_ok(png)
    record = json.loads((COMMITTED / f"{figure}.json").read_text())
    assert record["command"].startswith("structmat figures") and record["machine"]["load"] and record["started"]


def test_cli_figures_from_csv(tmp_path, capsys):
    from structmat.benchmarks.data_aware import DATA_AWARE_COLUMNS
    from structmat.cli import main

    write_rows(tmp_path / "family-curves.csv", _curve_rows(), DATA_AWARE_COLUMNS)
    assert main(["figures", "--from-csv", "--only", "family-curves", "-o", str(tmp_path)]) == 0
    assert "family-curves.png" in capsys.readouterr().out
    assert main(["figures", "--from-csv", "--only", "c-speed", "-o", str(tmp_path)]) == 2
    assert "c-speed.csv does not exist" in capsys.readouterr().err
