"""ToeplitzLikeLinear: FFT forward against the matrix (even and odd N, chunked batches), gradients."""

import numpy as np
import pytest
import torch

from structmat.layers.toeplitz_like import ToeplitzLikeLinear
from structmat.matrices.toeplitz_like import ToeplitzLike


@pytest.mark.parametrize("shape", [(16, 16), (15, 15), (10, 16), (16, 9), (33, 20), (1, 4)])
def test_forward_matches_the_matrix(shape):
    M = ToeplitzLike.random(shape, rank=3, seed=0)
    layer = ToeplitzLikeLinear.from_matrix(M, dtype=torch.float64)
    x = np.random.default_rng(0).standard_normal((7, shape[1]))
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), x @ M.to_dense().T, atol=1e-12)


def test_batch_chunks_agree(monkeypatch):
    import structmat.layers.toeplitz_like as module

    layer = ToeplitzLikeLinear(24, 20, rank=3, dtype=torch.float64)
    x = torch.randn(50, 24, dtype=torch.float64, requires_grad=True)

    def run():
        layer.zero_grad()
        x.grad = None
        y = layer(x)
        (y * torch.arange(20.0, dtype=torch.float64)).sum().backward()
        return y.detach(), x.grad.clone(), layer.G.grad.clone(), layer.H.grad.clone()

    whole = run()
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 3 * 12 * 4)  # 4 rows per chunk
    for a, b in zip(run(), whole):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", [(4, 6), (5, 5)])
def test_gradcheck_even_and_odd(shape):
    layer = ToeplitzLikeLinear.from_matrix(ToeplitzLike.random(shape, rank=2, seed=1), dtype=torch.float64)
    x = torch.randn(3, shape[1], dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(
        lambda x, *v: torch.func.functional_call(layer, dict(zip(names, v)), (x,)), (x, *values))


def test_round_trip_and_nparams():
    M = ToeplitzLike.random((30, 50), rank=4, seed=2)
    layer = ToeplitzLikeLinear.from_matrix(M)
    assert layer.nparams == M.nparams == 2 * 4 * 50
    back = layer.to_matrix()
    assert back.shape == (30, 50) and back.rank == 4
    np.testing.assert_allclose(back.to_dense(), M.to_dense(), atol=1e-5)
