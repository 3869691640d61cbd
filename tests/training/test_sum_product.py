import numpy as np
import pytest
import torch
from torch import nn

from structmat.training import STAGES, SumProductConv2d, SumProductLinear, ternarize
from structmat.training.sum_product import ternary_codes

# Strassen's algorithm for 2x2 matrices, row-major vec(A) = [a11, a12, a21, a22] (Strassen 1969):
# vec(A B) = W_c [(W_b vec(B)) * (W_a vec(A))] with 7 multiplications.
STRASSEN_A = [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]]
STRASSEN_B = [[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
STRASSEN_C = [[1, 0, 0, 1, -1, 0, 1], [0, 0, 1, 0, 1, 0, 0], [0, 1, 0, 1, 0, 0, 0], [1, -1, 1, 0, 0, 1, 0]]


def _bilinear_layer(W_a, W_b, W_c, A):
    """A SumProductLinear computing x = vec(B) -> vec(A B) for a fixed A: ã = W_a vec(A)."""
    W_a, W_b, W_c = (torch.tensor(w, dtype=torch.float64) for w in (W_a, W_b, W_c))
    layer = SumProductLinear(W_b.shape[1], W_c.shape[0], bias=False, num_multiplications=W_b.shape[0],
                             batchnorm=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_b.copy_(W_b)
        layer.weight_c.copy_(W_c)
        layer.scale.copy_(W_a @ A.reshape(-1))
    return layer


@pytest.mark.parametrize("stage", STAGES)
def test_strassen_2x2_with_seven_multiplications_is_exact(stage):
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(2, 2, generator=gen, dtype=torch.float64)
    B = torch.randn(16, 2, 2, generator=gen, dtype=torch.float64)
    layer = _bilinear_layer(STRASSEN_A, STRASSEN_B, STRASSEN_C, A)
    layer.set_stage(stage)  # the factors are already ternary, so quantising them changes nothing
    assert layer.multiplications == 7
    out = layer(B.reshape(16, 4)).reshape(16, 2, 2)
    torch.testing.assert_close(out, A @ B, rtol=0, atol=1e-12)
    folded = layer.fold() if stage != "full_precision" else None
    if folded is not None:
        np.testing.assert_allclose(folded(B.reshape(16, 4).numpy()), (A @ B).reshape(16, 4).numpy(), atol=1e-12)
        assert set(np.unique(folded.weight_b)) <= {-1, 0, 1}


def test_naive_construction_multiplies_3x4_by_4x5():
    k, m, n = 3, 4, 5
    W_a = np.zeros((k * m * n, k * m))
    W_b = np.zeros((k * m * n, m * n))
    W_c = np.zeros((k * n, k * m * n))
    for t, (i, j, l) in enumerate(np.ndindex(k, n, m)):
        W_a[t, i * m + l] = W_b[t, l * n + j] = W_c[i * n + j, t] = 1
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(k, m, generator=gen, dtype=torch.float64)
    B = torch.randn(7, m, n, generator=gen, dtype=torch.float64)
    layer = _bilinear_layer(W_a, W_b, W_c, A)
    torch.testing.assert_close(layer(B.reshape(7, -1)).reshape(7, k, n), A @ B, rtol=0, atol=1e-12)


def test_linear_with_enough_multiplications_equals_nn_linear():
    torch.manual_seed(0)
    dense = nn.Linear(9, 6, dtype=torch.float64)
    layer = SumProductLinear.from_linear(dense, 6)
    x = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    y_dense, y = dense(x), layer(x)
    torch.testing.assert_close(y, y_dense)
    gy = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, gy)[0], torch.autograd.grad(y_dense, x, gy)[0])
    # gradient of a weight entry through the factors: dL/dã_t = (W_c[:, t] . gy) (W_b[t] . x)
    g_scale = torch.autograd.grad(layer(x), layer.scale, gy)[0]
    expected = ((gy @ layer.weight_c.detach()) * (x.detach() @ layer.weight_b.detach().T)).sum((0, 1))
    torch.testing.assert_close(g_scale, expected)
    # more multiplications than min(in, out) still computes it
    torch.testing.assert_close(SumProductLinear.from_linear(dense, 11)(x), y_dense)


@pytest.mark.parametrize("out_patch", [1, 2, 3])
@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), (2, 0)])
@pytest.mark.parametrize("height", [7, 8])
def test_conv_with_embedded_filters_equals_nn_conv2d(out_patch, stride, padding, height):
    """r = c_out p²: W_b holds the filter at each of the p² offsets of the patch, W_c places them."""
    torch.manual_seed(0)
    c_in, c_out, k, p = 3, 4, 3, out_patch
    dense = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dtype=torch.float64)
    layer = SumProductConv2d(c_in, c_out, k, stride, padding, num_multiplications=c_out * p * p, out_patch=p,
                             batchnorm=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight_b.zero_()
        layer.weight_c.zero_()
        layer.bias.copy_(dense.bias)
        for o in range(c_out):
            for u in range(p):
                for v in range(p):
                    t = (o * p + u) * p + v
                    layer.weight_b[t, :, u * stride:u * stride + k, v * stride:v * stride + k] = dense.weight[o]
                    layer.weight_c[t, o, u, v] = 1.0
    x = torch.randn(2, c_in, height, height + 1, dtype=torch.float64, requires_grad=True)
    y_dense, y = dense(x), layer(x)
    assert y.shape == y_dense.shape
    torch.testing.assert_close(y, y_dense, rtol=0, atol=1e-12)
    gy = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, gy)[0], torch.autograd.grad(y_dense, x, gy)[0])
    patches = -(-y.shape[2] // p) * -(-y.shape[3] // p)
    assert layer.multiplications == c_out * p * p * patches
    assert layer.dense_multiplications == c_out * c_in * k * k * y.shape[2] * y.shape[3]


def test_conv_from_svd_is_exact_at_full_rank():
    torch.manual_seed(0)
    dense = nn.Conv2d(3, 5, 3, stride=2, padding=1, dtype=torch.float64)
    layer = SumProductConv2d.from_conv2d(dense, 5)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x))


