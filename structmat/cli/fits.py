"""``structmat bench-fits MODE``: the fit-quality and fit-time benchmarks, one mode each, every one a resumable CSV
and a PNG in its output directory.

- ``containment``: every family that contains low rank against ``lowrank``, plain and fitted to the outputs;
- ``scaling``: one-thread CPU seconds of every family's fit from 512² to 4096², and the growth exponent;
- ``ldr``: Toeplitz-like and LDR fits of a cached head, plain and data-aware, beside the low rank they contain;
- ``sparse-conv`` / ``sparse-classifier``: the sparse families' output-aware fits on EfficientNet-Lite0's 1×1
  convolutions and classifier;
- ``compare``: families containing low rank against ``lowrank`` in existing sweep / bench-data-aware CSVs.

A ``(_add, _run)`` pair collected in :data:`structmat.cli.COMMANDS`; nothing heavy is imported until it runs.
"""

from __future__ import annotations

from structmat.cli._common import (DEFAULT_OUTPUT, DEMO_BUDGETS, RunFailedError, UserError, add_family_arg,
                                  family_names, load_matrices, output_dir)

__all__ = ["FIT_COMMANDS"]

CONTAINMENT_MATRICES = ["efficientnet_lite0:all", "gaussian:256x256", "gaussian:512x512", "gaussian:1024x1024"]


