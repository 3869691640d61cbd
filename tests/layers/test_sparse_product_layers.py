"""SparseProductLinear / SparseLinear / MonarchLinear beyond the conformance checks: training, no densifying."""

import numpy as np
import pytest
import torch

from structmat.approximators.sparse_product import fit_sparse_product
from structmat.layers.monarch import MonarchLinear
from structmat.layers.sparse_product import SparseLinear, SparseProductLinear
from structmat.matrices.monarch import Monarch
from structmat.matrices.sparse_product import SparseProduct


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sparse_product_layer_trains_with_adam():
    """Fit a random target product's outputs from a fresh layer with the target's supports: the loss falls 100×."""
    torch.manual_seed(0)
    target = SparseProduct.random((24, 32), density=0.2, row_selection=False, seed=1)
    layer = SparseProductLinear.from_matrix(target, np.zeros(24))
    with torch.no_grad():
        for v in layer.values:
            v.normal_(0.0, 0.3)
    x = torch.randn(256, 32)
    y = torch.from_numpy((x.double().numpy() @ target.to_dense().T).astype(np.float32))
    optimiser = torch.optim.Adam(layer.parameters(), lr=2e-2)
    first = None
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.mean((layer(x) - y) ** 2)
        loss.backward()
        optimiser.step()
        first = loss.item() if first is None else first
    assert loss.item() < first / 100
    assert layer.nparams == target.nparams  # supports fixed: the same stored values


def test_forward_never_forms_the_dense_weight(monkeypatch):
    layer = SparseProductLinear(64, 48, num_factors=3, share=0.2)

    def forbidden(*args, **kwargs):
        raise AssertionError("densified")

    monkeypatch.setattr(torch.Tensor, "to_dense", forbidden)
    y = layer(torch.randn(5, 64))
    y.sum().backward()
    assert y.shape == (5, 48)


def test_fresh_layers_count_parameters():
    layer = SparseProductLinear(100, 80, num_factors=2, share=0.25)
    assert abs(layer.nparams - 2000) <= 100 and layer.nparams == sum(v.numel() for v in layer.values)
    assert SparseLinear(100, 80, share=0.1).nparams == 800
    M = MonarchLinear(64, 64, in_blocks=8, out_blocks=8, rank=2)
    assert M.nparams == 2 * (8 * 64 + 8 * 64)


def test_fitted_layer_round_trip_and_float64_gradcheck():
    W = np.random.default_rng(0).standard_normal((12, 10))
    M = fit_sparse_product(W, 0.6)
    layer = SparseProductLinear.from_matrix(M, np.ones(12), dtype=torch.float64)
    np.testing.assert_allclose(layer.to_matrix().to_dense(), M.to_dense(), atol=1e-12)
    x = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *v: torch.func.functional_call(
        layer, {f"values.{j}": t for j, t in enumerate(v)}, (x,)),
        (x, *[p.detach().clone().requires_grad_(True) for p in layer.values]))


def test_monarch_layer_matches_padded_matrix(rng):
    M = Monarch.random((10, 13), in_blocks=4, out_blocks=3, rank=2, seed=0)
    layer = MonarchLinear.from_matrix(M, dtype=torch.float64)
    x = rng.standard_normal((6, 13))
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), x @ M.to_dense().T, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [({"rank": 20, "in_blocks": 8}, "rank must be"),
                                           ({"in_blocks": 100}, "in_blocks")])
def test_monarch_layer_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MonarchLinear(64, 32, **kwargs)
