import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structmat.training import SampledConv2d, SampledLinear
from structmat.training.sampled import MODES


def _grads(module, x):
    y = module(x)
    loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum() + y.square().sum()
    params = [module.weight, module.bias]
    return (y, *torch.autograd.grad(loss, [x, *params]))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scheme", ["topk", "crs", "bernoulli"])
def test_linear_at_full_budget_equals_nn_linear(mode, scheme):
    torch.manual_seed(0)
    dense = nn.Linear(12, 7)
    layer = SampledLinear.from_linear(dense, sample_ratio=1.0, scheme=scheme, mode=mode)
    x = torch.randn(3, 5, 12, requires_grad=True)
    for a, b in zip(_grads(dense, x), _grads(layer, x)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert layer.last_cost.reduction == pytest.approx(0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding, padding_mode", [(1, "zeros"), ("same", "zeros"), (1, "reflect"), (0, "zeros")])
def test_conv_at_full_budget_equals_nn_conv2d(mode, padding, padding_mode):
    torch.manual_seed(0)
    dense = nn.Conv2d(5, 4, 3, stride=1 if padding == "same" else 2, padding=padding, padding_mode=padding_mode)
    layer = SampledConv2d.from_conv2d(dense, sample_ratio=1.0, mode=mode)
    x = torch.randn(3, 5, 9, 8, requires_grad=True)
    for a, b in zip(_grads(dense, x), _grads(layer, x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_forward_topk_gradients_are_those_of_the_sampled_product():
    torch.manual_seed(0)
    layer = SampledLinear(10, 4, sample_ratio=0.4, mode="forward", dtype=torch.float64)
    x = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    y, gx, gw, gb = _grads(layer, x)
    scores = x.detach().norm(dim=0) * layer.weight.detach().norm(dim=0)
    kept = torch.topk(scores, 4).indices
    mask = torch.zeros(10, dtype=torch.float64)
    mask[kept] = 1
    reference = nn.Linear(10, 4, dtype=torch.float64)
    reference.weight.data.copy_(layer.weight.data)
    reference.bias.data.copy_(layer.bias.data)
    # the sampled product is the layer applied to the masked input
    masked = lambda inp: F.linear(inp * mask, reference.weight, reference.bias)  # noqa: E731
    y_ref = masked(x)
    loss = (y_ref * torch.linspace(-1, 1, y_ref.numel(), dtype=y_ref.dtype).reshape(y_ref.shape)).sum() \
        + y_ref.square().sum()
    gx_ref, gw_ref, gb_ref = torch.autograd.grad(loss, [x, reference.weight, reference.bias])
    for a, b in ((y, y_ref), (gx, gx_ref), (gw, gw_ref), (gb, gb_ref)):
        torch.testing.assert_close(a, b)
    assert torch.all(gw[:, mask == 0] == 0) and torch.all(gx[:, mask == 0] == 0)
    assert layer.last_num_pairs == {"forward": 4, "input_grad": 4, "weight_grad": 4}
    assert layer.last_cost.reduction == pytest.approx(0.6)


def test_eval_mode_is_exact_and_seeded_layers_repeat():
    torch.manual_seed(0)
    dense = nn.Linear(16, 5)
    layer = SampledLinear.from_linear(dense, sample_ratio=0.25, scheme="bernoulli", seed=3)
    x = torch.randn(8, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), dense(x))
    layer.train()
    twin = copy.deepcopy(layer)
    y1 = layer(x)
    assert not torch.allclose(y1, dense(x))
    torch.testing.assert_close(y1, twin(x))
    torch.testing.assert_close(SampledLinear.from_linear(dense, sample_ratio=0.25, scheme="bernoulli", seed=3)(x), y1)


def test_blackbox_has_the_exact_backward():
    torch.manual_seed(0)
    dense = nn.Linear(10, 3)
    layer = SampledLinear.from_linear(dense, sample_ratio=0.3, mode="blackbox")
    x = torch.randn(4, 10, requires_grad=True)
    y = layer(x)
    assert not torch.allclose(y, dense(x))
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, layer.weight], gy)
    torch.testing.assert_close(gx, gy @ dense.weight)
    torch.testing.assert_close(gw, gy.T @ x)


def test_backward_mode_samples_each_gradient_with_its_own_ratio():
    torch.manual_seed(0)
    dense = nn.Linear(10, 20)
    layer = SampledLinear.from_linear(dense, sample_ratio=0.5, mode="backward", sample_ratio_input_grad=0.25,
                                      sample_ratio_weight_grad=0.5)
    x = torch.randn(16, 10, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, dense(x))  # exact forward
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, [x, layer.weight], gy)
    assert layer.last_num_pairs == {"forward": 10, "input_grad": 5, "weight_grad": 8}
    # top-k over output features: dx uses the 5 output features with the largest ||gy[:, o]|| ||W[o]||
    kept = torch.topk(gy.norm(dim=0) * dense.weight.detach().norm(dim=1), 5).indices
    torch.testing.assert_close(gx, gy[:, kept] @ dense.weight.detach()[kept])
    kept_rows = torch.topk(gy.norm(dim=1) * x.detach().norm(dim=1), 8).indices
    torch.testing.assert_close(gw, gy[kept_rows].T @ x.detach()[kept_rows])
    cost = layer.last_cost
    assert (cost.forward, cost.input_grad, cost.weight_grad) == (cost.dense, cost.dense / 4, cost.dense / 2)


