import pytest
import torch
from torch import nn

from structmat.approximators import approximate
from structmat.layers.base import layer_from_matrix
from structmat.layers.pointwise_conv import StructuredPointwiseConv2d, pointwise_geometry


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 0), ((1, 2), 1), (3, (0, 2))])
def test_structured_pointwise_conv_equals_the_convolution(stride, padding, one_torch_thread):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1, stride=stride, padding=padding)
    weight = conv.weight.detach().double().numpy().reshape(5, 6)
    M = approximate(weight, "dense", 1.0)
    layer = StructuredPointwiseConv2d.from_conv2d(conv, layer_from_matrix(M, conv.bias.detach()))
    x = torch.randn(2, 6, 7, 9)
    assert torch.allclose(layer(x), conv(x), atol=1e-5)
    assert layer.nparams == 30 and layer.family == "dense"


def test_bad_inputs_and_geometries_are_refused():
    conv = nn.Conv2d(4, 3, 1)
    layer = StructuredPointwiseConv2d.from_conv2d(conv, layer_from_matrix(approximate(
        conv.weight.detach().double().numpy().reshape(3, 4), "lowrank", 0.9)))
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 4, H, W\); got \(2, 3, 5, 5\)"):
        layer(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        pointwise_geometry(nn.Conv2d(4, 3, 1, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="kernel 1x1, groups=1"):
        pointwise_geometry(nn.Conv2d(4, 4, 1, groups=2))
