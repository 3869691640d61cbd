"""bench-budgets: errors at equal parameters and at equal bytes."""

import numpy as np
import pytest

from structmat.benchmarks.equal_budgets import fit_within_bytes, plot_equal_budgets, run_equal_budgets
from structmat.cli import main


@pytest.fixture
def W(rng):
    return rng.standard_normal((30, 40))


@pytest.mark.parametrize("family", ["lowrank", "sparse", "lowrank_sparse", "block_sparse"])
def test_fit_within_bytes_uses_the_bytes(W, family):
    M, fits = fit_within_bytes(W, family, 0.3)
    limit = 4 * int(0.3 * W.size)
    assert M.nbytes <= limit
    if family == "sparse":  # bisection: one more value would not fit
        assert fits > 1 and 4 * (M.nparams + 1) + 4 * (M.nparams + 1 + 31) > limit
    else:
        assert fits == 1


def test_run_resumes_and_plots(W, tmp_path):
    csv = tmp_path / "eq.csv"
    rows = run_equal_budgets({"W": W}, ["lowrank", "sparse"], [0.2, 0.5], csv_path=csv)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    by = {(r["family"], r["unit"], r["share"]): r for r in rows}
    assert by[("lowrank", "params", "0.5")]["relative_error"] == by[("lowrank", "bytes", "0.5")]["relative_error"]
    assert by[("sparse", "bytes", "0.5")]["relative_error"] > by[("sparse", "params", "0.5")]["relative_error"]
    again = run_equal_budgets({"W": W}, ["lowrank", "sparse"], [0.2, 0.5], csv_path=csv)
    assert [r["relative_error"] for r in again] == [str(r["relative_error"]) for r in rows]
    plot_equal_budgets(again, tmp_path / "eq.png")
    assert (tmp_path / "eq.png").stat().st_size > 0
    with pytest.raises(TypeError, match="shares must be floats"):
        run_equal_budgets({"W": W}, ["lowrank"], [100])


def test_command(tmp_path, capsys, rng):
    np.save(tmp_path / "W.npy", rng.standard_normal((24, 32)))
    code = main(["bench-budgets", "-m", str(tmp_path / "W.npy"), "-f", "block_sparse", "-f", "lowrank", "-b", "0.25",
                 "--option", "block_sparse.block_shape=[2,8]", "-o", str(tmp_path / "out"), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and "block_sparse" in out and "bytes" in out
    assert (tmp_path / "out" / "equal_budgets.csv").exists() and (tmp_path / "out" / "equal_budgets.png").exists()
    assert main(["bench-budgets", "-m", str(tmp_path / "W.npy"), "-f", "lowrank", "--option", "rank=3",
                 "-o", str(tmp_path / "out2"), "-q"]) == 2
