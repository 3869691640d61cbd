"""MiniLM compression variants, one per command, for the tables of ``docs/benchmarks/compress.md``.

``compress NAME``: compress all-MiniLM-L6-v2's 36 encoder linears with one setting of
:func:`~structmat.compress.compress_model` (families, allocation, sequential refit), measure the mean cosine
similarity of the held-out sentence embeddings to the dense model's, and save the model, its report and a row
(``results.jsonl``) under ``OUT/NAME``. ``distill NAME``: load that model, distil it for a CPU-time budget with
:func:`~structmat.compress.distill_model` and measure again (row in ``distill.jsonl``). ``efficientnet NAME`` does
the same for EfficientNet-Lite0 on the MNIST digits, distillation included (:func:`run_efficientnet`).
``fit-times`` times one data-aware fit per family and share on three linears of one encoder layer.
``layer-losses`` measures what each layer's cached fits cost on their own and how far any allocation could go
(:func:`run_layer_losses`).

The sentences are :func:`structmat.features.text.english_sentences` (seed 0): 0-511 calibrate, 512-1011 are held
out, 1012-3059 distil (batches of ``--batch``), 3060-3187 choose the distillation's best state. CPU seconds
include the forked fit processes (``os.times``). Run with one thread::

    OMP_NUM_THREADS=1 python -m structmat.benchmarks.compress_variants compress u-sparse --families sparse \\
        --allocation uniform --sequential -o OUT
    OMP_NUM_THREADS=1 python -m structmat.benchmarks.compress_variants distill u-sparse --cpu 600 --lr 2e-4 -o OUT
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "SPLITS"]

#: Sentence index ranges of english_sentences(seed=0).
#: EfficientNet-Lite0: images after the distillation images that choose the distillation's best state.
VALIDATION_IMAGES = 128
SPLITS = {"calibration": (0, 512), "held_out": (512, 1012), "distillation": (1012, 3060), "validation": (3060, 3188)}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load():
    from structmat.compress.minilm import load_minilm
    from structmat.features.text import english_sentences

    model, tokenizer = load_minilm()
    return model, tokenizer, english_sentences(seed=0)


def _batches(tokenizer, sentences, split, batch_size=32):
    from structmat.compress.minilm import tokenize

    start, stop = SPLITS[split]
    return tokenize(tokenizer, sentences[start:stop], batch_size=batch_size)


def _append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _load_average() -> list[str]:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return []


def run_compress(args) -> dict:
    from structmat.compress import attention_mask_rows, compress_model, save_compressed
    from structmat.compress.minilm import MINILM_ENCODER_LINEARS, mean_cosine, sentence_embeddings

    model, tokenizer, sentences = _load()
    calibration = _batches(tokenizer, sentences, "calibration")
    held_out = _batches(tokenizer, sentences, "held_out")
    reference = sentence_embeddings(model, held_out)
    settings = {"row_mask": attention_mask_rows, "sequential": args.sequential, "refit_dense": args.refit_dense,
                "sequential_ridge": args.ridge, "weighting": args.weighting, "measure": args.measure, "progress": False,
                "measure_latency": False, "max_slowdown": None if args.max_slowdown == "none" else float(args.max_slowdown)}
    if args.cache_dir:
        settings["cache_dir"] = args.cache_dir
    if args.grid:
        settings["grid"] = tuple(float(s) for s in args.grid.split(","))
    cpu, wall = _cpu_seconds(), time.perf_counter()
    small, report = compress_model(model, args.budget, calibration, families=args.families.split(","),
                                   where=MINILM_ENCODER_LINEARS, allocation=args.allocation, **settings)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    cosine = mean_cosine(sentence_embeddings(small, held_out), reference)
    out = Path(args.output_dir) / args.name
    report.write(out, "compress")
    save_compressed(small, out / "model.safetensors")
    chosen: dict[str, int] = {}
    for row in report.layers:
        chosen[row.family] = chosen.get(row.family, 0) + 1
    row = {"name": args.name, "families": args.families, "allocation": args.allocation,
           "sequential": args.sequential, "refit_dense": args.refit_dense, "budget": args.budget,
           "weighting": args.weighting, "measure": args.measure, "cosine": cosine, "nparams": report.nparams,
           "share": report.nparams / report.dense_nparams, "cpu_seconds": cpu, "wall_seconds": wall,
           "families_chosen": chosen, "phases_wall_seconds": report.seconds, "load_average": _load_average()}
    _append(Path(args.output_dir) / "results.jsonl", row)
    print(json.dumps(row))
    return row


def run_distill(args) -> dict:
    from structmat.compress import attention_mask_rows, distill_model, load_compressed
    from structmat.compress.minilm import load_minilm, mean_cosine, sentence_embeddings, sentence_loss

    teacher, tokenizer, sentences = _load()
    student = load_minilm()[0]
    load_compressed(Path(args.output_dir) / args.name / "model.safetensors", student)
    held_out = _batches(tokenizer, sentences, "held_out")
    train = _batches(tokenizer, sentences, "distillation", args.batch)
    validation = _batches(tokenizer, sentences, "validation")
    reference = sentence_embeddings(teacher, held_out)
    before = mean_cosine(sentence_embeddings(student, held_out), reference)
    loss = sentence_loss(args.hidden_weight) if args.loss == "sentence" else args.loss
    result = distill_model(student, teacher, train, target=lambda out: out.last_hidden_state, loss=loss,
                           row_mask=attention_mask_rows, validation=validation, seconds=None, cpu_seconds=args.cpu,
                           learning_rate=args.lr, warmup_steps=args.warmup, progress=False,
                           metrics_path=Path(args.output_dir) / args.name / f"distill-{args.cpu:g}-{args.lr:g}.json")
    after = mean_cosine(sentence_embeddings(student, held_out), reference)
    row = {"name": args.name, "cpu_budget": args.cpu, "lr": args.lr, "loss": args.loss,
           "hidden_weight": args.hidden_weight, "batch": args.batch, "warmup": args.warmup, "before": before,
           "after": after, "steps": result.steps, "cpu_seconds": result.cpu_seconds, "wall_seconds": result.seconds,
           "best_step": result.best_step, "load_average": _load_average()}
    _append(Path(args.output_dir) / "distill.jsonl", row)
    print(json.dumps(row))
    return row


def run_efficientnet(args) -> dict:
    """EfficientNet-Lite0 (96 px) on the 5,000 MNIST digits: the 32 pointwise convolutions and the classifier.

    Held out: the 1,000 validation images of ``split_indices(5000, 0.2, seed=0)``; calibration (the first
    ``--calibration``), distillation images (the next ``--distill-images``) and the distillation's validation images
    (the next ``VALIDATION_IMAGES``) come from the 4,000 others in a seeded order. The measure is top-1 agreement
    with the dense model; distillation matches the logits (KL).
    """
    import torch

    from structmat.benchmarks.compress_models import image_batches, top1_agreement
    from structmat.compress import compress_model, distill_model, save_compressed
    from structmat.features import efficientnet_lite0, mnist5k_dataset
    from structmat.finetune import split_indices

    backbone = efficientnet_lite0(96)
    model = backbone.model.eval()
    dataset = mnist5k_dataset()
    train_index, test_index = split_indices(len(dataset), 0.2, seed=0)
    order = np.random.default_rng(0).permutation(train_index)

    calibration = image_batches(backbone, dataset, order[:args.calibration])
    held_out = image_batches(backbone, dataset, test_index)
    with torch.no_grad():
        reference = torch.cat([model(b).argmax(-1) for b in held_out])

    def agreement(candidate) -> float:
        return top1_agreement(candidate, held_out, reference)

    settings = {"sequential": args.sequential, "progress": False, "measure_latency": False,
                "max_slowdown": None if args.max_slowdown == "none" else float(args.max_slowdown)}
    if args.cache_dir:
        settings["cache_dir"] = args.cache_dir
    cpu, wall = _cpu_seconds(), time.perf_counter()
    small, report = compress_model(model, args.budget, calibration, families=args.families.split(","),
                                   allocation=args.allocation, **settings)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    out = Path(args.output_dir) / args.name
    report.write(out, "compress")
    save_compressed(small, out / "model.safetensors")
    row = {"model": "efficientnet_lite0", "name": args.name, "families": args.families,
           "allocation": args.allocation, "sequential": args.sequential, "budget": args.budget,
           "nparams": report.nparams, "share": report.nparams / report.dense_nparams, "agreement": agreement(small),
           "cpu_seconds": cpu, "wall_seconds": wall, "held_out": len(test_index)}
    if args.cpu:
        stop = args.calibration + args.distill_images
        train = image_batches(backbone, dataset, order[args.calibration:stop])
        # validation on images neither fitted nor trained on: the calibration images favour the fitted start
        validation = image_batches(backbone, dataset, order[stop:stop + VALIDATION_IMAGES])
        result = distill_model(small, model, train, loss="kl", validation=validation, seconds=None,
                               cpu_seconds=args.cpu, learning_rate=args.lr, progress=False,
                               metrics_path=out / f"distill-{args.cpu:g}-{args.lr:g}.json")
        row.update(distilled_agreement=agreement(small), distill_cpu_seconds=result.cpu_seconds,
                   distill_steps=result.steps, lr=args.lr)
    row["load_average"] = _load_average()
    _append(Path(args.output_dir) / "efficientnet.jsonl", row)
    print(json.dumps(row))
    return row


def run_fit_times(args) -> list[dict]:
    """CPU seconds and output error of one data-aware fit per family and share on the query, intermediate and
    output linears of one encoder layer (inputs: the calibration sentences); rows in ``fit_times.jsonl``."""
    from structmat.approximators import approximate
    from structmat.compress import attention_mask_rows, collect_statistics, select_layers
    from structmat.metrics import output_error

    model, tokenizer, sentences = _load()
    prefix = f"encoder.layer.{args.layer}."
    names = [prefix + "attention.self.query", prefix + "intermediate.dense", prefix + "output.dense"]
    layers = [(name, module) for name, module in select_layers(model, "encoder.*") if name in names]
    stats = collect_statistics(model, layers, _batches(tokenizer, sentences, "calibration"),
                               row_mask=attention_mask_rows)
    rows = []
    for name, module in layers:
        W = module.weight.detach().double().numpy()
        for family in args.families.split(","):
            for share in (0.25, 0.5):
                start = time.process_time()
                M = approximate(W, family, share, inputs=stats[name])
                seconds = time.process_time() - start
                rows.append({"layer": name, "shape": list(W.shape), "family": family, "share": share,
                             "cpu_seconds": seconds, "output_error": output_error(W, M, stats[name]),
                             "load_average": _load_average()})
                _append(Path(args.output_dir) / "fit_times.jsonl", rows[-1])
                print(json.dumps(rows[-1]))
    return rows


def _interpolated_points(shares, losses, size: int, fine) -> tuple[list, list]:
    """Costs and losses on the ``fine`` shares, the loss interpolated linearly in its logarithm (dense: share 1)."""
    order = np.argsort(shares)
    log_loss = np.log(np.maximum(np.asarray(losses, dtype=np.float64)[order], 1e-7))
    return list(fine * size), list(np.exp(np.interp(fine, np.asarray(shares)[order], log_loss)))


def layer_loss_bound(rows: list[dict], budget: float) -> dict:
    """The uniform allocation's loss at ``budget`` and the best allocation's, if the layers' losses added up.

    ``rows``: per layer, ``shape`` and ``points`` (``share``, ``loss``). The dense layer (share 1, loss 0) is a
    point of every layer. ``grid``: the fitted points only; ``fine``: shares 0.02, 0.03, ..., 1 with the losses
    interpolated linearly in their logarithm. Solved by :func:`structmat.compress.allocation.allocate_global`.
    """
    from structmat.compress.allocation import allocate_global

    sizes = [r["shape"][0] * r["shape"][1] for r in rows]
    total = float(sum(sizes))
    grid = [[p["share"] for p in r["points"]] + [1.0] for r in rows]
    losses = [[p["loss"] for p in r["points"]] + [0.0] for r in rows]
    fine = np.round(np.arange(0.02, 1.0001, 0.01), 2)
    interpolated = [_interpolated_points(g, l, size, fine) for g, l, size in zip(grid, losses, sizes)]
    at_budget = int(np.argmin(abs(fine - budget)))
    result = {"budget": budget, "uniform_predicted_loss": float(sum(c[1][at_budget] for c in interpolated))}
    for label, costs, values in (("grid", [list(np.multiply(g, size)) for g, size in zip(grid, sizes)], losses),
                                 ("fine", [c[0] for c in interpolated], [c[1] for c in interpolated])):
        choice = allocate_global(costs, values, budget * total)
        result[f"best_{label}_predicted_loss"] = float(sum(v[i] for v, i in zip(values, choice)))
        result[f"best_{label}_shares"] = {r["layer"]: float(c[i] / size)
                                          for r, c, i, size in zip(rows, costs, choice, sizes)}
    return result


def run_layer_losses(args) -> dict:
    """Each encoder linear alone replaced by each of its cached ``--family`` fits (the curves of an earlier
    ``compress`` run on ``--cache-dir``): the held-out loss ``1 − mean cosine`` on the first ``--sentences`` held-out
    sentences (``layer_losses.jsonl``). Then, if the losses of the layers simply added up, the best loss any
    allocation of ``--budget`` over these fits and the dense layers could reach, beside the uniform one's
    (``layer_losses_bound.json``): on the fitted grid, and on a fine grid of shares with the losses interpolated
    between the fitted ones. Every grid point of every layer replaced at once checks the additivity."""
    import torch

    from structmat.compress import attention_mask_rows, select_layers
    from structmat.compress.config import CompressionConfig
    from structmat.compress.curves import LayerCurve
    from structmat.compress.minilm import MINILM_ENCODER_LINEARS, mean_cosine, sentence_embeddings
    from structmat.compress.pipeline import _statistics

    model, tokenizer, sentences = _load()
    held_out = _batches(tokenizer, sentences, "held_out")[:max(1, args.sentences // 32)]
    reference = sentence_embeddings(model, held_out)
    layers = select_layers(model, MINILM_ENCODER_LINEARS)
    stats = _statistics(model, layers, _batches(tokenizer, sentences, "calibration"),
                        CompressionConfig(row_mask=attention_mask_rows), Path(args.cache_dir), False)

    def loss() -> float:
        return 1.0 - mean_cosine(sentence_embeddings(model, held_out), reference)

    out = Path(args.output_dir)
    done = {}
    if (out / "layer_losses.jsonl").exists():  # resume: layers measured by an earlier run
        for line in (out / "layer_losses.jsonl").read_text().splitlines():
            row = json.loads(line)
            done[row["layer"]] = row
    rows, fits = [], []
    for name, module in layers:
        W = module.weight.detach().double().numpy()
        curve = LayerCurve.open(args.cache_dir, name, W, stats[name])
        points = sorted((p for p in curve.kept_points() if p["family"] == args.family and p["options"] == ""),
                        key=lambda p: p["nparams"])
        if not points:
            raise SystemExit(f"no cached {args.family} fit of {name} under {args.cache_dir}; run compress first")

        def fitted(p, curve=curve, dtype=module.weight.dtype):
            return torch.from_numpy(curve.matrix(args.family, {}, p["budget"]).to_dense()).to(dtype)

        fits.append({round(p["nparams"] / W.size, 2): (p, fitted) for p in points})
        if name in done:
            rows.append(done[name])
            continue
        original = module.weight.data.clone()
        row = {"layer": name, "shape": list(W.shape), "points": []}
        for p in points:
            module.weight.data.copy_(fitted(p))
            row["points"].append({"share": p["nparams"] / W.size, "output_error": p["output_error"], "loss": loss()})
            module.weight.data.copy_(original)
        rows.append(row)
        _append(out / "layer_losses.jsonl", row)
        print(json.dumps(row), flush=True)
    summary = {"family": args.family, "sentences": 32 * len(held_out), **layer_loss_bound(rows, args.budget),
               "load_average": _load_average(), "additivity": []}
    originals = [module.weight.data.clone() for _, module in layers]
    measured = [{round(p["share"], 2): p["loss"] for p in r["points"]} for r in rows]
    for share in sorted(set.intersection(*(set(f) & set(m) for f, m in zip(fits, measured)))):  # all layers at once
        for (_, module), f in zip(layers, fits):
            point, fitted = f[share]
            module.weight.data.copy_(fitted(point))
        summary["additivity"].append({
            "share": share, "measured_loss": loss(),
            "sum_of_layer_losses": float(sum(m[share] for m in measured))})
        for (_, module), original in zip(layers, originals):
            module.weight.data.copy_(original)
    (out / "layer_losses_bound.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("_shares")}))
    return summary


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(prog="python -m structmat.benchmarks.compress_variants",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compress")
    c.add_argument("name")
    c.add_argument("--families", default="lowrank,dense", help="comma-separated candidate families")
    c.add_argument("--allocation", default="global", choices=("global", "uniform"))
    c.add_argument("--sequential", action="store_true")
    c.add_argument("--refit-dense", action="store_true")
    c.add_argument("--budget", type=float, default=0.5)
    c.add_argument("--ridge", type=float, default=1e-3)
    c.add_argument("--weighting", default="sensitivity")
    c.add_argument("--measure", default="params", choices=("params", "bytes"))
    c.add_argument("--grid", help="comma-separated shares (default: compress_model's)")
    c.add_argument("--max-slowdown", default="none")
    c.add_argument("--cache-dir")
    d = sub.add_parser("distill")
    d.add_argument("name")
    d.add_argument("--cpu", type=float, default=300.0, help="CPU seconds of distillation")
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--loss", default="sentence", help="sentence (embedding cosine + hidden MSE), cosine or mse")
    d.add_argument("--hidden-weight", type=float, default=1.0)
    d.add_argument("--batch", type=int, default=32)
    d.add_argument("--warmup", type=int, default=20)
    e = sub.add_parser("efficientnet")
    e.add_argument("name")
    e.add_argument("--families", default="lowrank,sparse,dense")
    e.add_argument("--allocation", default="global", choices=("global", "uniform"))
    e.add_argument("--sequential", action="store_true")
    e.add_argument("--budget", type=float, default=0.5)
    e.add_argument("--calibration", type=int, default=512)
    e.add_argument("--distill-images", type=int, default=2048)
    e.add_argument("--cpu", type=float, default=0.0, help="CPU seconds of distillation (0: none)")
    e.add_argument("--lr", type=float, default=1e-4)
    e.add_argument("--max-slowdown", default="none")
    e.add_argument("--cache-dir")
    f = sub.add_parser("fit-times")
    f.add_argument("--layer", type=int, default=2)
    f.add_argument("--families", default="lowrank,sparse,lowrank_sparse,monarch,block_sparse")
    g = sub.add_parser("layer-losses")
    g.add_argument("--family", default="sparse")
    g.add_argument("--budget", type=float, default=0.5)
    g.add_argument("--sentences", type=int, default=256, help="held-out sentences (multiples of 32)")
    g.add_argument("--cache-dir", required=True, help="the cache of an earlier compress run with --family")
    for p in (c, d, e, f, g):
        p.add_argument("--output-dir", "-o", required=True)
    args = parser.parse_args(argv)
    {"compress": run_compress, "distill": run_distill, "efficientnet": run_efficientnet,
     "fit-times": run_fit_times, "layer-losses": run_layer_losses}[args.command](args)


if __name__ == "__main__":
    main()
