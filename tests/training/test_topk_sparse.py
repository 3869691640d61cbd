import math

import pytest
import torch
from torch import nn

from structmat.training import TopKSparseConv2d, TopKSparseLinear, allocate_densities, erk_densities


def _grads(module, x, gy_seed=0):
    y = module(x)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(gy_seed), dtype=y.dtype)
    return (y, *torch.autograd.grad(y, [x, module.weight, module.bias], gy)), gy


def test_linear_at_sparsity_zero_equals_nn_linear():
    torch.manual_seed(0)
    dense = nn.Linear(12, 7)
    layer = TopKSparseLinear.from_linear(dense, sparsity=0.0)
    x = torch.randn(2, 5, 12, requires_grad=True)
    for a, b in zip(_grads(dense, x)[0], _grads(layer, x)[0]):
        torch.testing.assert_close(a, b)
    assert layer.last_cost.reduction == 0.0 and layer.nparams == 84


@pytest.mark.parametrize("structure", ["unstructured", "channel"])
@pytest.mark.parametrize("padding, groups", [(1, 1), ("same", 1), (0, 2)])
def test_conv_at_sparsity_zero_equals_nn_conv2d(structure, padding, groups):
    torch.manual_seed(0)
    dense = nn.Conv2d(4, 6, 3, padding=padding, groups=groups)
    layer = TopKSparseConv2d.from_conv2d(dense, sparsity=0.0, structure=structure)
    x = torch.randn(3, 4, 7, 6, requires_grad=True)
    for a, b in zip(_grads(dense, x)[0], _grads(layer, x)[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_linear_forward_and_backward_use_sparse_weights_and_activations():
    torch.manual_seed(0)
    layer = TopKSparseLinear(10, 6, sparsity=0.7, activation_sparsity=0.5, dtype=torch.float64)
    x = torch.randn(8, 10, dtype=torch.float64, requires_grad=True)
    (y, gx, gw, gb), gy = _grads(layer, x)
    W = layer.weight.detach()
    w_sparse = W * (W.abs() >= torch.topk(W.abs().flatten(), 18).values[-1])
    x_sparse = x.detach() * (x.detach().abs() >= torch.topk(x.detach().abs().flatten(), 40).values[-1])
    assert int((w_sparse != 0).sum()) == 18 and int((x_sparse != 0).sum()) == 40
    torch.testing.assert_close(y, x.detach() @ w_sparse.T + layer.bias.detach())  # dense activations forward
    torch.testing.assert_close(gx, gy @ w_sparse)
    torch.testing.assert_close(gw, gy.T @ x_sparse)
    torch.testing.assert_close(gb, gy.sum(0))
    # the weight gradient is dense: pruned weights receive gradient and can come back
    assert (gw[w_sparse == 0] != 0).any()
    assert layer.last_weight_density == pytest.approx(0.3) and layer.last_activation_density == pytest.approx(0.5)
    cost = layer.last_cost
    assert cost.reduction == pytest.approx(1 - (0.3 + 0.3 + 0.5) / 3)


def test_conv_weight_gradient_uses_top_k_activations():
    torch.manual_seed(0)
    layer = TopKSparseConv2d(3, 4, 3, padding=1, sparsity=0.5, dtype=torch.float64)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    (y, gx, gw, gb), gy = _grads(layer, x)
    mask = layer.weight_mask()
    x_sparse = x.detach() * (x.detach().abs() >= layer.activation_threshold)
    assert layer.last_activation_density == pytest.approx(math.ceil(0.5 * x.numel()) / x.numel())
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, layer.weight * mask, layer.bias, padding=1))
    torch.testing.assert_close(gw, torch.nn.grad.conv2d_weight(x_sparse, layer.weight.shape, gy, padding=1))
    torch.testing.assert_close(gx, torch.nn.grad.conv2d_input(x.shape, layer.weight.detach() * mask, gy, padding=1))


def test_threshold_is_recomputed_every_topk_period_steps():
    torch.manual_seed(0)
    layer = TopKSparseLinear(20, 10, sparsity=0.5, topk_period=3)
    x = torch.randn(4, 20)
    thresholds = []
    for step in range(7):
        with torch.no_grad():
            layer.weight.mul_(1.5)  # every entry grows, so a refreshed threshold grows too
        layer(x)
        thresholds.append(float(layer.weight_threshold))
    assert int(layer.topk_step) == 7
    changed = [step for step in range(1, 7) if thresholds[step] != thresholds[step - 1]]
    assert changed == [3, 6]
    # between refreshes the stale threshold keeps more than half of the grown weights
    assert layer.last_weight_density == 0.5  # step 6 refreshed
    layer(x)
    assert layer.last_weight_density == 0.5  # unchanged weights, stale but equal threshold
    with torch.no_grad():
        layer.weight.mul_(1.5)
    layer(x)
    assert layer.last_weight_density > 0.5


