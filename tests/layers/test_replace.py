import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from structmat.layers import LowRankLinear, format_report, replace_linear, replacement_report


@pytest.fixture(scope="module")
def trained_mlp():
    """A small MLP trained on scikit-learn's digits (deterministic)."""
    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    accuracy = (model(X).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95
    return model, X, y


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_replace_all_drops_parameters_and_trains(trained_mlp):
    model, X, y = trained_mlp
    new = replace_linear(model, "lowrank", 0.3)
    assert new is not model and all(type(m) is not torch.nn.Linear for m in new.modules())
    rows = replacement_report(new)
    assert [r.name for r in rows] == ["0", "2", "4"]
    for r in rows:
        assert r.nparams <= 0.3 * r.dense_nparams and r.fit_error is not None
    biases = 128 + 64 + 10
    assert count(new) - biases <= 0.3 * (count(model) - biases)
    # the original is untouched; the new model runs forward and backward and gradients reach the factors
    assert type(model[0]) is torch.nn.Linear
    loss = torch.nn.functional.cross_entropy(new(X), y)
    loss.backward()
    for layer in (new[0], new[2], new[4]):
        assert layer.U.grad is not None and layer.U.grad.abs().sum() > 0
        assert layer.V.grad is not None and layer.V.grad.abs().sum() > 0
    # a few Adam steps on the factors bring the accuracy back: the gradients are useful, not just present
    before = (new(X).argmax(1) == y).float().mean().item()
    opt = torch.optim.Adam(new.parameters(), lr=5e-3)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(new(X), y).backward()
        opt.step()
    after = (new(X).argmax(1) == y).float().mean().item()
    assert after > max(before, 0.85)
    assert "total" in format_report(rows)


def test_replace_keeps_outputs_at_full_budget(trained_mlp):
    model, X, _ = trained_mlp
    new = replace_linear(model, "lowrank", 10 * (10 + 64), where="4")  # rank 10: exact for a 10x64 weight
    assert isinstance(new[4], LowRankLinear) and type(new[0]) is torch.nn.Linear
    torch.testing.assert_close(new(X), model(X), rtol=1e-4, atol=1e-4)


def test_where_pattern_callable_and_inplace(trained_mlp):
    model, _, _ = trained_mlp
    import copy

    m = copy.deepcopy(model)
    out = replace_linear(m, "lowrank", 0.5, where=lambda name, mod: mod.out_features == 64, inplace=True)
    assert out is m and isinstance(m[2], LowRankLinear) and type(m[0]) is torch.nn.Linear
    with pytest.raises(ValueError, match=r"selects no nn.Linear.*\['0', '4'\]"):
        replace_linear(m, "lowrank", 0.5, where="classifier.*")


def test_budget_error_names_the_layer(trained_mlp):
    model, _, _ = trained_mlp
    with pytest.raises(ValueError, match="layer '4' \\(10x64\\)"):
        replace_linear(model, "lowrank", 0.1)  # 64 parameters: enough for layers 0 and 2, not for 4


def test_bad_arguments(trained_mlp):
    model, _, _ = trained_mlp
    with pytest.raises(TypeError, match="where must be"):
        replace_linear(model, "lowrank", 0.5, where=3)
    with pytest.raises(ValueError, match="unknown family"):
        replace_linear(model, "nope", 0.5)
    with pytest.raises(TypeError, match="nn.Module"):
        replace_linear(np.ones(3), "lowrank", 0.5)
