import pytest
import torch
from torch import nn

from structmat.training import (Stage, SumProductLinear, accuracy, distillation_loss, set_sum_product_stage,
                                train_epochs, train_staged)


def _blobs(n=240, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=gen) * 3
    y = torch.arange(n) % 3
    return centers[y] + torch.randn(n, 8, generator=gen), y


def test_distillation_loss_mixes_hard_and_soft_targets():
    torch.manual_seed(0)
    logits, teacher = torch.randn(5, 4), torch.randn(5, 4)
    target = torch.tensor([0, 1, 2, 3, 0])
    ce = nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(distillation_loss(logits, target, teacher, weight=0.0), ce)
    soft = distillation_loss(logits, target, teacher, weight=1.0, temperature=2.0)
    p_teacher = torch.softmax(teacher / 2, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(logits / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(soft, 4 * kl)
    with pytest.raises(ValueError, match="weight"):
        distillation_loss(logits, target, teacher, weight=1.5)


def test_train_epochs_is_seeded_and_learns():
    X, y = _blobs()

    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        loss = train_epochs(model, X, y, epochs=5, optimizer=torch.optim.Adam(model.parameters(), 1e-2), seed=1)
        return model, loss

    (m1, l1), (m2, l2) = run(), run()
    assert l1 == l2 and torch.equal(m1[0].weight, m2[0].weight)
    assert accuracy(m1, X, y) > 0.9 and m1.training


def test_staged_schedule_runs_every_stage_and_freezes_factors():
    X, y = _blobs()
    torch.manual_seed(0)
    model = nn.Sequential(SumProductLinear(8, 16, num_multiplications=6), nn.ReLU(), nn.Linear(16, 3))
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    stages = [Stage("full_precision", 4, 1e-2), Stage("ternary", 2, 1e-3), Stage("frozen_ternary", 2, 1e-3)]
    frozen_before = None

    def evaluate(m):
        return {"accuracy": accuracy(m, X, y)}

    rows = train_staged(model, X, y, stages, teacher=teacher, evaluate=evaluate, seed=0)
    assert [r["stage"] for r in rows] == ["full_precision", "ternary", "frozen_ternary"]
    assert all(0 <= r["accuracy"] <= 1 for r in rows) and rows[0]["accuracy"] > 0.8
    assert model[0].stage == "frozen_ternary" and not model[0].weight_b.requires_grad
    frozen_before = model[0].weight_b.detach().clone()
    train_staged(model, X, y, [Stage("frozen_ternary", 1, 1e-2)])
    assert torch.equal(model[0].weight_b, frozen_before)


def test_stage_errors():
    with pytest.raises(ValueError, match="stage name"):
        Stage("quaternary", 1, 1e-3)
    with pytest.raises(ValueError, match="no SumProductLinear"):
        set_sum_product_stage(nn.Linear(2, 2), "ternary")
