"""Every family's layer exports by the four routes (torch.export strict and non-strict, TorchScript trace with save
and reload, ONNX through the dynamo exporter run by ONNX Runtime), runs on a batch of another size, agrees with the
layer to 1e-5 relative, and stores about its own numbers, never the dense weight."""

import io

import numpy as np
import pytest
import torch

from structmat.families import FAMILIES
from structmat.layers import layer_from_matrix
from structmat.layers.export import export_onnx, export_program, onnx_initializer_count, trace_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (40, 48)


def _layer(family):
    M = FAMILIES[family].matrix_class.random(SHAPE, seed=3)
    return M, layer_from_matrix(M, np.random.default_rng(0).standard_normal(SHAPE[0]))


def _close(got, expected):
    got, expected = np.asarray(got, dtype=np.float64), expected.detach().double().numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


#: Families exported by the slower routes (strict export, ONNX) in the default run; `-m slow` exports them all.
DEFAULT_RUN = ("sss", "toeplitz_like")


@pytest.fixture(params=list(FAMILIES))
def family(request):
    return request.param


def _slow_unless_default(families=DEFAULT_RUN):
    return [pytest.param(f, marks=() if f in families else pytest.mark.slow) for f in FAMILIES]


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(3, SHAPE[1], generator=generator), torch.randn(7, SHAPE[1], generator=generator)


@pytest.mark.parametrize("family", _slow_unless_default())
def test_torch_export_strict(family, inputs):  # noqa: F811 (the family parameter overrides the fixture)
    test_torch_export(family, True, inputs)


@pytest.mark.parametrize("strict", [False])
@pytest.mark.parametrize("family", _slow_unless_default(tuple(f for f in FAMILIES if f != "ldr")))
def test_torch_export(family, strict, inputs):
    _, layer = _layer(family)
    example, other = inputs
    program = export_program(layer, example, strict=strict)
    with torch.no_grad():
        _close(program.module()(other), layer(other))
    names = {name for name, _ in program.named_parameters()} | {name for name, _ in program.named_buffers()}
    assert "weight" not in names or family == "dense"


def test_torchscript_trace_save_reload(family, inputs):
    _, layer = _layer(family)
    example, other = inputs
    buffer = io.BytesIO()
    torch.jit.save(trace_module(layer, example), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        _close(loaded(other), layer(other))


@pytest.mark.parametrize("family", _slow_unless_default())
def test_onnx_runtime(family, inputs, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    M, layer = _layer(family)
    example, other = inputs
    path = export_onnx(layer, example, tmp_path / "layer.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        _close(session.run(None, {"input_0": other.numpy()})[0], layer(other))
    assert onnx_initializer_count(path) <= 1.1 * (M.nparams + M.nindices + SHAPE[0])
    if family != "dense":
        assert onnx_initializer_count(path) < SHAPE[0] * SHAPE[1]


def test_ldr_traced_horner_matches_the_numba_weight():
    from structmat.layers._ldr_functions import ldr_dense
    from structmat.layers.ldr import _horner_weight

    _, layer = _layer("ldr")
    with torch.no_grad():
        W = _horner_weight(layer.A, layer.G, layer.B, layer.H, layer.size)
        expected = ldr_dense(layer.A, layer.G, layer.B, layer.H)
        torch.testing.assert_close(W, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_dynamic_batch_needs_two_rows():
    _, layer = _layer("lowrank")
    with pytest.raises(ValueError, match="at least 2 rows"):
        export_program(layer, torch.zeros(1, SHAPE[1]))