def _common(p, *, budgets=True):
    add_family_arg(p)
    if budgets:
        p.add_argument("--budget", "-b", nargs="+", type=float, default=list(DEMO_BUDGETS),
                       help="shares in (0, 1] (default: 0.1 0.25 0.5)")
    p.add_argument("--output-dir", "-o", help=f"directory for the CSV and PNG (default: {DEFAULT_OUTPUT}/bench-fits-MODE)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping finished cells")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _add_bench_fits(sub):
    p = sub.add_parser("bench-fits", help="fit quality and fit time: containment of low rank, scaling to 4096², ...",
                       description="Benchmarks of the fits, one mode each; every mode writes a CSV (rewritten "
                                   "after every cell, resumed on a rerun) and a PNG. Fits run on one thread; times "
                                   "are process CPU seconds.")
    modes = p.add_subparsers(dest="mode", metavar="MODE")
    modes.required = True

    c = modes.add_parser("containment", help="families containing low rank vs lowrank, plain and with inputs",
                         description="Fit every matrix with lowrank and every family that contains it at every "
                                     "share; with --cache, the matrix equal to the cache's dense head (or the head "
                                     "itself) is also fitted to its outputs on the training rows of the seeded "
                                     "split. Print, per family, the cells at or below low rank and the worst "
                                     "margin; write containment.csv and containment.png (low rank dashed).")
    c.add_argument("--matrix", "-m", action="append",
                   help=f"weight spec (repeatable; default {' '.join(CONTAINMENT_MATRICES)})")
    c.add_argument("--cache", help="feature cache whose features are the inputs of its dense head")
    c.add_argument("--test-share", type=float, default=0.2, help="held-out share of the cache rows (default 0.2)")
    c.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split (default 0)")
    c.add_argument("--cells", action="store_true", help="also print every cell's comparison")
    _common(c)

    s = modes.add_parser("scaling", help="fit CPU seconds against n (512..4096) and the growth exponent",
                         description="Fit seeded n×n matrices of each kind at one share with every family's "
                                     "default fit on one thread; write fit_scaling_<kind>.csv and .png.")
    s.add_argument("--sizes", "-n", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    s.add_argument("--share", type=float, default=0.25, help="share of n² (default 0.25)")
    s.add_argument("--kind", nargs="+", default=["gaussian"], choices=["gaussian", "powerlaw"],
                   help="synthetic matrices: gaussian, powerlaw (singular values i^-0.7, like trained weights)")
    s.add_argument("--repeats", type=int, default=1, help="fits per cell; times are medians (default 1)")
    s.add_argument("--warmup", type=int, default=0,
                   help="untimed fits of each cell's matrix before the timed ones: leaves out the cost of touching "
                        "fresh memory in the first large fit of a process (default 0)")
    _common(s, budgets=False)

    ldr = modes.add_parser("ldr", help="Toeplitz-like and LDR fits of a cached head, plain and data-aware",
                           description="Fit the cache's dense head with each family at each share, plain and to its "
                                       "outputs, beside the low-rank member the family contains; write "
                                       "ldr_fit_quality.csv and ldr_fit_quality.png.")
    ldr.add_argument("cache", help="feature cache directory with the backbone's dense head")
    ldr.add_argument("--repeats", type=int, default=1, help="fits per cell; times are medians (default 1)")
    _common(ldr)

    conv = modes.add_parser("sparse-conv", help="sparse fits of EfficientNet-Lite0's 1×1 convolutions on real inputs",
                            description="Run EfficientNet-Lite0 on the demo's digits, collect every 1×1 "
                                        "convolution's inputs and fit each layer plain and to its outputs; write "
                                        "conv_inputs.csv and conv_inputs.png.")
    conv.add_argument("--images", type=int, default=256, help="digits run through the network (default 256)")
    conv.add_argument("--fit-images", type=int, default=192, help="of which give the statistics (default 192)")
    _common(conv)

    cls = modes.add_parser("sparse-classifier", help="sparse fits of a cached head: fit times and output error",
                           description="Time the plain and the output-aware fits of the cache's dense head and the "
                                       "sparse fit's refit settings; write classifier_fit_times.csv and .png.")
    cls.add_argument("cache", help="feature cache directory with the backbone's dense head")
    cls.add_argument("--repeats", type=int, default=3, help="fits per cell; times are medians (default 3)")
    cls.add_argument("--refit", nargs="*", default=["none", "cg", "exact"],
                     help="also time fit_sparse with these refit settings (default none cg exact)")
    _common(cls)

    cmp = modes.add_parser("compare", help="families containing low rank vs lowrank in existing CSVs",
                           description="Pair every family that contains low rank with lowrank cell by cell in "
                                       "sweep.csv, data_aware.csv or containment.csv files and print the summary.")
    cmp.add_argument("csv", nargs="+", help="CSV files written by sweep, bench-data-aware or bench-fits containment")
    cmp.add_argument("--cells", action="store_true", help="also print every cell")


def _cache_inputs(cache_dir, test_share: float, seed: int):
    """``(W, (fitting statistics, held-out rows))`` of a feature cache's dense head."""
    import numpy as np

    from structmat.features import FeatureCache
    from structmat.finetune import split_indices
    from structmat.statistics import InputStatistics

    cache = FeatureCache(cache_dir)
    head = cache.head_weights()
    if head is None:
        raise UserError(f"the feature cache at {cache_dir} holds no dense head to approximate")
    W = np.asarray(head[0], dtype=np.float64)
    train, test = split_indices(cache.count, test_share, seed)
    held_out = np.asarray(cache.features.take(np.sort(test)), dtype=np.float64)
    return W, (InputStatistics.from_cache(cache, train), held_out)


def _run_containment(args, out):
    import numpy as np

    from structmat.benchmarks.containment import (containing_families, containment_summary, plot_containment,
                                                  run_containment)
    from structmat.benchmarks.lowrank_reference import markdown_table

    matrices = load_matrices(args.matrix or CONTAINMENT_MATRICES)
    inputs = {}
    if args.cache:
        W, pair = _cache_inputs(args.cache, args.test_share, args.seed)
        name = next((k for k, v in matrices.items() if v.shape == W.shape and np.array_equal(v, W)), None)
        if name is None:
            name = f"cache head {args.cache}"
            matrices[name] = W
        inputs[name] = pair
    rows = run_containment(matrices, family_names(args) if args.family else containing_families(), args.budget,
                           inputs=inputs, csv_path=out / "containment.csv", resume=not args.no_resume,
                           progress=not args.quiet)
    if not any(r["status"] == "ok" for r in rows):
        raise RunFailedError(f"no containment cell could be fitted (see {out / 'containment.csv'})")
    summary, comparison = containment_summary(rows)
    print(markdown_table(summary, ["family", "cells", "within", "largest_excess", "worst_relative_margin",
                                   "median_ratio"]))
    if args.cells:
        print()
        print(markdown_table(comparison, ["matrix", "share", "method", "family", "error", "lowrank_error", "excess",
                                          "within"]))
    plot_containment(rows, out / "containment.png")
    return ["containment.csv", "containment.png"]


def _run_scaling(args, out):
    from structmat.benchmarks.fit_scaling import fit_time_exponents, plot_fit_scaling, run_fit_scaling
    from structmat.benchmarks.results import format_table

    if not 0 < args.share <= 1:
        raise UserError(f"--share must be in (0, 1]; got {args.share:g}")
    if any(n < 2 for n in args.sizes):
        raise UserError(f"--sizes must be >= 2; got {args.sizes}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0; got {args.warmup}")
    written = []
    for kind in dict.fromkeys(args.kind):
        rows = run_fit_scaling(family_names(args), args.sizes, share=args.share, kind=kind, repeats=args.repeats,
                               warmup=args.warmup,
                               csv_path=out / f"fit_scaling_{kind}.csv", resume=not args.no_resume,
                               progress=not args.quiet)
        print(format_table(rows, ["family", "kind", "n", "nparams", "relative_error", "cpu_seconds", "status"]))
        for family, p in fit_time_exponents(rows).items():
            print(f"{kind} {family}: CPU time ∝ n^{p:.2f}")
        written.append(f"fit_scaling_{kind}.csv")
        if any(r.get("status") == "ok" for r in rows):
            plot_fit_scaling(rows, out / f"fit_scaling_{kind}.png")
            written.append(f"fit_scaling_{kind}.png")
    return written


def _run_ldr(args, out):
    from structmat.benchmarks.data_aware import plot_data_aware
    from structmat.benchmarks.ldr_fit_quality import run_ldr_fit_quality
    from structmat.benchmarks.results import format_table
    from structmat.features import FeatureCache

    families = list(dict.fromkeys(args.family)) if args.family else ["toeplitz_like", "ldr"]
    rows = run_ldr_fit_quality(FeatureCache(args.cache), families, args.budget, repeats=args.repeats,
                               csv_path=out / "ldr_fit_quality.csv", resume=not args.no_resume,
                               progress=not args.quiet)
    print(format_table(rows, ["family", "share", "method", "rank", "relative_error", "fit_output_error",
                              "output_error", "agreement", "cpu_seconds", "reference_fit_output_error"]))
    if not any(r["status"] == "ok" for r in rows):
        raise RunFailedError(f"no cell could be fitted (see {out / 'ldr_fit_quality.csv'})")
    plot_data_aware(rows, out / "ldr_fit_quality.png", title="Toeplitz-like and LDR: plain vs data-aware fits")
    return ["ldr_fit_quality.csv", "ldr_fit_quality.png"]


def _run_sparse_conv(args, out):
    from structmat.benchmarks.sparse_fit_quality import conv_layer_inputs, plot_conv, run_conv_inputs_benchmark

    if not 0 < args.fit_images < args.images:
        raise UserError(f"--fit-images must be in [1, --images); got {args.fit_images} of {args.images}")
    families = list(dict.fromkeys(args.family)) if args.family else ["sparse", "sparse_product"]
    inputs = conv_layer_inputs(image_count=args.images, fit_images=args.fit_images, progress=not args.quiet)
    rows = run_conv_inputs_benchmark(inputs, families, args.budget, csv_path=out / "conv_inputs.csv",
                                     resume=not args.no_resume, progress=not args.quiet)
    plot_conv(rows, out / "conv_inputs.png")
    return ["conv_inputs.csv", "conv_inputs.png"]


def _run_sparse_classifier(args, out):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.sparse_fit_quality import plot_classifier_fit_times, run_classifier_fit_times
    from structmat.features import FeatureCache

    families = list(dict.fromkeys(args.family)) if args.family else ["sparse", "sparse_product"]
    rows = run_classifier_fit_times(FeatureCache(args.cache), families, args.budget, refits=args.refit,
                                    repeats=args.repeats, csv_path=out / "classifier_fit_times.csv",
                                    resume=not args.no_resume)
    print(format_table(rows, ["family", "share", "method", "output_error", "agreement", "cpu_seconds",
                              "stats_seconds"]))
    plot_classifier_fit_times(rows, out / "classifier_fit_times.png")
    return ["classifier_fit_times.csv", "classifier_fit_times.png"]


def _run_compare(args):
    from pathlib import Path

    from structmat.benchmarks.lowrank_reference import main as compare_main

    for path in args.csv:
        if not Path(path).is_file():
            raise UserError(f"no such file: {path}")
    compare_main(list(args.csv) + (["--cells"] if args.cells else []))


_MODES = {"containment": _run_containment, "scaling": _run_scaling, "ldr": _run_ldr,
          "sparse-conv": _run_sparse_conv, "sparse-classifier": _run_sparse_classifier}


def _run_bench_fits(args):
    if args.mode == "compare":
        _run_compare(args)
        return
    for option in ("repeats", "images"):
        if getattr(args, option, 1) < 1:
            raise UserError(f"--{option} must be >= 1; got {getattr(args, option)}")
    if getattr(args, "budget", None) is not None:
        for share in args.budget:
            if not 0 < share <= 1:
                raise UserError(f"--budget takes shares in (0, 1]; got {share:g}")
    out = output_dir(args, f"bench-fits-{args.mode}")
    written = _MODES[args.mode](args, out)
    print("wrote " + ", ".join(str(out / name) for name in written))


FIT_COMMANDS = {"bench-fits": (_add_bench_fits, _run_bench_fits)}
