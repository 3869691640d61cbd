import json

import pytest

from structmat.benchmarks.sweep import run_sweep
from structmat.parallel import ResumableTable

COLUMNS = ["cell", "value", "status"]


def test_rows_are_written_in_grid_order_whatever_order_they_arrive(tmp_path):
    path = tmp_path / "t.csv"
    order = [("a",), ("b",), ("c",)]
    for arrival in (["c", "a", "b"], ["b", "c", "a"]):
        table = ResumableTable(path, COLUMNS, ["cell"], order=order, resume=False)
        for cell in arrival:
            table.add({"cell": cell, "value": ord(cell), "status": "ok"})
        assert path.read_text() == "cell,value,status\na,97,ok\nb,98,ok\nc,99,ok\n"


def test_resume_keeps_finished_rows_first_and_redoes_unfinished_ones(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("cell,value,status\nold,1,ok\nb,2,timed out\na,3,ok\n")
    table = ResumableTable(path, COLUMNS, ["cell"], order=[("a",), ("b",)], redo=("timed out",))
    assert table.done(("a",)) and table.done("old") and not table.done(("b",)) and len(table) == 2
    table.add({"cell": "b", "value": 4, "status": "ok"})
    assert path.read_text().splitlines()[1:] == ["old,1,ok", "a,3,ok", "b,4,ok"]  # rows of other grids first


def test_json_tables_keep_types(tmp_path):
    path = tmp_path / "t.json"
    table = ResumableTable(path, COLUMNS, ["cell"], order=[("x",)])
    table.add({"cell": "x", "value": 0.5, "status": "ok", "extra": [1, 2]})
    assert json.loads(path.read_text()) == [{"cell": "x", "value": 0.5, "status": "ok", "extra": [1, 2]}]
    assert ResumableTable(path, COLUMNS, ["cell"]).done(("x",))


def test_bad_tables_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"a resumable table is a .csv or .json file; got .*t.txt"):
        ResumableTable(tmp_path / "t.txt", COLUMNS, ["cell"])
    with pytest.raises(ValueError, match=r"key_columns \['nope'\] are not among the columns"):
        ResumableTable(None, COLUMNS, ["nope"])
    (tmp_path / "t.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="not a list of JSON objects"):
        ResumableTable(tmp_path / "t.json", COLUMNS, ["cell"])
    with pytest.raises(ValueError, match="lacks the key column 'cell'"):
        ResumableTable(None, COLUMNS, ["cell"]).add({"value": 1})


def test_a_sweep_cell_past_its_time_limit_is_recorded_and_run_again_on_resume(tmp_path, rng):
    csv_path = tmp_path / "sweep.csv"
    matrices = {"w": rng.standard_normal((30, 20))}
    # A child interpreter alone takes longer than 0.3 s to start: the cell times out.
    rows = run_sweep(matrices, ["lowrank"], [0.5], csv_path=csv_path, time_limit=0.3)
    assert rows[0]["status"] == "timed out" and "limit of 0.3 s" in rows[0]["message"]
    rows = run_sweep(matrices, ["lowrank"], [0.5], csv_path=csv_path, time_limit=120)
    assert rows[0]["status"] == "ok" and rows[0]["nparams"] <= 300
    assert csv_path.read_text().count("\n") == 2  # header and the one cell, replaced
