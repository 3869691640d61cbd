"""Whole-model compression of real models: all-MiniLM-L6-v2 on English text, EfficientNet-Lite0 on digit images.

Each benchmark compresses the model at ``budget`` with the global allocation and with the uniform one (every
structured candidate family on its own), measures agreement with the dense model on held-out inputs, distils the
globally allocated model and measures again (at ``distill_seconds / 2`` and at ``distill_seconds``), times a
second budget on the cached curves, and checks that ``save_compressed`` / ``load_compressed`` give identical
outputs. Calibration, distillation, held-out inputs and the inputs that choose the distillation's best state
(``validation``, after the distillation inputs) are disjoint. Results go to ``<name>.json`` and
``<name>.csv`` (one row per variant), with the report (text, CSV, JSON, allocation plot) of the global run.

- MiniLM: sentences from :func:`structmat.features.text.english_sentences` (seeded); the measure is the mean cosine
  similarity of the sentence embeddings (mean pooling over the attention mask, L2-normalised) to the dense model's;
  the 36 encoder linears are compressed; distillation matches the last hidden states (cosine, real tokens only).
- EfficientNet-Lite0: the 5,000 MNIST digits at 96 px, split with ``split_indices(5000, 0.2, seed=0)`` (held-out:
  the 1,000 validation images; calibration and distillation from the 4,000 others); the measure is top-1
  agreement with the dense model; the 32 pointwise convolutions and the classifier are compressed; distillation
  matches the logits (KL divergence).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from structmat.benchmarks.results import write_rows
from structmat.compress import (attention_mask_rows, compress_model, distill_model, load_compressed,
                                save_compressed)
from structmat.matrices.io import atomic_write

__all__ = ["run_minilm_benchmark", "run_efficientnet_benchmark", "BENCH_COLUMNS", "machine_description"]

logger = logging.getLogger(__name__)

BENCH_COLUMNS = ["model", "variant", "allocation", "families", "budget", "nparams", "dense_nparams", "share",
                 "agreement", "cpu_seconds", "wall_seconds", "distill_seconds", "distill_steps"]


def machine_description() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"cpu": cpu, "load_average": load, "python": platform.python_version(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the forked fits)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class _Clock:
    def __init__(self):
        self.cpu, self.wall = _cpu_seconds(), time.perf_counter()

    def read(self) -> tuple[float, float]:
        return _cpu_seconds() - self.cpu, time.perf_counter() - self.wall


def _write(output_dir: Path, name: str, rows: list[dict], extra: dict) -> list[Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / f"{name}.csv", output_dir / f"{name}.json"]
    write_rows(paths[0], rows, BENCH_COLUMNS)
    atomic_write(paths[1], lambda f: f.write(json.dumps({"rows": rows, **extra}, indent=1).encode()))
    return paths


def _compare_variants(model_name, model, budget, calibration, agreement, families, where, settings, output_dir,
                      second_budget):
    """Global and uniform compressions at ``budget`` (+ a second global budget); rows and the global model."""
    rows, structured = [], [f for f in families if f != "dense"]
    clock = _Clock()
    small, report = compress_model(model, budget, calibration, families=families, where=where, **settings)
    cpu, wall = clock.read()
    report.write(output_dir, f"{model_name}-global")
    rows.append({"model": model_name, "variant": "global", "allocation": "global", "families": "+".join(families),
                 "budget": budget, "nparams": report.nparams, "dense_nparams": report.dense_nparams,
                 "share": report.nparams / report.dense_nparams, "agreement": agreement(small),
                 "cpu_seconds": cpu, "wall_seconds": wall})
    logger.info("%s global %s: agreement %.4f (%.0f CPU s)", model_name, budget, rows[-1]["agreement"], cpu)
    if second_budget is not None:
        clock = _Clock()
        other, other_report = compress_model(model, second_budget, calibration, families=families, where=where,
                                             **settings)
        cpu2, wall2 = clock.read()
        rows.append({"model": model_name, "variant": "global, second budget", "allocation": "global",
                     "families": "+".join(families), "budget": second_budget, "nparams": other_report.nparams,
                     "dense_nparams": other_report.dense_nparams,
                     "share": other_report.nparams / other_report.dense_nparams, "agreement": agreement(other),
                     "cpu_seconds": cpu2, "wall_seconds": wall2})
    for family in structured:
        clock = _Clock()
        uniform, uniform_report = compress_model(model, budget, calibration, families=[family], where=where,
                                                 allocation="uniform", **settings)
        cpu, wall = clock.read()
        rows.append({"model": model_name, "variant": f"uniform {family}", "allocation": "uniform",
                     "families": family, "budget": budget, "nparams": uniform_report.nparams,
                     "dense_nparams": uniform_report.dense_nparams,
                     "share": uniform_report.nparams / uniform_report.dense_nparams, "agreement": agreement(uniform),
                     "cpu_seconds": cpu, "wall_seconds": wall})
        logger.info("%s uniform %s: agreement %.4f", model_name, family, rows[-1]["agreement"])
    return rows, small, report


def _distill_rows(model_name, small, teacher, train, validation, agreement, budget, families, seconds, distill_kwargs,
                  output_dir, report):
    rows, total_steps = [], 0
    for phase in (1, 2):
        result = distill_model(small, teacher, train, validation=validation, seconds=seconds / 2,
                               metrics_path=output_dir / f"{model_name}-distill-{phase}.json", **distill_kwargs)
        total_steps += result.steps
        rows.append({"model": model_name, "variant": f"global + distillation {phase * seconds / 2:.0f} s",
                     "allocation": "global", "families": "+".join(families), "budget": budget,
                     "nparams": report.nparams, "dense_nparams": report.dense_nparams,
                     "share": report.nparams / report.dense_nparams, "agreement": agreement(small),
                     "distill_seconds": phase * seconds / 2, "distill_steps": total_steps})
        logger.info("%s distilled %d s: agreement %.4f", model_name, phase * seconds / 2, rows[-1]["agreement"])
    return rows


def _round_trip(small, fresh_model, outputs) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_compressed(small, Path(tmp) / "model.safetensors")
        size = path.stat().st_size
        loaded = load_compressed(path, fresh_model)
        with torch.no_grad():
            a, b = outputs(small), outputs(loaded)
    return {"identical": bool(torch.equal(a, b)), "max_abs_difference": float((a - b).abs().max()),
            "file_bytes": size}


def run_minilm_benchmark(output_dir, *, budget: float = 0.5, families=("lowrank", "sparse", "dense"),
                         calibration: int = 512, held_out: int = 500, distill_sentences: int = 2048,
                         validation: int = 128, distill_seconds: float = 600.0,
                         second_budget: float | None = 0.4, cache_dir=None,
                         settings: dict | None = None, seed: int = 0) -> list[dict]:
    """The MiniLM benchmark (see the module docstring); returns its rows and writes ``minilm.csv/json``."""
    from structmat.compress.minilm import (MINILM_ENCODER_LINEARS, load_minilm, mean_cosine, sentence_embeddings,
                                           tokenize)
    from structmat.features.text import english_sentences

    output_dir = Path(output_dir)
    machine = machine_description()
    torch.manual_seed(seed)
    model, tokenizer = load_minilm()
    sentences = english_sentences(seed=seed)
    start = calibration + held_out + distill_sentences
    needed = start + validation
    if len(sentences) < needed:
        raise ValueError(f"only {len(sentences)} sentences on this machine; {needed} needed")
    calibration_batches = tokenize(tokenizer, sentences[:calibration])
    held_out_batches = tokenize(tokenizer, sentences[calibration:calibration + held_out])
    train_batches = tokenize(tokenizer, sentences[calibration + held_out:start])
    validation_batches = tokenize(tokenizer, sentences[start:needed])
    reference = sentence_embeddings(model, held_out_batches)

    def agreement(candidate) -> float:
        return mean_cosine(sentence_embeddings(candidate, held_out_batches), reference)

    settings = {"row_mask": attention_mask_rows, "cache_dir": cache_dir, **(settings or {})}
    rows, small, report = _compare_variants("minilm", model, budget, calibration_batches, agreement, list(families),
                                            MINILM_ENCODER_LINEARS, settings, output_dir, second_budget)
    rows += _distill_rows("minilm", small, model, train_batches, validation_batches, agreement, budget, list(families),
                          distill_seconds, {"target": lambda out: out.last_hidden_state, "loss": "cosine",
                                            "row_mask": attention_mask_rows, "learning_rate": 1e-4},
                          output_dir, report)
    fresh, _ = load_minilm()
    round_trip = _round_trip(small, fresh, lambda m: sentence_embeddings(m, held_out_batches[:4]))
    _write(output_dir, "minilm", rows, {"machine": machine, "round_trip": round_trip,
                                        "sentences": {"calibration": calibration, "held_out": held_out,
                                                      "distillation": distill_sentences, "validation": validation,
                                                      "seed": seed}})
    return rows


def image_batches(backbone, dataset, indices, batch: int = 32) -> list:
    """The dataset's images at ``indices``, transformed for the backbone, in channels-last batches of ``batch``."""
    out = []
    for start in range(0, len(indices), batch):
        chunk = torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in indices[start:start + batch]])
        out.append(backbone.transform(chunk).contiguous(memory_format=torch.channels_last))
    return out


