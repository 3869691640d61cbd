"""``distill_model``: train a compressed model end to end to reproduce the dense model on unlabeled inputs.

The student's structured layers (their structured parameters and biases) train; every other parameter is frozen
for the run and unfrozen afterwards. Each step runs a batch through the teacher (without autograd; its targets are
kept in memory when the batches are a sequence, so the teacher runs once per batch) and the student, and lowers
a loss between the two targets: by default ``1 − cosine similarity`` along the last axis, averaged over rows (the
rows ``row_mask`` keeps), which is what sentence-embedding and feature models are judged by; ``"mse"`` is the
squared error relative to the teacher's squared norm; ``"kl"`` the distillation loss of logits (Hinton, Vinyals &
Dean, "Distilling the knowledge in a neural network", 2015, eq. (2) with temperature 1).

The student runs in evaluation mode (no dropout, frozen batch-norm statistics), as the teacher does. Adam with a
linear warm-up over ``warmup_steps`` and a cosine decay to zero over the run (the largest of the shares of
``steps``, ``seconds`` and ``cpu_seconds`` used so far; Loshchilov & Hutter, "SGDR", ICLR 2017, eq. (5)). Every ``eval_every`` steps the loss on ``validation`` batches
is measured and the best state is kept; the student ends in its best state. Per-step metrics go to a JSON file.
A run bounded by ``steps`` is deterministic; one bounded by time depends on the machine's speed.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from structmat.compress.calibration import call_model

__all__ = ["distill_model", "DistillationResult", "structured_parameters", "LOSSES"]

LOSSES = ("cosine", "mse", "kl")


@dataclass
class DistillationResult:
    """What :func:`distill_model` did: the per-step history, the validation record and the best step."""

    steps: int
    seconds: float
    cpu_seconds: float
    best_step: int
    best_validation: float
    start_validation: float
    stop_reason: str
    learning_rate: float
    history: list = field(default_factory=list)       # per step: step, seconds, cpu_seconds, lr, loss
    validation: list = field(default_factory=list)    # per evaluation: step, seconds, cpu_seconds, loss

    def to_json(self) -> dict:
        return asdict(self)

    def write(self, path) -> Path:
        from structmat.matrices.io import atomic_write

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(json.dumps(self.to_json(), indent=1).encode()))
        return path


def structured_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the structured layers of ``model`` (weights in structured form and biases)."""
    from structmat.compress.selection import structured_layers

    params, seen = [], set()
    for _, module in structured_layers(model):
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _default_target(output):
    if torch.is_tensor(output):
        return output
    raise TypeError(f"the model returns a {type(output).__name__}, not a tensor; pass target=callable(output) -> "
                    "Tensor picking what to match (e.g. lambda out: out.last_hidden_state)")


def _loss(kind, student: torch.Tensor, teacher: torch.Tensor, mask, item=None) -> torch.Tensor:
    if callable(kind):
        return kind(student, teacher, item)
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher targets differ in shape: {tuple(student.shape)} vs "
                         f"{tuple(teacher.shape)}")
    if mask is not None and tuple(mask.shape) == tuple(student.shape[:-1]):
        student, teacher = student[mask], teacher[mask]
    student = student.reshape(-1, student.shape[-1]).float()
    teacher = teacher.reshape(-1, teacher.shape[-1]).float()
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8).mean()
    if kind == "mse":
        return ((student - teacher) ** 2).sum() / (teacher ** 2).sum().clamp_min(1e-30)
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


