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


def test_distillation_validates_on_items_after_the_calibration_items(tmp_path, capsys, one_torch_thread,
                                                                      monkeypatch):
    import structmat.compress

    torch.manual_seed(1)
    torch.save(TinyConvNet().state_dict(), tmp_path / "model.pt")
    images = np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    seen = {}
    real = structmat.compress.distill_model

    def spy(student, teacher, batches, **kwargs):
        seen["train"], seen["validation"] = torch.cat(list(batches)), torch.cat(kwargs["validation"])
        return real(student, teacher, batches, **kwargs)

    monkeypatch.setattr(structmat.compress, "distill_model", spy)
    code = main(["compress", str(tmp_path / "model.pt"), "--module", "tests.compress.conftest:TinyConvNet",
                 "--budget", "0.5", "--calibration", str(tmp_path / "images.npy"), "--count", "24",
                 "--batch-size", "8", "--validation-count", "10", "--family", "lowrank", "--family", "dense",
                 "--max-slowdown", "none", "--cache-dir", str(tmp_path / "cache"), "--distill", "1",
                 "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    assert torch.equal(seen["train"], torch.from_numpy(images[:24]))
    assert torch.equal(seen["validation"], torch.from_numpy(images[24:34]))


def test_held_out_subset_is_disjoint_from_the_limited_dataset():
    from structmat.features import ArrayDataset, limit_dataset
    from structmat.features.datasets import held_out_subset

    dataset = ArrayDataset(np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1), np.zeros(50, dtype=np.int64))
    chosen = {float(limit_dataset(dataset, 20)[i][0].ravel()[0]) for i in range(20)}
    rest = held_out_subset(dataset, 20, 12)
    others = [float(rest[i][0].ravel()[0]) for i in range(len(rest))]
    assert len(others) == 12 and not chosen & set(others) and others == sorted(others)
    assert len(held_out_subset(dataset, 20, 100)) == 30
    assert held_out_subset(dataset, 50, 5) is None and held_out_subset(dataset, 20, 0) is None
