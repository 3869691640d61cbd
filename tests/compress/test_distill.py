import copy
import json

import pytest
import torch

from structmat.compress import attention_mask_rows, distill_model
from structmat.layers import replace_linear

from tests.compress.conftest import token_batches


def cosine_loss(student, teacher, batches):
    with torch.no_grad():
        values = [1 - torch.nn.functional.cosine_similarity(student(**b)[b["attention_mask"].bool()],
                                                            teacher(**b)[b["attention_mask"].bool()], dim=-1).mean()
                  for b in batches]
    return float(sum(values) / len(values))


def test_distillation_improves_held_out_agreement_and_trains_only_structured_layers(tiny_transformer, tmp_path,
                                                                                   one_torch_thread):
    teacher = tiny_transformer
    student = replace_linear(teacher, "lowrank", 0.25, where="blocks.*")
    embed_before = student.embed.weight.detach().clone()
    train, held_out = token_batches(8, seed=0), token_batches(4, seed=1)
    before = cosine_loss(student, teacher, held_out)
    result = distill_model(student, teacher, train, row_mask=attention_mask_rows, validation=held_out[:2],
                           steps=60, learning_rate=3e-3, warmup_steps=5, eval_every=10,
                           metrics_path=tmp_path / "distill.json", progress=False)
    after = cosine_loss(student, teacher, held_out)
    assert after < 0.8 * before
    assert torch.equal(student.embed.weight, embed_before) and student.embed.weight.requires_grad
    assert result.steps == 60 and result.stop_reason == "steps" and result.best_validation <= result.start_validation
    data = json.loads((tmp_path / "distill.json").read_text())
    assert len(data["history"]) == 60 and {"step", "seconds", "lr", "loss"} <= set(data["history"][0])


def test_distillation_is_deterministic_in_steps(tiny_transformer, one_torch_thread):
    train = token_batches(4, seed=0)
    outputs = []
    for _ in range(2):
        student = replace_linear(tiny_transformer, "lowrank", 0.25, where="blocks.*")
        distill_model(student, tiny_transformer, train, steps=8, eval_every=4, progress=False)
        with torch.no_grad():
            outputs.append(student(**train[0]))
    assert torch.equal(outputs[0], outputs[1])


def test_bad_arguments(tiny_transformer):
    batches = token_batches(1, seed=0)
    student = replace_linear(tiny_transformer, "lowrank", 0.25, where="blocks.*")
    with pytest.raises(ValueError, match="loss must be one of"):
        distill_model(student, tiny_transformer, batches, loss="l1", steps=1)
    with pytest.raises(ValueError, match="give seconds, cpu_seconds or steps"):
        distill_model(student, tiny_transformer, batches, seconds=None)
    with pytest.raises(ValueError, match="cpu_seconds must be > 0"):
        distill_model(student, tiny_transformer, batches, cpu_seconds=0)
    with pytest.raises(ValueError, match="no structured layers"):
        distill_model(copy.deepcopy(tiny_transformer), tiny_transformer, batches, steps=1)
    dict_output = torch.nn.Module()
    dict_output.inner = replace_linear(torch.nn.Sequential(torch.nn.Linear(3, 3)), "lowrank", 0.9)
    dict_output.forward = lambda x: {"out": dict_output.inner(x)}
    teacher = torch.nn.Module()
    teacher.forward = lambda x: {"out": x}
    with pytest.raises(TypeError, match="pass target=callable"):
        distill_model(dict_output, teacher, [torch.ones(1, 3)], steps=1)


def test_a_cpu_time_bound_and_a_callable_loss(tiny_transformer, one_torch_thread):
    train = token_batches(4, seed=0)
    student = replace_linear(tiny_transformer, "lowrank", 0.25, where="blocks.*")
    seen = []

    def loss(s, t, item):
        seen.append(item is not None and "attention_mask" in item)
        return ((s - t) ** 2).mean()

    result = distill_model(student, tiny_transformer, train, loss=loss, seconds=None, cpu_seconds=0.5,
                           eval_every=1000, progress=False)
    assert result.stop_reason == "CPU time limit" and 0.5 <= result.cpu_seconds < 30 and all(seen)
    assert result.history[-1]["cpu_seconds"] >= 0.5 > result.history[-2]["cpu_seconds"]