def distill_model(student: nn.Module, teacher: nn.Module, batches, *, target=None, loss="cosine",
                  row_mask=None, validation=None, seconds: float | None = 300.0, steps: int | None = None,
                  cpu_seconds: float | None = None,
                  learning_rate: float = 1e-4, warmup_steps: int = 20, weight_decay: float = 0.0,
                  eval_every: int = 25, seed: int = 0, metrics_path=None, progress: bool | None = None,
                  ) -> DistillationResult:
    """Distil ``teacher`` into ``student`` (in place) on unlabeled ``batches``; return the record.

    Parameters
    ----------
    student : nn.Module
        The compressed model; its structured layers train (see the module docstring).
    teacher : nn.Module
        The dense model (not modified).
    batches : sequence or iterable of model inputs
        Passed like calibration items (mapping → ``**item``, tuple → ``*item``, else ``item``); cycled over in a
        seeded order when a sequence, else iterated once per pass.
    target : callable(output) -> Tensor, optional
        Picks the tensor to match from a model output; default: the output itself when it is a tensor.
    loss : {"cosine", "mse", "kl"} or callable(student_target, teacher_target, item) -> scalar Tensor
        A callable replaces the built-in losses (``row_mask`` is then not applied; the item is passed so that
        it can use its own mask), e.g. :func:`structmat.compress.minilm.sentence_loss`.
    row_mask : callable(item) -> bool tensor, optional
        Rows (positions) to count, e.g. :func:`~structmat.compress.attention_mask_rows`.
    validation : sequence of model inputs, optional
        Held-out batches for the best-state choice; default: the first batch of ``batches``.
    seconds, cpu_seconds, steps : optional
        Stop after this much wall-clock time, this much CPU time of this process (``time.process_time``: on a
        loaded machine the fair bound, and with one thread the work done), or this many steps, whichever comes
        first (at least one must be given; pass ``seconds=None`` for a CPU-time bound alone). The cosine decay
        follows the bound nearest to its end.
    learning_rate, warmup_steps, weight_decay : Adam's settings (see the module docstring for the schedule).
    eval_every : int
        Steps between validation measurements.
    seed : int
        Seeds the batch order.
    metrics_path : path, optional
        Write the :class:`DistillationResult` (with per-step metrics) there as JSON.
    progress : bool, optional
        A tqdm bar; default when stderr is a terminal.
    """
    import sys

    if not callable(loss) and loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES} or a callable(student, teacher, item); got {loss!r}")
    if seconds is None and steps is None and cpu_seconds is None:
        raise ValueError("give seconds, cpu_seconds or steps to bound the distillation")
    for name, value in (("seconds", seconds), ("cpu_seconds", cpu_seconds)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0; got {value!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an int >= 1; got {steps!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got {learning_rate!r}")
    target = target or _default_target
    params = structured_parameters(student)
    if not params:
        raise ValueError("the student has no structured layers to train; compress it first")
    progress = sys.stderr.isatty() if progress is None else progress
    sequence = isinstance(batches, Sequence)
    items = list(batches) if not sequence else batches
    if len(items) == 0:
        raise ValueError("batches held no items")
    validation = list(validation) if validation is not None else [items[0]]

    teacher.eval()
    teacher_cache: dict[int, torch.Tensor] = {}

    def teacher_target(index: int | None, item):
        if index is not None and index in teacher_cache:
            return teacher_cache[index]
        with torch.inference_mode():
            value = target(call_model(teacher, item)).detach().clone()
        if index is not None:
            teacher_cache[index] = value
        return value

    validation_targets = [teacher_target(None, item) for item in validation]

    def validate() -> float:
        with torch.no_grad():
            values = [float(_loss(loss, target(call_model(student, item)), t,
                                  row_mask(item) if row_mask else None, item))
                      for item, t in zip(validation, validation_targets)]
        return sum(values) / len(values)

    trainable = {id(p) for p in params}
    frozen = [p for p in student.parameters() if id(p) not in trainable and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    best_value = start_value = validate()
    best_state, best_step = copy.deepcopy(student.state_dict()), 0
    history, record = [], [{"step": 0, "seconds": 0.0, "loss": start_value}]
    step, stop_reason, order = 0, "steps", []
    bar = tqdm(total=steps, desc="distill", disable=not progress, unit="step", leave=False)
    was_training = student.training
    student.eval()  # no dropout, frozen batch-norm statistics: the student computes what the teacher computes
    try:
        while True:
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if steps is not None and step >= steps:
                stop_reason = "steps"
                break
            if seconds is not None and elapsed >= seconds:
                stop_reason = "time limit"
                break
            if cpu_seconds is not None and cpu >= cpu_seconds:
                stop_reason = "CPU time limit"
                break
            if not order:
                order = torch.randperm(len(items), generator=generator).tolist()
            index = order.pop()
            item = items[index]
            done = max(step / steps if steps is not None else 0.0, elapsed / seconds if seconds else 0.0,
                       cpu / cpu_seconds if cpu_seconds else 0.0)
            rate = learning_rate * min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
            for group in optimizer.param_groups:
                group["lr"] = rate
            goal = teacher_target(index if sequence else None, item)
            optimizer.zero_grad(set_to_none=True)
            value = _loss(loss, target(call_model(student, item)), goal, row_mask(item) if row_mask else None, item)
            value.backward()
            optimizer.step()
            step += 1
            history.append({"step": step, "seconds": time.perf_counter() - start,
                            "cpu_seconds": time.process_time() - cpu_start, "lr": rate, "loss": float(value.detach())})
            if step % eval_every == 0:
                current = validate()
                record.append({"step": step, "seconds": time.perf_counter() - start,
                               "cpu_seconds": time.process_time() - cpu_start, "loss": current})
                if current < best_value:
                    best_value, best_step = current, step
                    best_state = copy.deepcopy(student.state_dict())
            bar.update(1)
            bar.set_postfix(loss=f"{float(value.detach()):.4f}", best=f"{best_value:.4f}")
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        bar.close()
        for p in frozen:
            p.requires_grad_(True)
    if step % eval_every:
        current = validate()
        record.append({"step": step, "seconds": time.perf_counter() - start,
                       "cpu_seconds": time.process_time() - cpu_start, "loss": current})
        if current < best_value:
            best_value, best_step = current, step
            best_state = copy.deepcopy(student.state_dict())
    student.load_state_dict(best_state)
    student.train(was_training)
    result = DistillationResult(steps=step, seconds=time.perf_counter() - start,
                                cpu_seconds=time.process_time() - cpu_start, best_step=best_step,
                                best_validation=best_value, start_validation=start_value, stop_reason=stop_reason,
                                learning_rate=learning_rate, history=history, validation=record)
    if metrics_path is not None:
        result.write(metrics_path)
    return result
