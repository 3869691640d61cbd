import json

import numpy as np
import torch

from structmat.cli import main
from structmat.compress import load_compressed

from tests.compress.conftest import TinyConvNet


def test_compress_command_on_a_state_dict(tmp_path, capsys, one_torch_thread):
    torch.manual_seed(1)
    torch.save(TinyConvNet().state_dict(), tmp_path / "model.pt")
    np.save(tmp_path / "images.npy", np.random.default_rng(0).standard_normal((24, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "out"
    code = main(["compress", str(tmp_path / "model.pt"), "--module", "tests.compress.conftest:TinyConvNet",
                 "--budget", "0.5", "--calibration", str(tmp_path / "images.npy"), "--family", "lowrank",
                 "--family", "dense", "--where", "expand", "--where", "fc", "--max-slowdown", "none", "--cache-dir", str(tmp_path / "cache"),
                 "--distill", "2", "-o", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "budget 0.5 (params), allocation global" in printed and "distillation:" in printed
    report = json.loads((out / "compress.json").read_text())
    assert report["totals"]["nparams"] <= 0.5 * report["totals"]["dense_nparams"]
    base = TinyConvNet()
    base.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    loaded = load_compressed(out / "model.safetensors", base)
    assert loaded(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_compress_command_errors_are_one_line(tmp_path, capsys):
    code = main(["compress", str(tmp_path / "model.pt"), "--budget", "0.5", "--calibration", "x.npy"])
    assert code == 2
    assert "needs --module package.module:Class" in capsys.readouterr().err
