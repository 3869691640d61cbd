import numpy as np
import pytest
import torch
from torch import nn

from structmat.compress.calibration import attention_mask_rows, call_model, collect_statistics
from structmat.compress.selection import select_layers

from tests.compress.conftest import token_batches


def test_statistics_are_the_second_moment_of_the_unpadded_rows(tiny_transformer, one_torch_thread):
    batches = token_batches(3, seed=0)
    layers = select_layers(tiny_transformer, "blocks.0.query")
    seen = []
    handle = layers[0][1].register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    stats = collect_statistics(tiny_transformer, layers, batches, row_mask=attention_mask_rows)
    handle.remove()
    rows = torch.cat([x[b["attention_mask"].bool()] for x, b in zip(seen, batches)]).double().numpy()
    s = stats["blocks.0.query"]
    assert s.count == rows.shape[0] == sum(int(b["attention_mask"].sum()) for b in batches)
    assert np.allclose(s.second_moment, rows.T @ rows / rows.shape[0], rtol=1e-5)


def test_a_pointwise_convolution_sees_one_row_per_output_pixel(tiny_convnet):
    images = [torch.randn(2, 3, 6, 6)]
    stats = collect_statistics(tiny_convnet, select_layers(tiny_convnet, ["expand", "project"]), images)
    assert stats["expand"].count == 2 * 6 * 6
    assert stats["project"].count == 2 * 3 * 3  # stride 2


def test_items_are_passed_as_keywords_positionals_or_one_argument():
    model = nn.Bilinear(2, 3, 1)
    assert call_model(model, (torch.ones(1, 2), torch.ones(1, 3))).shape == (1, 1)
    assert call_model(model, {"input1": torch.ones(1, 2), "input2": torch.ones(1, 3)}).shape == (1, 1)
    assert call_model(nn.Linear(2, 1), torch.ones(1, 2)).shape == (1, 1)


def test_a_convolution_that_pads_in_forward_is_refused():
    class PaddedConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 1, 1, 1)))

    model = nn.Sequential(PaddedConv(3, 4, 1))
    with pytest.raises(ValueError, match="does not compute a plain 1x1 convolution"):
        collect_statistics(model, select_layers(model), [torch.randn(1, 3, 4, 4)])


def test_no_items_or_a_silent_layer_is_an_error(tiny_convnet):
    with pytest.raises(ValueError, match="calibration held no items"):
        collect_statistics(tiny_convnet, select_layers(tiny_convnet), [])
    model = nn.ModuleDict({"used": nn.Linear(2, 2), "unused": nn.Linear(2, 2)})
    model.forward = lambda x: model["used"](x)
    with pytest.raises(ValueError, match=r"\['unused'\] saw no input rows"):
        collect_statistics(model, select_layers(model), [torch.ones(1, 2)])