def top1_agreement(candidate, batches, reference) -> float:
    """Share of the images in ``batches`` whose top-1 class under ``candidate`` (put in eval mode) is ``reference``'s."""
    candidate.eval()
    with torch.no_grad():
        predicted = torch.cat([candidate(b).argmax(-1) for b in batches])
    return float((predicted == reference).float().mean())


def run_efficientnet_benchmark(output_dir, *, budget: float = 0.5, families=("lowrank", "sparse", "dense"),
                               calibration: int = 512, held_out: int = 1000, distill_images: int = 2048,
                               validation: int = 128, image_size: int = 96, distill_seconds: float = 600.0,
                               second_budget: float | None = 0.4, cache_dir=None, settings: dict | None = None,
                               seed: int = 0) -> list[dict]:
    """The EfficientNet-Lite0 benchmark (see the module docstring); writes ``efficientnet_lite0.csv/json``."""
    from structmat.features import efficientnet_lite0, mnist5k_dataset
    from structmat.finetune import split_indices

    output_dir = Path(output_dir)
    machine = machine_description()
    backbone = efficientnet_lite0(image_size)
    model = backbone.model.eval()
    dataset = mnist5k_dataset()
    train_index, test_index = split_indices(len(dataset), 0.2, seed=0)
    order = np.random.default_rng(seed).permutation(train_index)
    test_index = test_index[:held_out]

    calibration_batches = image_batches(backbone, dataset, order[:calibration])
    stop = calibration + distill_images
    train_batches = image_batches(backbone, dataset, order[calibration:stop])
    validation_batches = image_batches(backbone, dataset, order[stop:stop + validation])
    held_out_batches = image_batches(backbone, dataset, test_index)
    with torch.no_grad():
        reference = torch.cat([model(b).argmax(-1) for b in held_out_batches])

    def agreement(candidate) -> float:
        return top1_agreement(candidate, held_out_batches, reference)

    settings = {"cache_dir": cache_dir, **(settings or {})}
    rows, small, report = _compare_variants("efficientnet_lite0", model, budget, calibration_batches, agreement,
                                            list(families), None, settings, output_dir, second_budget)
    rows += _distill_rows("efficientnet_lite0", small, model, train_batches, validation_batches, agreement, budget,
                          list(families), distill_seconds, {"loss": "kl", "learning_rate": 1e-4}, output_dir, report)
    round_trip = _round_trip(small, copy.deepcopy(efficientnet_lite0(image_size).model.eval()),
                             lambda m: torch.cat([m.eval()(b) for b in held_out_batches[:2]]).detach())
    _write(output_dir, "efficientnet_lite0", rows, {"machine": machine, "round_trip": round_trip,
                                                    "images": {"calibration": calibration, "held_out": len(test_index),
                                                               "distillation": distill_images,
                                                               "validation": validation,
                                                               "image_size": image_size}})
    return rows
