"""Checks every registered family's torch layer must pass: the matrix round trip, products, shapes, gradients."""

import numpy as np
import pytest
import torch

from structmat.families import FAMILIES
from structmat.layers import StructuredLinear, layer_class, layer_from_matrix

FAMILY_NAMES = list(FAMILIES)


def example(family, shape=(20, 30), seed=0):
    return FAMILIES[family].matrix_class.random(shape, seed=seed)


@pytest.fixture(params=FAMILY_NAMES)
def family(request):
    return request.param


def test_round_trip_matrix(family):
    M = example(family)
    layer = layer_from_matrix(M)
    assert isinstance(layer, StructuredLinear) and layer.family == family
    assert (layer.out_features, layer.in_features) == M.shape
    back = layer.to_matrix()
    assert type(back) is type(M) and back.dtype == np.float64 and back.nparams == M.nparams
    np.testing.assert_allclose(back.to_dense(), M.to_dense(), rtol=1e-5, atol=1e-6 * np.abs(M.to_dense()).max())
    assert layer.nparams == M.nparams


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_forward_matches_dense(family, lead, rng):
    M = example(family, seed=1)
    bias = rng.standard_normal(20)
    layer = layer_from_matrix(M, bias)
    x = rng.standard_normal(lead + (30,)).astype(np.float32)
    y = layer(torch.from_numpy(x)).detach().numpy()
    expected = x @ M.to_dense().T + bias
    assert y.shape == lead + (20,) and y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_no_bias(family, rng):
    layer = layer_from_matrix(example(family, seed=2))
    assert layer.bias is None
    x = torch.zeros(4, 30)
    assert torch.all(layer(x) == 0)


def test_gradcheck_float64(family):
    """Gradients with respect to the input and every parameter agree with finite differences."""
    layer = layer_from_matrix(example(family, (7, 9), seed=3), np.ones(7), dtype=torch.float64)
    x = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    names = [name for name, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *values))
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name


def test_wrong_input_shape(family):
    layer = layer_from_matrix(example(family, seed=5))
    with pytest.raises(ValueError, match=r"expects input of shape \(\.\.\., 30\); got \(4, 20\)"):
        layer(torch.zeros(4, 20))


def test_bad_bias_and_wrong_family(family):
    M = example(family, seed=6)
    with pytest.raises(ValueError, match=r"bias must have shape \(20,\)"):
        layer_from_matrix(M, np.zeros(3))
    other = "lowrank" if family != "lowrank" else "dense"
    with pytest.raises(TypeError, match="holds family"):
        layer_class(other).from_matrix(M)


def test_from_linear_copies_bias_dtype_and_records_error(family):
    torch.manual_seed(0)
    linear = torch.nn.Linear(30, 20)
    layer = layer_class(family).from_linear(linear, 1.0)
    assert torch.equal(layer.bias, linear.bias.detach())
    assert layer.bias.dtype == linear.weight.dtype
    assert layer.fit_error is not None and 0 <= layer.fit_error < 1


def test_fresh_layer_is_initialised_like_linear(family):
    """A layer made from scratch has outputs of about nn.Linear's scale (not zeros, not exploding)."""
    torch.manual_seed(0)
    kwargs = _fresh_kwargs(family)
    layer = layer_class(family)(256, 128, **kwargs)
    x = torch.randn(64, 256)
    std = (layer(x) - layer.bias).std().item()
    reference = (torch.nn.Linear(256, 128)(x)).std().item()
    assert 0.2 * reference < std < 5 * reference
    assert "in_features=256" in repr(layer)


def _fresh_kwargs(family):
    """Structure arguments for a fresh layer of each family at roughly a quarter of the parameters."""
    import inspect

    params = inspect.signature(layer_class(family).__init__).parameters
    defaults = {"rank": 16}
    return {k: v for k, v in defaults.items() if k in params}
