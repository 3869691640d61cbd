"""Every family's three computation paths (plain, training, inference fast path) agree with ``to_dense()``; empty
batches, dtypes, compact state dicts and constructor size limits."""

import io

import numpy as np
import pytest
import torch

from structmat.families import FAMILIES
from structmat.layers import layer_class, layer_from_matrix
from structmat.layers.base import SUPPORTED_DTYPES

FAMILY_NAMES = list(FAMILIES)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def example(family, shape=(20, 30), seed=0, dtype=torch.float32):
    M = FAMILIES[family].matrix_class.random(shape, seed=seed)
    bias = np.random.default_rng(seed).standard_normal(shape[0])
    return M, layer_from_matrix(M, bias, dtype=dtype), bias


@pytest.fixture(params=FAMILY_NAMES)
def family(request):
    return request.param


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_every_path_matches_the_dense_product(family, dtype, tol, batch, rng):
    M, layer, bias = example(family, dtype=dtype)
    x = torch.from_numpy(rng.standard_normal((batch, 30))).to(dtype)
    expected = x.double().numpy() @ M.to_dense().T + bias
    scale = np.abs(expected).max()
    outputs = {"plain": layer._weight_product(x) + layer.bias}
    with torch.no_grad():
        outputs["no_grad"] = layer(x)
    with torch.inference_mode():
        outputs["inference_mode"] = layer(x)
    outputs["train"] = layer(x.clone().requires_grad_(True))
    for path, y in outputs.items():
        assert y.dtype == dtype and y.shape == (batch, 20), path
        np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=0, atol=tol * scale, err_msg=path)


def test_fast_path_follows_parameter_updates(family, rng):
    """The fast path's cached structures follow in-place updates (an optimiser step) and load_state_dict."""
    M, layer, _ = example(family)
    other = layer_from_matrix(FAMILIES[family].matrix_class.random((20, 30), seed=7), np.zeros(20))
    x = torch.from_numpy(rng.standard_normal((2, 30)).astype(np.float32))
    with torch.no_grad():
        layer(x)
        for p in layer.parameters():
            p.mul_(2.0)
        np.testing.assert_allclose(layer(x).numpy(), (layer._weight_product(x) + layer.bias).numpy(),
                                   rtol=1e-5, atol=1e-5)
        if {k: v.shape for k, v in other.state_dict().items()} == {k: v.shape for k, v in layer.state_dict().items()}:
            layer.load_state_dict(other.state_dict())
            np.testing.assert_allclose(layer(x).numpy(), other(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 30), (2, 0, 3, 30), (0,) * 1 + (30,)])
def test_empty_batch_gives_empty_output(family, shape):
    _, layer, _ = example(family)
    x = torch.zeros(shape)
    for context in (torch.enable_grad, torch.no_grad, torch.inference_mode):
        with context():
            y = layer(x)
        assert y.shape == shape[:-1] + (20,)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision(family, dtype, rng):
    M, layer, bias = example(family)
    layer = layer.to(dtype)
    x = torch.from_numpy(rng.standard_normal((4, 30)).astype(np.float32))
    expected = x.double().numpy() @ M.to_dense().T + bias
    for context in (torch.enable_grad, torch.no_grad):
        with context():
            y = layer(x.to(dtype))
        assert y.dtype == dtype
        np.testing.assert_allclose(y.detach().double().numpy(), expected, atol=0.05 * np.abs(expected).max())


def test_unsupported_dtype_is_refused(family):
    cls = layer_class(family)
    with pytest.raises(TypeError, match="dtype must be one of torch.float32, torch.float64, torch.bfloat16"):
        cls.from_matrix(FAMILIES[family].matrix_class.random((6, 5), seed=0), dtype=torch.int32)


def test_state_dict_is_compact(family):
    """The saved state dict holds about nbytes + bias: float32 values, int32/int16 indices, nothing derived."""
    M, layer, _ = example(family, shape=(64, 48))
    with torch.no_grad():
        layer(torch.zeros(2, 48))  # fill the caches: they must not reach the state dict
    state = layer.state_dict()
    assert all(t.dtype in (torch.float32, torch.int32, torch.int16) for t in state.values()), \
        {k: t.dtype for k, t in state.items()}
    stored = sum(t.numel() * t.element_size() for t in state.values())
    assert stored <= 1.1 * (M.nbytes + 4 * 64), (stored, M.nbytes)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = layer_from_matrix(M, np.zeros(64))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(3, 48)
    torch.testing.assert_close(fresh(x), layer(x))


def test_to_matrix_float32(family):
    M, layer, _ = example(family)
    back = layer.to_matrix(np.float32)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back.to_dense(), M.to_dense(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family_name, kwargs, match", [
    ("lowrank", {"rank": 10**6}, r"rank must be <= 24"),
    ("toeplitz_like", {"rank": 10**6}, r"rank must be <= 32"),
    ("ldr", {"rank": 10**6}, r"rank must be <= 32"),
    ("monarch", {"rank": 10**6}, r"rank must be"),
    ("sss", {"num_stages": 10**6}, r"num_stages must be <= 24"),
    ("sss", {"state_dim": 10**6, "causal_dims": [0] + [10**6] * 7 + [0]}, r"causal_dims"),
    ("hodlr", {"rank": 10**6}, r"rank must be <= 24"),
    ("hedlr", {"depth": 40}, r"depth must be"),
    ("hmatrix", {"rank": 10**6}, r"rank must be <= 24"),
    ("sparse_product", {"num_factors": 10**6}, r"num_factors must be <="),
])
def test_structure_sizes_beyond_the_shape_are_refused(family_name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer_class(family_name)(24, 32, **kwargs)
