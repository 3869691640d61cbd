import dataclasses
import json

import numpy as np
import pytest

from structmat.features import ChunkedArray
from structmat.finetune import (
    TrainingConfig, dense_head, evaluate, finetune, fitted_head, fresh_head, plot_histories, split_indices, write_json,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def problem():
    """Features near a 4-dimensional subspace and a 12-class dense teacher: a rank-2 head fitted in Frobenius norm
    ignores the data, so fitting to the data's logits can do much better."""
    rng = np.random.default_rng(7)
    basis = rng.standard_normal((4, 30))
    X = (rng.standard_normal((900, 4)) @ basis + 0.05 * rng.standard_normal((900, 30))).astype(np.float32)
    W = rng.standard_normal((12, 30))
    b = 0.1 * rng.standard_normal(12)
    logits = (X @ W.T + b).astype(np.float32)
    return X, W, b, logits, logits.argmax(1)


CONFIG = TrainingConfig(epochs=30, batch_size=64, lr=1e-2, patience=30)


def test_distillation_without_labels_improves_agreement(problem):
    X, W, b, logits, _ = problem
    head = fitted_head("lowrank", 0.2, W, b)
    test = np.arange(700, 900)
    before = evaluate(head, X, teacher_logits=logits, indices=test)
    result = finetune(head, X, teacher_logits=logits, indices=np.arange(700), config=CONFIG)
    after = evaluate(head, X, teacher_logits=logits, indices=test)
    assert before.accuracy is None and after.count == 200
    assert after.agreement > before.agreement + 0.2, (before, after)
    assert result.train_count == 630 and result.val_count == 70 and result.history[0].epoch == 0
    assert result.best.val_loss == min(r.val_loss for r in result.history)


def test_labels_objective_learns_a_fresh_head(problem):
    X, _, _, _, classes = problem
    head = fresh_head("lowrank", 0.5, 30, 12, seed=0)
    before = evaluate(head, X, labels=classes, indices=np.arange(700, 900))
    finetune(head, X, labels=classes, indices=np.arange(700), config=dataclasses.replace(CONFIG, objective="labels"))
    after = evaluate(head, X, labels=classes, indices=np.arange(700, 900))
    assert before.agreement is None and after.accuracy > max(0.6, before.accuracy + 0.3)


def test_dense_head_reproduces_its_logits(problem):
    X, W, b, logits, _ = problem
    result = evaluate(dense_head(W, b), X, teacher_logits=logits)
    assert result.agreement == 1.0 and result.count == 900


def test_best_state_is_restored_and_runs_are_seeded(problem):
    X, W, b, logits, _ = problem
    config = TrainingConfig(epochs=12, lr=0.5, optimizer="sgd", patience=2, lr_patience=0)  # jumpy on purpose
    heads = [fitted_head("lowrank", 0.2, W, b) for _ in range(2)]
    results = [finetune(h, X, teacher_logits=logits, config=config) for h in heads]
    assert [r.val_loss for r in results[0].history] == [r.val_loss for r in results[1].history]
    result = results[0]
    final = finetune(heads[0], X, teacher_logits=logits, config=dataclasses.replace(config, epochs=1))
    assert final.history[0].val_loss == pytest.approx(result.best.val_loss, rel=1e-5)  # the head holds the best state
    assert result.stop_reason in ("early_stopping", "epochs", "diverged")


def test_time_budget_stops_training(problem):
    X, W, b, logits, _ = problem
    config = TrainingConfig(epochs=10_000, batch_size=8, max_seconds=0.3, patience=10_000)
    result = finetune(fitted_head("lowrank", 0.2, W, b), X, teacher_logits=logits, config=config)
    assert result.stop_reason == "time" and result.seconds < 5


def test_memory_mapped_features_stream_like_in_memory(problem, tmp_path):
    X, W, b, logits, _ = problem
    for i, start in enumerate(range(0, 900, 256)):
        np.save(tmp_path / f"x{i}.npy", X[start:start + 256])
    chunked = ChunkedArray([np.load(tmp_path / f"x{i}.npy", mmap_mode="r") for i in range(4)])
    config = dataclasses.replace(CONFIG, epochs=3)
    in_memory = finetune(fitted_head("lowrank", 0.2, W, b), chunked, teacher_logits=logits, config=config)
    streamed = finetune(fitted_head("lowrank", 0.2, W, b), chunked, teacher_logits=logits,
                        config=dataclasses.replace(config, max_memory_bytes=1))
    np.testing.assert_allclose([r.val_loss for r in streamed.history], [r.val_loss for r in in_memory.history],
                               rtol=1e-5)


def test_split_indices_is_seeded_and_disjoint():
    train, val = split_indices(100, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    again = split_indices(100, 0.2, seed=1)
    assert np.array_equal(train, again[0]) and not np.array_equal(val, split_indices(100, 0.2, seed=2)[1])
    train, val = split_indices(np.arange(50, 60), 0.3, seed=0)
    assert set(train) | set(val) == set(range(50, 60))


@pytest.mark.parametrize("kwargs, message", [
    ({"objective": "mse"}, "objective must be one of"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"epochs": 0}, "epochs"), ({"validation_share": 1.0}, "validation_share"), ({"lr": 0.0}, "lr must be a float > 0"), ({"lr": "fast"}, "or .auto."),
    ({"max_seconds": -1.0}, "max_seconds"), ({"lr_factor": 1.5}, "lr_factor"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**kwargs)


def test_missing_targets_are_explained(problem):
    X, W, b, logits, classes = problem
    head = dense_head(W, b)
    with pytest.raises(ValueError, match="needs teacher_logits"):
        finetune(head, X, labels=classes)
    with pytest.raises(ValueError, match="needs labels"):
        finetune(head, X, teacher_logits=logits, config=TrainingConfig(objective="labels"))
    with pytest.raises(ValueError, match="teacher_logits has 5 rows; features have 900"):
        finetune(head, X, teacher_logits=logits[:5])


def test_history_json_and_plot(problem, tmp_path):
    X, W, b, logits, _ = problem
    result = finetune(fitted_head("lowrank", 0.2, W, b), X, teacher_logits=logits,
                      config=dataclasses.replace(CONFIG, epochs=2))
    write_json(tmp_path / "h.json", result.to_json())
    data = json.loads((tmp_path / "h.json").read_text())
    assert [r["epoch"] for r in data["history"]] == [0, 1, 2] and data["config"]["objective"] == "distill"
    plot_histories({"lowrank": result}, tmp_path / "h.png", title="t")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_a_runaway_loss_backs_off_to_the_best_state(problem):
    X, W, b, logits, _ = problem
    config = TrainingConfig(epochs=6, lr=3.0, warmup_epochs=0, max_backoffs=8)  # far too large a step on purpose
    result = finetune(fitted_head("lowrank", 0.2, W, b), X, teacher_logits=logits, config=config)
    assert result.backoffs >= 1 and result.to_json()["backoffs"] == result.backoffs
    assert result.best.val_loss < result.history[0].val_loss and result.history[-1].lr < 3.0 * 0.3 + 1e-12
    unguarded = finetune(fitted_head("lowrank", 0.2, W, b), X, teacher_logits=logits,
                         config=dataclasses.replace(config, spike_factor=None))
    assert unguarded.backoffs == 0


def test_non_finite_features_or_logits_are_refused():
    import torch

    from structmat.finetune import TrainingConfig, finetune

    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((40, 6)).astype(np.float32), rng.standard_normal((40, 3)).astype(np.float32)
    head = torch.nn.Linear(6, 3)
    for bad_x, bad_z, what in ((np.where(X > 2, np.nan, X), Z, "features"), (X, np.where(Z > 2, np.inf, Z), "logits")):
        with pytest.raises(ValueError, match=f"{what} hold .* NaN or Inf"):
            finetune(head, bad_x, teacher_logits=bad_z, config=TrainingConfig(epochs=1))
    with pytest.raises(ValueError, match="labels go up to 7, but the head has 3 outputs"):
        finetune(head, X, labels=np.arange(40) % 8, config=TrainingConfig(objective="labels", epochs=1))


def test_reports_never_hold_nan(tmp_path):
    import json

    from structmat.finetune import write_json

    write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32("nan")})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": [1.0, None], "c": None}
