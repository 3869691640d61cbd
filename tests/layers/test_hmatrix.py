"""Hierarchical-matrix layers: grouping and padding of leaves, permutations, gradients, fresh construction."""

import numpy as np
import pytest
import torch

import structmat
import structmat.matrices.hmatrix
from structmat.layers import layer_from_matrix, replace_linear, replacement_report
from structmat.layers.hmatrix import HEDLRLinear, HMatrixLinear, HODLRLinear
from structmat.matrices.hmatrix import HMatrix, HODLRMatrix
from structmat.weights import synthetic_weight


def varied_ranks_matrix(seed=0, mb=8, nb=10):
    """A HEDLR-like grid of equal mb×nb leaves with ranks 1..4, a rank-0 leaf and one dense leaf, permuted."""
    rng = np.random.default_rng(seed)
    blocks = []
    ranks = [1, 2, 3, 4, 0, 2, 3, -1, 1, 4, 4, 2, 3, 1, 2, 3]
    for k, (i, j) in enumerate((i, j) for i in range(4) for j in range(4)):
        box = (mb * i, mb * i + mb, nb * j, nb * j + nb)
        r = ranks[k]
        payload = rng.standard_normal((mb, nb)) if r < 0 else (rng.standard_normal((mb, r)), rng.standard_normal((nb, r)))
        blocks.append((box, payload))
    m, n = 4 * mb, 4 * nb
    return HMatrix.from_blocks((m, n), blocks, row_order=rng.permutation(m), col_order=rng.permutation(n))


def test_grouped_and_padded_layer_matches_the_matrix():
    M = varied_ranks_matrix()
    layer = layer_from_matrix(M, np.arange(32.0), dtype=torch.float64)
    assert layer.nparams == M.nparams
    plan = layer._plan
    assert len(plan.dense) + len(plan.columns) + len(plan.rows) < M.num_leaves - 1  # clusters share products
    assert sum(p.numel() for n, p in layer.named_parameters() if n != "bias") == M.nparams  # no padding stored
    x = torch.randn(5, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = x.numpy() @ M.to_dense().T + np.arange(32.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, atol=1e-12)
    back = layer.to_matrix()
    np.testing.assert_array_equal(back.leaves, M.leaves)
    np.testing.assert_allclose(back.to_dense(), M.to_dense(), atol=1e-12)
    np.testing.assert_array_equal(back.row_order, M.row_order)


def test_padding_is_built_not_stored_and_gets_no_gradient():
    """The batched group tensors are padded (this matrix needs it) from ``values`` alone: the scatter of the training
    path and the slices of the plain path build the same tensors, zero on the padding."""
    layer = layer_from_matrix(varied_ranks_matrix(1), dtype=torch.float64)
    scattered = layer._padded_scattered(differentiable=True)
    sliced = layer._padded_from_slices()
    assert sum(t.numel() for t in scattered) > layer.nparams
    for a, b in zip(scattered, sliced):
        torch.testing.assert_close(a, b)
    assert sum(int((t != 0).sum()) for t in sliced) == int((layer.values != 0).sum())
    x = torch.randn(3, 40, dtype=torch.float64)
    layer(x).square().sum().backward()
    assert layer.values.grad.shape == (layer.nparams,)


def test_single_low_rank_leaf_runs_as_two_products(monkeypatch):
    """A fit that kept one leaf covering the matrix computes like LowRankLinear: no batched groups, no gathers."""
    M = HMatrix.from_blocks((30, 20), [((0, 30, 0, 20), (np.ones((30, 3)), np.arange(60.0).reshape(20, 3)))])
    layer = layer_from_matrix(M, dtype=torch.float64)
    assert layer._single_leaf

    def forbidden(*args, **kwargs):
        raise AssertionError("batched path used")

    monkeypatch.setattr(type(layer), "_batched_product", forbidden)
    x = torch.randn(5, 20, dtype=torch.float64)
    for context in (torch.enable_grad, torch.no_grad):
        with context():
            np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ M.to_dense().T, rtol=1e-12)


def test_hedlr_grid_takes_two_batched_products():
    M = structmat.matrices.hmatrix.HEDLRMatrix.random((64, 48), rank=2, depth=3, seed=0)
    layer = layer_from_matrix(M, dtype=torch.float64)
    assert len(layer._plan.columns) == 1 and len(layer._plan.rows) == 1 and not layer._plan.dense
    assert layer._plan.rows[0].out_rows is None  # the row clusters tile the output: a plain add, no scatter
    x = torch.randn(4, 48, dtype=torch.float64)
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ M.to_dense().T, atol=1e-12)


def test_gradcheck_with_padding_and_permutations():
    layer = layer_from_matrix(varied_ranks_matrix(2, 5, 4), np.ones(20), dtype=torch.float64)
    names = [name for name, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    x = torch.randn(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *values))


@pytest.mark.parametrize("cls, kwargs", [(HODLRLinear, {"depth": 3}), (HEDLRLinear, {"depth": 2}),
                                         (HMatrixLinear, {"eta": 0.5, "min_block": 16})])
def test_fresh_layers(cls, kwargs):
    layer = cls(200, 96, rank=4, **kwargs)
    M = layer.to_matrix()
    assert M.family == cls.family and M.shape == (96, 200) and M.nparams == layer.nparams
    x = torch.randn(7, 200)
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ M.to_dense().T + layer.bias.detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    assert "leaves=" in repr(layer)


def test_replace_linear_with_a_fitted_hodlr_and_state_dict_round_trip():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    new = replace_linear(model, "hodlr", 0.5, where="0", seed=0)
    layer = new[0]
    assert isinstance(layer, HODLRLinear) and layer.nparams <= 0.5 * 64 * 48
    rows = replacement_report(new)
    assert rows[0].family == "hodlr" and rows[0].fit_error < 1
    x = torch.randn(4, 64)
    y = new(x)
    clone = layer_from_matrix(layer.to_matrix(), layer.bias.detach())
    clone.load_state_dict(layer.state_dict())
    torch.testing.assert_close(clone(x), layer(x))
    assert y.shape == (4, 10)


def test_layer_from_permuted_fit_matches():
    W = synthetic_weight("gaussian", (60, 50))
    M = structmat.approximate(W, "hmatrix", 0.4, ordering="principal", seed=0)
    assert M.row_order is not None
    layer = layer_from_matrix(M, dtype=torch.float64)
    x = torch.randn(3, 50, dtype=torch.float64)
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ M.to_dense().T, atol=1e-12)
    assert isinstance(M, HMatrix) and not isinstance(M, HODLRMatrix)