def test_twn_ternarisation_is_scale_relative_with_straight_through_gradient():
    torch.manual_seed(0)
    w = torch.randn(50, 20) * 1e-3  # small weights before batch norm: an absolute ±0.5 threshold zeroes them all
    q, alpha = ternary_codes(w)
    magnitude = w.abs()
    assert torch.equal(q != 0, magnitude > 0.7 * magnitude.mean())
    assert 0.3 < float((q != 0).float().mean()) < 0.7
    torch.testing.assert_close(alpha, magnitude[q != 0].mean())
    torch.testing.assert_close(ternary_codes(w * 1e3)[0], q)
    w.requires_grad_(True)
    out = ternarize(w)
    torch.testing.assert_close(out, alpha * q)
    g = torch.randn_like(w)
    torch.testing.assert_close(torch.autograd.grad(out, w, g)[0], g)  # straight-through


def test_stages_switch_quantisation_and_freezing():
    torch.manual_seed(0)
    layer = SumProductLinear(6, 4, num_multiplications=3)
    x = torch.randn(10, 6)
    layer.set_stage("ternary")
    q_b, alpha_b = ternary_codes(layer.weight_b)
    torch.testing.assert_close(layer.effective_factors()[0], alpha_b * q_b)
    layer(x).sum().backward()
    assert layer.weight_b.grad is not None
    layer.set_stage("frozen_ternary")
    assert not layer.weight_b.requires_grad and not layer.weight_c.requires_grad
    assert layer.scale.requires_grad and layer.bn_shift.requires_grad
    layer.set_stage("full_precision")
    assert layer.weight_b.requires_grad
    with pytest.raises(ValueError, match="stage must be one of"):
        layer.set_stage("binary")


def test_fold_equals_the_layer_in_eval_mode_with_batchnorm():
    torch.manual_seed(0)
    layer = SumProductLinear(12, 5, num_multiplications=4, dtype=torch.float64)
    with pytest.raises(ValueError, match="ternary stage"):
        layer.fold()
    layer.set_stage("ternary")
    with torch.no_grad():
        layer.scale.uniform_(0.5, 2.0)
        layer.bn_shift.uniform_(-1, 1)
        for _ in range(5):
            layer(torch.randn(32, 12, dtype=torch.float64) * 3 + 1)  # running statistics
    layer.eval()
    x = torch.randn(9, 12, dtype=torch.float64)
    folded = layer.fold()
    np.testing.assert_allclose(folded(x.numpy()), layer(x).detach().numpy(), atol=1e-12)
    assert folded.scale.shape == (4,) and folded.weight_b.dtype == np.int8
    assert layer.additions == int(np.count_nonzero(folded.weight_b) + np.count_nonzero(folded.weight_c))
    assert layer.nparams == 4 * (12 + 5) + 4 and layer.nbits == 2 * 4 * 17 + 32 * 4


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_multiplications"):
        SumProductLinear(4, 4, num_multiplications=0)
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        SumProductConv2d(3, 4, 3, num_multiplications=4)(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="groups=1"):
        SumProductConv2d.from_conv2d(nn.Conv2d(4, 4, 3, groups=2), 4)