def test_backward_mode_weight_gradient_is_unbiased_with_bernoulli():
    torch.manual_seed(0)
    dense = nn.Linear(6, 3, dtype=torch.float64)
    layer = SampledLinear.from_linear(dense, sample_ratio=0.5, mode="backward", scheme="bernoulli", seed=0)
    x = torch.randn(12, 6, dtype=torch.float64)
    gy = torch.randn(12, 3, dtype=torch.float64)
    grads = torch.stack([torch.autograd.grad(layer(x), layer.weight, gy)[0] for _ in range(2000)])
    stderr = grads.std(0) / 2000 ** 0.5
    assert ((grads.mean(0) - gy.T @ x).abs() / stderr).max() < 5.0


def test_conv_forward_samples_input_channels():
    torch.manual_seed(0)
    layer = SampledConv2d(8, 4, 3, padding=1, sample_ratio=0.5)
    x = torch.randn(2, 8, 6, 6)
    x[:, 5] = 0  # a zero channel is never among the top 4
    y = layer(x)
    assert y.shape == (2, 4, 6, 6) and layer.last_num_pairs["forward"] == 4
    y.sum().backward()
    assert torch.all(layer.weight.grad[:, 5] == 0)
    assert (layer.weight.grad.abs().sum((0, 2, 3)) > 0).sum() == 4


def test_conv_backward_mode_samples_channels_and_examples():
    torch.manual_seed(0)
    dense = nn.Conv2d(3, 8, 3, padding=1)
    layer = SampledConv2d.from_conv2d(dense, sample_ratio=0.5, mode="backward")
    x = torch.randn(6, 3, 5, 5, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, dense(x))
    y.square().sum().backward()
    assert layer.last_num_pairs == {"forward": 3, "input_grad": 4, "weight_grad": 3}


def test_bad_options_raise():
    with pytest.raises(ValueError, match="groups=1"):
        SampledConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        SampledLinear(4, 4, mode="both")
    with pytest.raises(ValueError, match="mode='backward' only"):
        SampledLinear(4, 4, sample_ratio_input_grad=0.5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        SampledLinear(4, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        SampledConv2d(4, 4, 3)(torch.randn(2, 3, 5, 5))
    with pytest.raises(TypeError, match="nn.Linear"):
        SampledLinear.from_linear(nn.Conv2d(2, 2, 1))