def test_eval_uses_the_exact_top_k_and_changes_no_state():
    torch.manual_seed(0)
    layer = TopKSparseLinear(10, 4, sparsity=0.75, topk_period=100)
    x = torch.randn(3, 10)
    layer(x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()
    y = layer(x)
    torch.testing.assert_close(y, x @ layer.sparse_weight().T + layer.bias)
    assert int((layer.sparse_weight() != 0).sum()) == 10 == layer.nparams
    for key, value in layer.state_dict().items():
        assert torch.equal(value, state[key])
    assert {"weight_threshold", "activation_threshold", "topk_step"} <= set(state)


def test_channel_structure_prunes_whole_slices_and_columns():
    torch.manual_seed(0)
    conv = TopKSparseConv2d(4, 6, 3, sparsity=0.5, structure="channel")
    conv(torch.randn(2, 4, 5, 5))
    slices = conv.weight_mask().reshape(6, 4, 9)
    assert torch.all(slices.all(-1) | ~slices.any(-1))  # each kernel slice kept or dropped whole
    assert int(slices.all(-1).sum()) == 12
    linear = TopKSparseLinear(8, 5, sparsity=0.75, structure="channel")
    linear(torch.randn(3, 8))
    columns = linear.weight_mask()
    assert torch.all(columns.all(0) | ~columns.any(0)) and int(columns.all(0).sum()) == 2
    l1 = linear.weight.detach().abs().sum(0)
    assert set(torch.nonzero(columns.all(0)).flatten().tolist()) == set(torch.topk(l1, 2).indices.tolist())


def test_bad_options_raise():
    with pytest.raises(ValueError, match=r"sparsity must be a float in \[0, 1\)"):
        TopKSparseLinear(4, 4, sparsity=1.0)
    with pytest.raises(ValueError, match="structure must be one of"):
        TopKSparseLinear(4, 4, structure="filter")
    with pytest.raises(ValueError, match="topk_period"):
        TopKSparseLinear(4, 4, topk_period=0)


# ------------------------------------------------------------------------------------------------ allocation
def test_erk_keeps_the_total_and_favours_small_layers():
    shapes = [(32, 3, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3), (10, 128)]
    sizes = [math.prod(s) for s in shapes]
    for density in (0.5, 0.3, 0.1):
        d = erk_densities(shapes, density)
        assert all(0 < x <= 1 for x in d)
        assert sum(x * n for x, n in zip(d, sizes)) == pytest.approx(density * sum(sizes))
        assert d[0] >= d[1] >= d[2]  # the larger, the sparser
    assert erk_densities(shapes, 0.1)[0] == 1.0  # the small first layer is capped at dense
    # ERK raw densities are (sum of dimensions) / (product of dimensions) up to a common factor
    d = erk_densities([(100, 100), (50, 200)], 0.2)
    assert d[0] / d[1] == pytest.approx((200 / 10000) / (250 / 10000))


def test_allocate_uniform_and_errors():
    assert allocate_densities([(4, 4), (8, 2)], 0.75) == [0.25, 0.25]
    with pytest.raises(ValueError, match="distribution must be one of"):
        allocate_densities([(4, 4)], 0.5, "momentum")


# ------------------------------------------------------------------------------------------------ export
def test_linear_exports_its_sparse_weight_as_a_sparse_matrix(tmp_path):
    import numpy as np

    import structmat
    from structmat.layers import layer_from_matrix

    torch.manual_seed(0)
    layer = TopKSparseLinear(12, 7, sparsity=0.8, topk_period=4)
    for _ in range(3):
        layer(torch.randn(16, 12)).square().sum().backward()
        with torch.no_grad():
            layer.weight -= 0.1 * layer.weight.grad
        layer.weight.grad = None
    layer.eval()
    M = layer.to_matrix()
    assert M.family == "sparse" and M.shape == (7, 12) and M.dtype == np.float64
    assert M.nparams == layer.nparams == math.ceil(0.2 * 84)
    np.testing.assert_array_equal(M.to_dense(), layer.sparse_weight().double().numpy())
    x = torch.randn(5, 12)
    np.testing.assert_allclose(M @ x.double().numpy().T, (layer(x) - layer.bias).detach().double().numpy().T,
                               rtol=1e-5, atol=1e-6)
    rebuilt = layer_from_matrix(M, layer.bias)  # the sparse family's own layer computes the same function
    torch.testing.assert_close(rebuilt(x), layer(x), rtol=1e-5, atol=1e-6)
    M.save(tmp_path / "w.npz")
    assert structmat.load(tmp_path / "w.npz").nparams == M.nparams


def test_conv_exports_its_im2col_matrix():
    import numpy as np

    torch.manual_seed(0)
    layer = TopKSparseConv2d(3, 4, 3, padding=1, sparsity=0.5, structure="channel").eval()
    M = layer.to_matrix()
    assert M.shape == (4, 27) and M.nparams == 6 * 9  # 6 of the 12 kernel slices, 9 weights each
    x = torch.randn(2, 3, 5, 5)
    patches = torch.nn.functional.unfold(x, 3, padding=1).double().numpy()  # (2, 27, 25)
    out = np.stack([M @ p for p in patches]).reshape(2, 4, 5, 5)
    np.testing.assert_allclose(out, (layer(x) - layer.bias.view(1, -1, 1, 1)).detach().numpy(), rtol=1e-5, atol=1e-5)
