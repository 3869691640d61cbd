"""SSSLinear: the two-sweep forward against the matrix, gradients, permutations, zero-size stages, replacement."""

import numpy as np
import pytest
import torch

from structmat.layers import replace_linear, replacement_report
from structmat.layers.sss import SSSLinear
from structmat.matrices.sss import SSS


def _permuted(M, seed):
    rng = np.random.default_rng(seed)
    return SSS.from_flat(M.m_sizes, M.n_sizes, M.causal_dims, M.anticausal_dims, **{k: M.flat(k) for k in "ABCDEFG"},
                         row_order=rng.permutation(M.shape[0]), col_order=rng.permutation(M.shape[1]))


CASES = {
    "uniform": lambda: SSS.random((40, 56), num_stages=5, state_dim=3, seed=0),
    "unequal, zero-size stages, permuted": lambda: _permuted(
        SSS.random((23, 17), m_sizes=[5, 0, 9, 3, 6], n_sizes=[2, 6, 0, 4, 5], state_dim=3, seed=1), 2),
    "one stage": lambda: SSS.random((6, 9), num_stages=1, seed=3),
    "no states": lambda: SSS.random((12, 12), num_stages=3, state_dim=0, seed=4),
}


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_matrix_and_round_trips(case, rng):
    M = CASES[case]()
    layer = SSSLinear.from_matrix(M, rng.standard_normal(M.shape[0]), dtype=torch.float64)
    assert layer.nparams == M.nparams
    x = rng.standard_normal((7, M.shape[1]))
    y = layer(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y - layer.bias.detach().numpy(), x @ M.to_dense().T, atol=1e-12)
    back = layer.to_matrix()
    np.testing.assert_array_equal(back.to_dense(), M.to_dense())
    assert (back.row_order is None) == (M.row_order is None)


@pytest.mark.parametrize("case", ["small uniform", "unequal, zero-size stages, permuted"])
def test_gradcheck_float64(case):
    """Finite differences over the input and every parameter (all seven generator kinds)."""
    M = SSS.random((10, 12), num_stages=3, state_dim=2, seed=7) if case == "small uniform" else CASES[case]()
    layer = SSSLinear.from_matrix(M, np.zeros(M.shape[0]), dtype=torch.float64)
    x = torch.randn(3, M.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    names = [name for name, _ in layer.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())

    def f(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    assert torch.autograd.gradcheck(f, (x, *values))


def test_gradients_match_the_dense_weight(rng):
    """Parameter gradients equal those of the dense weight pulled back through the structure."""
    M = _permuted(SSS.random((30, 24), num_stages=4, state_dim=3, seed=5), 6)
    layer = SSSLinear.from_matrix(M, dtype=torch.float64)
    x = torch.from_numpy(rng.standard_normal((5, 24)))
    g = torch.from_numpy(rng.standard_normal((5, 30)))
    (layer(x) * g).sum().backward()
    dense = layer.dense_weight()
    grads = torch.autograd.grad((x @ dense.T * g).sum(), [layer.D])
    np.testing.assert_allclose(layer.D.grad.numpy(), grads[0].numpy(), atol=1e-12)


def test_fresh_layer_structure_and_scale():
    torch.manual_seed(0)
    layer = SSSLinear(256, 128, num_stages=8, state_dim=16)
    M = layer.to_matrix()
    assert M.num_stages == 8 and M.causal_dims.max() == 16 and layer.nparams == M.nparams
    x = torch.randn(64, 256)
    std = (layer(x) - layer.bias).std().item()
    reference = torch.nn.Linear(256, 128)(x).std().item()
    assert 0.5 * reference < std < 2 * reference
    assert "num_stages=8" in repr(layer)
    with pytest.raises(ValueError, match="stage_sizes must be two sequences"):
        SSSLinear(10, 10, stage_sizes=([5, 5], [5, 4]))
    with pytest.raises(ValueError, match="zero ends"):
        SSSLinear(10, 10, stage_sizes=([5, 5], [5, 5]), causal_dims=[1, 1, 0], anticausal_dims=[0, 1, 0])


def test_replace_linear_and_training_step(rng):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
    replaced = replace_linear(model, "sss", 0.5)
    assert isinstance(replaced[0], SSSLinear) and isinstance(replaced[2], SSSLinear)
    report = replacement_report(replaced)
    assert all(r.nparams <= 0.5 * r.dense_nparams and r.fit_error < 1 for r in report)
    x = torch.randn(16, 64)
    loss = replaced(x).square().mean()
    loss.backward()
    optimizer = torch.optim.SGD(replaced.parameters(), lr=0.01)
    optimizer.step()
    assert replaced(x).square().mean().item() < loss.item()


def test_inference_cache_follows_parameter_updates(rng):
    """Without autograd the padded generators are cached; an in-place parameter update must invalidate it."""
    M = SSS.random((20, 16), num_stages=4, state_dim=2, seed=8)
    layer = SSSLinear.from_matrix(M, dtype=torch.float64)
    x = torch.from_numpy(rng.standard_normal((3, 16)))
    with torch.no_grad():
        first = layer(x).clone()
        np.testing.assert_allclose(first.numpy(), x.numpy() @ M.to_dense().T, atol=1e-12)
        for kind in "ABCDEFG":
            getattr(layer, kind).mul_(2.0)
        second = layer(x)
    expected = x.numpy() @ layer.to_matrix().to_dense().T
    np.testing.assert_allclose(second.numpy(), expected, atol=1e-12)
    assert not np.allclose(second.numpy(), first.numpy())


@pytest.mark.parametrize("case", CASES)
def test_large_batches_take_the_padded_or_the_stage_path_by_padding(case, rng):
    """Beyond the sweep's batch sizes, with and without autograd: batched products on padded stages when padding
    costs little, the stages one by one when it would multiply the work (unequal stages); both equal the matrix."""
    from structmat.layers import sss as sss_module

    M = CASES[case]()
    layer = SSSLinear.from_matrix(M, dtype=torch.float64)
    x = torch.from_numpy(rng.standard_normal((sss_module.FAST_SWEEP_MAX_BATCH + 9, M.shape[1])))
    expected = x.numpy() @ M.to_dense().T
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(layer(x.clone().requires_grad_(True)).detach().numpy(), expected, atol=1e-12)
    # the degenerate two-stage form the classifier's fit chose: every row in one stage, every column in the other
    lowrank = SSS.random((30, 40), m_sizes=[0, 30], n_sizes=[40, 0], state_dim=5, seed=2)
    layer = SSSLinear.from_matrix(lowrank, dtype=torch.float64)
    assert layer.padding_factor > sss_module.PADDING_LIMIT
    y = torch.from_numpy(rng.standard_normal((20, 40)))
    with torch.no_grad():
        np.testing.assert_allclose(layer(y).numpy(), y.numpy() @ lowrank.to_dense().T, atol=1e-12)
