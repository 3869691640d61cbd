import copy
import json

import pytest
import torch

from structmat import StructmatFileError
from structmat.compress import load_compressed, save_compressed
from structmat.families import get_family, structured_family_names
from structmat.layers import replace_linear
from structmat.layers.base import layer_from_matrix
from structmat.layers.pointwise_conv import StructuredPointwiseConv2d
from structmat.approximators import approximate


def perturbed(model):
    with torch.no_grad():  # as training leaves it: values no fit would give
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("family", structured_family_names())
def test_round_trip_gives_identical_outputs(family, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 12))
    model = copy.deepcopy(base)
    M = get_family(family).matrix_class.random((16, 20), seed=1)
    model[0] = perturbed(layer_from_matrix(M, base[0].bias.detach()))
    path = save_compressed(model, tmp_path / "model.safetensors")
    fresh = load_compressed(path, copy.deepcopy(base))
    assert type(fresh[0]) is type(model[0])
    x = torch.randn(5, 20)
    assert torch.equal(fresh(x), model(x))


def test_round_trip_of_a_pointwise_convolution_and_other_weights(tiny_convnet, tmp_path):
    conv = tiny_convnet.expand
    M = approximate(conv.weight.detach().double().numpy().reshape(24, 8), "lowrank", 0.5)
    model = copy.deepcopy(tiny_convnet)
    model.expand = StructuredPointwiseConv2d.from_conv2d(conv, layer_from_matrix(M, conv.bias.detach()))
    path = save_compressed(model, tmp_path / "conv.safetensors")
    fresh = load_compressed(path, copy.deepcopy(tiny_convnet))
    x = torch.randn(2, 3, 6, 6)
    assert isinstance(fresh.expand, StructuredPointwiseConv2d) and torch.equal(fresh(x), model(x))
    with pytest.raises(StructmatFileError, match="other \\(non-structured\\) weights differ"):
        load_compressed(path, perturbed(copy.deepcopy(tiny_convnet)))
    path = save_compressed(model, tmp_path / "all.safetensors", include_other_weights=True)
    fresh = load_compressed(path, perturbed(copy.deepcopy(tiny_convnet)))
    assert torch.equal(fresh(x), model(x))


def test_mismatched_truncated_and_foreign_files_are_refused(tiny_convnet, tmp_path):
    model = replace_linear(tiny_convnet, "lowrank", 0.5, where="fc")
    path = save_compressed(model, tmp_path / "m.safetensors")
    other = torch.nn.Sequential(torch.nn.Linear(16, 10))
    with pytest.raises(StructmatFileError, match="does not match the model: it has no module 'fc'"):
        load_compressed(path, other)
    wrong = copy.deepcopy(tiny_convnet)
    wrong.fc = torch.nn.Linear(16, 11)
    with pytest.raises(StructmatFileError, match="'fc' is 10x16 in the file"):
        load_compressed(path, wrong)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(StructmatFileError, match="not a readable safetensors file"):
        load_compressed(tmp_path / "cut.safetensors", copy.deepcopy(tiny_convnet))
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "pickled.pt")
    with pytest.raises(StructmatFileError, match="not a readable safetensors file"):
        load_compressed(tmp_path / "pickled.pt", copy.deepcopy(tiny_convnet))
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"a": np.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(StructmatFileError, match="not a structmat compressed model"):
        load_compressed(tmp_path / "plain.safetensors", copy.deepcopy(tiny_convnet))
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / "missing.safetensors", copy.deepcopy(tiny_convnet))
    with pytest.raises(ValueError, match="no structured layers"):
        save_compressed(tiny_convnet, tmp_path / "none.safetensors")


def test_the_description_names_layers_families_and_format(tiny_convnet, tmp_path):
    from safetensors import safe_open

    path = save_compressed(replace_linear(tiny_convnet, "sparse", 0.5, where="fc"), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="np") as f:
        description = json.loads(f.metadata()["structmat"])
    assert description["format"] == "structmat-compressed-model" and description["format_version"] == 1
    (layer,) = description["layers"]
    assert layer["name"] == "fc" and layer["family"] == "sparse" and layer["kind"] == "linear"


def test_models_with_scalar_buffers_round_trip(tmp_path):
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8)).eval()  # num_batches_tracked: 0-d
    model = replace_linear(base, "lowrank", 0.9)
    path = save_compressed(model, tmp_path / "bn.safetensors")
    x = torch.randn(3, 6)
    assert torch.equal(load_compressed(path, copy.deepcopy(base))(x), model(x))
