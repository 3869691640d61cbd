"""LDRLinear: both forward paths against the matrix, the automatic choice, gradients through the Numba kernels."""

import numpy as np
import pytest
import torch

from structmat.layers.ldr import LDRLinear
from structmat.matrices.ldr import LDR


@pytest.mark.parametrize("path", ["krylov", "dense"])
@pytest.mark.parametrize("shape", [(12, 12), (9, 14), (14, 9)])
def test_paths_match_the_matrix(path, shape):
    M = LDR.random(shape, rank=2, operator_noise=0.05, seed=0)
    layer = LDRLinear.from_matrix(M, dtype=torch.float64)
    layer.path = path
    x = np.random.default_rng(0).standard_normal((5, shape[1]))
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), x @ M.to_dense().T, atol=1e-12)


def test_auto_path_forms_w_for_large_batches():
    layer = LDRLinear(1280, 1000, rank=8)
    assert layer.chosen_path(1) == "krylov" and layer.chosen_path(256) == "dense"
    assert LDRLinear(10, 10, rank=2, path="krylov").chosen_path(1000) == "krylov"
    with pytest.raises(ValueError, match="path must be one of"):
        LDRLinear(10, 10, rank=2, path="fast")


@pytest.mark.parametrize("path", ["krylov", "dense"])
def test_gradcheck(path):
    layer = LDRLinear.from_matrix(LDR.random((4, 5), rank=2, operator_noise=0.1, seed=1), np.ones(4),
                                  dtype=torch.float64)
    layer.path = path
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(
        lambda x, *v: torch.func.functional_call(layer, dict(zip(names, v)), (x,)), (x, *values))


def test_nparams_counts_operators_and_generators():
    layer = LDRLinear(20, 30, rank=3)
    assert layer.nparams == 2 * 3 * 30 + 6 * 30 == layer.to_matrix().nparams
