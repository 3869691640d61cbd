"""The compiled block-sparse kernels of the inference fast path: the row and panel products against dense products
(the default 8-column shapes and others, shapes off the block grid with stored entries past the edges, empty
block-rows, one and two panels, with and without a bias), and the layer's choice between them and its dense
fallback."""

import numpy as np
import pytest
import torch

from structmat.layers import layer_from_matrix, native
from structmat.layers.block_sparse import PANEL_MIN_BATCH, ROWS_MAX_BATCH
from structmat.matrices.block_sparse import BlockSparse, block_grid

from tests.layers._unaligned import assert_unaligned_inputs_match

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def library():
    library = native.block_sparse_library()
    if library is None:
        pytest.skip("no C compiler: the layer uses its dense weight (tested below)")
    return library


def _matrix(shape, block_shape, seed):
    """A random float32 block-sparse matrix with its middle block-row emptied."""
    M = BlockSparse.random(shape, block_shape=block_shape, density=0.4, seed=seed, dtype=np.float32)
    indptr = M.indptr.astype(np.int64)
    middle = (len(indptr) - 1) // 2
    start, stop = indptr[middle], indptr[middle + 1]
    keep = np.ones(M.nblocks, dtype=bool)
    keep[start:stop] = False
    indptr[middle + 1:] -= stop - start
    return BlockSparse(shape, indptr, M.indices[keep], M.values[keep], dtype=np.float32)


@pytest.mark.parametrize("shape, block_shape", [((37, 53), (1, 8)), ((38, 64), (2, 8)), ((37, 51), (4, 8)),
                                                ((70, 29), (8, 8)), ((23, 19), (3, 5)), ((16, 40), (2, 4))])
@pytest.mark.parametrize("batch", [1, 3, 70])
@pytest.mark.parametrize("with_bias", [True, False])
def test_row_and_panel_kernels_match_the_dense_product(library, shape, block_shape, batch, with_bias, rng):
    M = _matrix(shape, block_shape, seed=shape[0])
    assert np.any(np.diff(M.indptr) == 0)
    values = torch.from_numpy(np.array(M.values, dtype=np.float32))
    m, n = shape
    (br, bc), (mb, nb) = block_shape, block_grid(shape, block_shape)
    rows = np.repeat(np.arange(mb), np.diff(M.indptr))
    values[torch.from_numpy((rows + 1) * br > m), m - (mb - 1) * br:, :] = 1e3  # stored past the edges: unused
    values[torch.from_numpy((M.indices + 1) * bc > n), :, n - (nb - 1) * bc:] = -1e3
    indptr, cols = (torch.from_numpy(a.astype(np.int32)) for a in (M.indptr, M.indices))
    bias = torch.from_numpy(rng.standard_normal(m).astype(np.float32)) if with_bias else None
    x = torch.from_numpy(rng.standard_normal((batch, n)).astype(np.float32))
    expected = x.double().numpy() @ M.to_dense().astype(np.float64).T + (0.0 if bias is None else bias.numpy())
    plan = native.BlockSparsePlan(library, shape, block_shape, indptr, cols, values, bias)
    for panels in (False, True):
        y = torch.full((batch, m), np.nan, dtype=torch.float32)
        plan(x, y, panels=panels)
        np.testing.assert_allclose(y.numpy(), expected, atol=1e-5 * max(np.abs(expected).max(), 1.0))


@pytest.mark.parametrize("native_library", [True, False])
@pytest.mark.parametrize("batch", sorted({1, ROWS_MAX_BATCH, PANEL_MIN_BATCH, 2 * 64 + 3}))
def test_layer_fast_path_with_and_without_the_compiled_kernels(native_library, batch, rng, monkeypatch):
    if not native_library:
        monkeypatch.setitem(native._LIBRARY, "block_sparse", None)
    M = BlockSparse.random((45, 70), block_shape=(2, 8), density=0.3, seed=4)
    layer = layer_from_matrix(M, rng.standard_normal(45))
    x = torch.from_numpy(rng.standard_normal((batch, 70)).astype(np.float32))
    with torch.inference_mode():
        y = layer(x)
    with torch.no_grad():
        layer.values.mul_(-2.0)  # the kernels read the parameter's memory: an in-place update is seen at once
        y2 = layer(x)
    assert y.shape == (batch, 45) and y.is_contiguous()
    bias = layer.bias.detach().double().numpy()
    expected = x.double().numpy() @ M.to_dense().T
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(y.numpy(), expected + bias, atol=tol)
    np.testing.assert_allclose(y2.numpy(), -2.0 * expected + bias, atol=2 * tol)
    with torch.no_grad():  # float64 runs the dense weight
        np.testing.assert_allclose(layer.double()(x.double()).numpy(), -2.0 * expected + bias, atol=2 * tol)


@pytest.mark.parametrize("offset", [0, 1, 6])
def test_inputs_off_cache_line_boundaries(offset, rng):
    M = BlockSparse.random((45, 70), block_shape=(1, 8), density=0.3, seed=5)
    layer = layer_from_matrix(M, rng.standard_normal(45))
    assert_unaligned_inputs_match(layer, M, 3, offset, rng)


@pytest.mark.parametrize("batch", [1, PANEL_MIN_BATCH])
def test_layer_without_bias(batch, rng):
    M = BlockSparse.random((45, 70), block_shape=(4, 8), density=0.3, seed=6)
    layer = layer_from_matrix(M)
    x = torch.from_numpy(rng.standard_normal((batch, 70)).astype(np.float32))
    expected = x.double().numpy() @ M.to_dense().T
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())
