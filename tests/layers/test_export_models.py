"""Whole compressed models and the command line: export, run elsewhere, stored sizes."""

import io

import numpy as np
import pytest
import torch

import structmat
from structmat.cli import main
from structmat.layers import replace_linear
from structmat.layers.export import export_onnx, export_program, onnx_initializer_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.GELU(), torch.nn.Linear(64, 56), torch.nn.ReLU(),
                               torch.nn.Linear(56, 10))


@pytest.mark.parametrize("family", ["sparse", "hodlr", "sss", "monarch"])
def test_compressed_model_exports_and_saves_compactly(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = replace_linear(small_model(), family, 0.5, where="[01234]")
    x = torch.randn(5, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    path = export_onnx(model, torch.zeros(2, 48), tmp_path / "model.onnx")
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_0": x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5 * float(expected.abs().max()))
    structured = [m for m in model.modules() if hasattr(m, "to_matrix")]
    accounted = sum(m.to_matrix().nbytes + 4 * m.out_features for m in structured)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    tensors = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert tensors <= 1.1 * accounted
    assert onnx_initializer_count(path) <= 1.1 * sum(m.to_matrix().nparams + m.to_matrix().nindices + m.out_features
                                                     for m in structured)
    with torch.no_grad():
        torch.testing.assert_close(export_program(model, torch.zeros(2, 48), strict=False).module()(x), expected)


def test_export_command_writes_onnx_and_pt2(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    M = structmat.matrices.sss.SSS.random((24, 20), seed=0)
    M.save(tmp_path / "m.npz")
    assert main(["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "numbers stored" in capsys.readouterr().out
    x = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input_0": x})
    np.testing.assert_allclose(got[0], x @ M.to_dense().T, rtol=1e-5, atol=1e-5)
    assert main(["export", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.pt2"), "--non-strict"]) == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    np.testing.assert_allclose(program.module()(torch.from_numpy(x)).detach().numpy(), x @ M.to_dense().T,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["export", "nonsense", "-o", "x.onnx"], "must be a structured matrix .npz or one of"),
    (["export", "missing.npz", "-o", "x.onnx"], "no such file"),
    (["export", "efficientnet_lite0", "-o", "x.onnx", "--family", "lowrank"], "--family and --budget go together"),
    (["export", "efficientnet_lite0", "-o", "x.txt"], "--format must be one of"),
])
def test_export_command_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_onnx_speed_benchmark_small(tmp_path):
    pytest.importorskip("onnxruntime")
    from structmat.benchmarks.onnx_speed import run_onnx_speed

    W = np.random.default_rng(0).standard_normal((40, 56))
    rows = run_onnx_speed({"w": W}, ["lowrank", "sparse"], 0.25, batch_sizes=(1, 3), repeats=3,
                          csv_path=tmp_path / "onnx_speed.csv")
    assert {(r["family"], r["batch"]) for r in rows} == {(f, b) for f in ("dense", "lowrank", "sparse") for b in (1, 3)}
    for r in rows:
        assert r["ort_ms"] > 0 and r["max_relative_error"] < 1e-5 and r["cpu"]
        assert r["stored_numbers"] <= (40 * 56 + 40 if r["family"] == "dense" else 2.2 * r["nparams"] + 100)
    assert (tmp_path / "onnx_speed.json").exists()


@pytest.mark.slow
def test_efficientnet_lite0_with_a_structured_classifier_exports(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    ort = pytest.importorskip("onnxruntime")
    assert main(["export", "efficientnet_lite0", "--family", "lowrank", "--budget", "0.25", "--where", "_fc",
                 "--image-size", "96", "-o", str(tmp_path / "lite0.onnx")]) == 0
    from structmat.features.backbones import efficientnet_lite0

    model = efficientnet_lite0(96).model.to(memory_format=torch.contiguous_format).eval()
    model = replace_linear(model, "lowrank", 0.25, where="_fc", inplace=True)
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(tmp_path / "lite0.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input_0": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    dense_fc = 1000 * 1280
    assert onnx_initializer_count(tmp_path / "lite0.onnx") < sum(p.numel() for p in model.parameters()) + dense_fc / 10
