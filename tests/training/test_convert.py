import pytest
import torch
from torch import nn

from structmat.training import (SampledConv2d, SampledLinear, SumProductConv2d, SumProductLinear, TopKSparseConv2d,
                                TopKSparseLinear, convert_to_sampled, convert_to_sum_product,
                                convert_to_topk_sparse, format_training_report, model_training_cost,
                                training_report)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10))


def test_convert_to_sampled_replaces_every_layer_and_keeps_the_function():
    model = _cnn()
    x = torch.randn(4, 1, 6, 6)
    new = convert_to_sampled(model, 0.5, minimal_k=2)
    assert new is not model and type(model[0]) is nn.Conv2d
    assert [type(new[i]) for i in (0, 2, 5, 7)] == [SampledConv2d, SampledConv2d, SampledLinear, SampledLinear]
    assert len({new[i].seed for i in (0, 2, 5, 7)}) == 4
    new.eval()
    torch.testing.assert_close(new(x), model(x))
    new.train()
    new(x).sum().backward()
    rows = training_report(new)
    assert [r.name for r in rows] == ["0", "2", "5", "7"]
    assert rows[0].training_cost.reduction == 0.0  # one input channel: minimal_k keeps it
    assert rows[1].training_flop_reduction == pytest.approx(0.5)
    assert model_training_cost(new).reduction > 0.3
    assert "train-FLOP cut" in format_training_report(rows)


def test_convert_to_topk_sparse_uniform_and_erk():
    model = _cnn()
    uniform = convert_to_topk_sparse(model, 0.8, where=lambda name, m: name != "0", topk_period=5)
    assert type(uniform[0]) is nn.Conv2d and isinstance(uniform[2], TopKSparseConv2d)
    assert all(uniform[i].sparsity == pytest.approx(0.8) and uniform[i].topk_period == 5 for i in (2, 5, 7))
    erk = convert_to_topk_sparse(model, 0.8, distribution="erk")
    layers = [erk[i] for i in (0, 2, 5, 7)]
    sizes = [layer.weight.numel() for layer in layers]
    kept = sum((1 - layer.sparsity) * n for layer, n in zip(layers, sizes))
    assert kept == pytest.approx(0.2 * sum(sizes))
    assert layers[0].sparsity == 0.0 and layers[2].sparsity > layers[3].sparsity  # small layers stay denser
    erk(torch.randn(8, 1, 6, 6)).sum().backward()
    rows = training_report(erk)
    assert sum(r.nparams for r in rows) <= 0.2 * sum(sizes) + 4  # exact top-K per layer, ceil rounding
    assert all(r.weight_density is not None and r.activation_density is not None for r in rows)
    text = format_training_report(rows)
    assert "a.density" in text and "training multiply-adds cut by" in text


def test_convert_to_sum_product_with_relative_budget_and_svd_start():
    model = _cnn()
    new = convert_to_sum_product(model, 0.5, where="[25]", layer_types=("linear", "conv2d"))
    assert isinstance(new[2], SumProductConv2d) and isinstance(new[5], SumProductLinear)
    assert new[2].num_multiplications == 8 and new[5].num_multiplications == 16
    x = torch.randn(4, 1, 6, 6)
    new(x)
    rows = training_report(new)
    assert rows[0].multiplications == 8 * 36 and rows[0].dense_multiplications == 16 * 8 * 9 * 36
    assert rows[1].multiplications == 16 and rows[1].additions > 0
    assert "mults" in format_training_report(rows)
    exact = convert_to_sum_product(model, 1.0, init="svd", batchnorm=False, layer_types="linear")
    exact.eval()
    torch.testing.assert_close(exact(x), model(x), rtol=1e-4, atol=1e-5)


def test_conversion_errors_name_the_problem():
    model = _cnn()
    with pytest.raises(ValueError, match="selects no module"):
        convert_to_sampled(model, 0.5, where="classifier.*")
    with pytest.raises(ValueError, match="layer_types"):
        convert_to_sampled(model, 0.5, layer_types=("lstm",))
    with pytest.raises(ValueError, match="layer '0'.*groups=1"):
        convert_to_sampled(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), 0.5)
    with pytest.raises(TypeError, match="num_multiplications"):
        convert_to_sum_product(model, "8")
    with pytest.raises(ValueError, match="init"):
        convert_to_sum_product(model, 8, init="pca")
    with pytest.raises(TypeError, match="nn.Module"):
        convert_to_topk_sparse([nn.Linear(2, 2)], 0.5)


def test_inplace_conversion_returns_the_same_model():
    model = _cnn()
    assert convert_to_topk_sparse(model, 0.5, inplace=True, layer_types="linear") is model
    assert isinstance(model[7], TopKSparseLinear) and type(model[0]) is nn.Conv2d
