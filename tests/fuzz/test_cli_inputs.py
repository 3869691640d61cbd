"""Ordinary mistakes on the command line: unknown options, bad values, missing, truncated, huge-headed, NaN or
complex weight files, directories where files belong, outputs that cannot be written. Each must end with exit
code 2 and one line on stderr (or succeed with a valid output); never a traceback."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format

import structmat
from structmat.cli import COMMANDS, main

from .._fuzz_settings import FAST, SLOW
from .outcomes import Recorder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Weight files a user might pass, good and bad, by name."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    W = rng.standard_normal((12, 9))
    np.save(d / "good.npy", W)
    np.save(d / "nan.npy", np.where(W > 1, np.nan, W))
    np.save(d / "complex.npy", W + 1j)
    np.save(d / "vector.npy", W[0])
    np.save(d / "empty.npy", np.zeros((0, 4)))
    np.save(d / "object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    raw = (d / "good.npy").read_bytes()
    (d / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 10**9)})
    (d / "huge.npy").write_bytes(header.getvalue() + b"\0" * 64)
    np.savez(d / "two.npz", a=W, b=W)
    packed = io.BytesIO()
    np.savez(packed, W=W)
    (d / "truncated.npz").write_bytes(packed.getvalue()[:-40])
    crc = bytearray(packed.getvalue())
    crc[200] ^= 0xFF
    (d / "crc.npz").write_bytes(bytes(crc))
    (d / "text.npy").write_text("1 2 3\n")
    (d / "a_dir").mkdir()
    structmat.approximate(W, "lowrank", 0.5).save(d / "matrix.npz")
    (d / "not_a_dir").write_text("x")
    return d


WEIGHTS = ["good.npy", "nan.npy", "complex.npy", "vector.npy", "empty.npy", "object.npy", "truncated.npy", "huge.npy",
           "two.npz", "two.npz:b", "two.npz:zz", "truncated.npz", "crc.npz", "text.npy", "a_dir", "missing.npy",
           "matrix.npz", "gaussian:6x4", "gaussian:0x4", "powerlaw:5x5:3", "efficientnet_lite0:nope", "nonsense:"]
FAMILY_ARGS = ["lowrank", "sss", "sparse", "hodlr", "monarch", "dense", "nope", "LowRank", ""]
BUDGETS = ["0.5", "0.25", "1.0", "40", "1", "0", "-1", "5.0", "nan", "inf", "abc", "1e-9", "0x10", ""]
OUTPUTS = ["out.npz", "a_dir", "missing_dir/out.npz", "not_a_dir/out.npz", "out.npz"]


@st.composite
def approximate_argv(draw, d: Path):
    weight = draw(st.sampled_from(WEIGHTS))
    spec = str(d / weight) if not weight.startswith(("gaussian", "powerlaw", "efficientnet", "nonsense")) else weight
    argv = ["approximate", spec, "-f", draw(st.sampled_from(FAMILY_ARGS)), "-b", draw(st.sampled_from(BUDGETS)),
            "-o", str(d / draw(st.sampled_from(OUTPUTS)))]
    if draw(st.booleans()):
        argv += draw(st.sampled_from([["--option", "rank=3"], ["--option", "nope"], ["--option", "seed=1"],
                                      ["--threads", "0"], ["--threads", "2"], ["--bogus"], ["--report"],
                                      ["--report", str(d / "a_dir")]]))
    return argv


@st.composite
def other_argv(draw, d: Path):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    junk = draw(st.lists(st.sampled_from(["--bogus", "-b", "abc", "--threads", "-1", "--threads", "x", "-f",
                                          "nope", "--epochs", "-3", "--repeats", "zz", str(d / "a_dir"),
                                          str(d / "missing.npy"), "-m", "gaussian:0x0", "--budget", "7.5"]),
                         min_size=1, max_size=4))
    argv = [command, *junk]
    if "--bogus" not in argv and command not in ("info",):
        argv.append("--bogus")  # keep the run from doing real work: the mistakes must be caught first
    return argv


def _judge(recorder, case, argv, capsys, d):
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - a traceback: the defect this looks for
        recorder.record(case, "defect", f"traceback: {type(exc).__name__}: {exc}")
        return
    out, err = capsys.readouterr()

    def check():
        if argv[0] != "approximate":
            return None
        output = Path(argv[argv.index("-o") + 1])
        report = Path(argv[argv.index("--report") + 1]) if "--report" in argv else output.with_suffix(".json")
        structmat.load(output)
        json.loads(report.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        return None

    recorder.cli(case, code, err, check=check)


def _run(request, capsys, files, data, long=False):
    recorder = Recorder(request, "command line")
    argv = data.draw(st.one_of(approximate_argv(files), other_argv(files)), label="argv")
    _judge(recorder, " ".join(argv), argv, capsys, files)


@settings(max_examples=FAST * 8)
@given(data=st.data())
def test_command_line_mistakes(request, capsys, files, data):
    _run(request, capsys, files, data)


@pytest.mark.slow
@settings(max_examples=SLOW * 8)
@given(data=st.data())
def test_command_line_mistakes_long(request, capsys, files, data):
    _run(request, capsys, files, data)


@pytest.mark.parametrize("argv", [
    ["info", "{d}/a_dir"], ["info", "{d}/crc.npz"], ["info", "{d}/huge.npy"], ["info", "{d}/truncated.npz"],
    ["approximate", "{d}/truncated.npz", "-f", "lowrank", "-b", "0.5", "-o", "{d}/o.npz"],
    ["approximate", "gaussian:12x9", "-f", "lowrank", "-b", "0.5", "-o", "{d}/a_dir"],
    ["approximate", "gaussian:12x9", "-f", "lowrank", "-b", "0.5", "-o", "{d}/missing_dir/o.npz"],
    ["sweep", "-m", "gaussian:8x6", "-f", "lowrank", "sss", "-b", "5.0"],
    ["sweep", "-m", "gaussian:8x6", "-f", "lowrank", "-b", "0.5", "--bogus"],
    ["bench-layers", "-m", "gaussian:8x6", "-f", "lowrank", "sss", "--batch", "x"],
    ["finetune", "{d}/a_dir", "-b", "5.0"], ["finetune", "{d}/a_dir", "-f", "lowrank", "sss", "--bogus", "-v"],
])
def test_issue_examples(request, capsys, files, argv):
    """The mistakes reported by users, each one line and exit 2."""
    recorder = Recorder(request, "command line")
    argv = [a.format(d=files) for a in argv]
    _judge(recorder, " ".join(argv), argv, capsys, files)
    assert recorder  # recorded above


def test_verbose_after_the_command_and_repeated_families(tmp_path, capsys):
    code = main(["sweep", "-m", "gaussian:8x6", "-f", "lowrank", "sss", "-b", "0.5", "-o", str(tmp_path), "-q", "-v"])
    assert code == 0
    rows = (tmp_path / "sweep.csv").read_text().splitlines()
    assert sum(",lowrank," in r for r in rows) == 1 and sum(",sss," in r for r in rows) == 1
