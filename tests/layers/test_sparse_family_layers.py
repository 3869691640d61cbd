"""LowRankSparseLinear and BlockSparseLinear: index buffers, the ELLPACK export path, fresh layers, edge blocks,
whole models (the registry-wide path, dtype and export checks are in test_layer_conformance, test_layer_paths and
test_export)."""

import numpy as np
import pytest
import torch

from structmat.layers import layer_from_matrix, replace_linear
from structmat.layers.block_sparse import BlockSparseLinear
from structmat.layers.lowrank_sparse import LowRankSparseLinear
from structmat.matrices.block_sparse import BlockSparse
from structmat.matrices.lowrank_sparse import LowRankSparse

MATRICES = {
    "lowrank_sparse": lambda: LowRankSparse.random((13, 21), rank=2, density=0.2, seed=0),
    "block_sparse": lambda: BlockSparse.random((13, 21), block_shape=(2, 8), density=0.4, seed=0),
}


@pytest.fixture(params=sorted(MATRICES))
def layer_and_matrix(request):
    M = MATRICES[request.param]()
    return layer_from_matrix(M, np.arange(13.0)), M


def test_index_buffers_are_compact_and_state_dict_round_trips(layer_and_matrix):
    layer, M = layer_and_matrix
    buffers = dict(layer.named_buffers())
    assert buffers and all(b.dtype in (torch.int16, torch.int32) for b in buffers.values())
    assert sum(b.numel() for b in buffers.values()) == M.nindices
    twin = layer_from_matrix(M.scaled(0.0) if M.family == "block_sparse" else M, np.zeros(13))
    twin.load_state_dict(layer.state_dict())
    x = torch.randn(4, 21)
    torch.testing.assert_close(twin(x), layer(x))


def test_traced_path_matches_the_dense_product(layer_and_matrix, one_torch_thread):
    """The ELLPACK path taken while tracing (uneven block-rows padded in the graph) and the scatter-add path."""
    from structmat.layers.export import trace_module

    layer, M = layer_and_matrix
    x = torch.randn(6, 21)
    expected = x.double().numpy() @ M.to_dense().T + np.arange(13.0)
    traced = trace_module(layer, torch.randn(3, 21))
    np.testing.assert_allclose(traced(x).detach().numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose((layer._weight_product(x) + layer.bias).detach().numpy(), expected, rtol=1e-5,
                               atol=1e-4)


def test_gradients_reach_only_stored_values(layer_and_matrix):
    layer, M = layer_and_matrix
    layer(torch.randn(8, 21)).square().sum().backward()
    names = {name for name, p in layer.named_parameters() if p.grad is not None}
    assert names == {name for name, _ in layer.named_parameters()}
    assert layer.nparams == M.nparams


def test_block_edges_stay_unused():
    M = BlockSparse.random((13, 21), block_shape=(4, 8), density=0.5, seed=1)
    layer = layer_from_matrix(M)
    with torch.no_grad():
        layer.values.add_(1.0)  # training could not touch the entries past the edges; make sure they are ignored
        x = torch.randn(3, 21)
        back = layer.to_matrix()
        assert back.nblocks == M.nblocks
        dense = torch.from_numpy(back.to_dense()).float()
        np.testing.assert_allclose(back.to_dense(), layer.sparse_weight().double().numpy(), rtol=1e-6)
        torch.testing.assert_close(layer._weight_product(x), x @ dense.T, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer(x), x @ dense.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(rank=0, nnz=50), dict(rank=3, nnz=0), dict(rank=2)])
def test_fresh_lowrank_sparse_layer(kwargs):
    layer = LowRankSparseLinear(40, 30, **kwargs)
    M = layer.to_matrix()
    assert M.rank == kwargs["rank"] and M.nnz == kwargs.get("nnz", 2 * 70) and layer.nparams == M.nparams
    assert np.count_nonzero(np.diff(M.indptr)) == min(30, M.nnz)  # at least one value per row where it can
    x = torch.randn(5, 40)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ torch.from_numpy(M.to_dense()).float().T + layer.bias)
    with pytest.raises(ValueError, match="rank >= 1 or nnz >= 1"):
        LowRankSparseLinear(40, 30, rank=0, nnz=0)
    with pytest.raises(ValueError, match="rank must be <= 30"):
        LowRankSparseLinear(40, 30, rank=31)
    with pytest.raises(ValueError, match="nnz must be <= 1200"):
        LowRankSparseLinear(40, 30, rank=1, nnz=1201)


def test_fresh_block_sparse_layer():
    layer = BlockSparseLinear(40, 30, block_shape=(2, 8), share=0.3, seed=2)
    M = layer.to_matrix()
    assert M.block_shape == (2, 8) and M.nblocks == int(0.3 * 15 * 5)
    assert set(M.block_rows.tolist()) == set(range(15))  # no dead block-row
    with pytest.raises(ValueError, match="share must be a float"):
        BlockSparseLinear(40, 30, share=0.0)
    assert "block_shape=(2, 8)" in repr(layer)


@pytest.mark.parametrize("family", sorted(MATRICES))
def test_replace_linear_in_a_model(family):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.ReLU(), torch.nn.Linear(24, 16))
    x = torch.randn(10, 32)
    replaced = replace_linear(model, family, 0.5)
    assert all(not isinstance(m, torch.nn.Linear) for m in replaced.modules())
    relative = (replaced(x) - model(x)).norm() / model(x).norm()
    assert relative < 0.8
