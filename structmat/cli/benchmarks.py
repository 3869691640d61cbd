"""``structmat sweep``, ``bench-layers``, ``bench-rsvd``, ``bench-c``, ``speed-labels`` and ``bench-parallel``: error
and speed across families, and what parallel runs buy."""

from __future__ import annotations

from pathlib import Path

from structmat.cli._common import (DEFAULT_OUTPUT, DEMO_BUDGETS, RunFailedError, UserError, add_executor_args,
                                  add_family_arg, add_matrix_args, executor_args, family_names, load_matrices,
                                  output_dir, parse_budget, parse_option)

__all__ = ["BENCHMARK_COMMANDS"]


# ------------------------------------------------------------------------------------------------ sweep
def _add_sweep(sub):
    p = sub.add_parser("sweep", help="error vs parameters for matrices x families x budgets",
                       description="Fit every matrix with every family at every budget; write sweep.csv and "
                                   "sweep.png. Reruns resume from the CSV unless --no-resume. The cells run on "
                                   "--jobs local worker processes (one thread each) or on a Dask cluster (--dask); "
                                   "the CSV is the same whichever runs them, apart from the measured fit_seconds.")
    add_matrix_args(p)
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets: floats are shares, ints counts (default: 0.1 0.25 0.5)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping cells in sweep.csv")
    p.add_argument("--save-matrices", action="store_true", help="also save every fitted matrix in OUTPUT/matrices")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="kill a fit still running after this many seconds and record it as 'timed out' (a rerun "
                        "tries it again); each limited fit runs in its own process")
    p.add_argument("--inputs", metavar="X.npy|CACHE_DIR|STATS.npz",
                   help="the inputs the layers see (rows of shape (N, in_features), a feature cache, or saved input "
                        "statistics; every matrix must have that in_features): fit to the outputs on them and "
                        "report the output error beside the relative error")
    p.add_argument("--method", nargs="+", choices=["data-aware", "plain"], dest="methods",
                   help="with --inputs: which fits to run per cell (default data-aware; 'data-aware plain' also "
                        "fits to the weight and measures those fits on the same inputs)")
    add_executor_args(p)


def _run_sweep(args):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.sweep import plot_sweep, run_sweep

    out = output_dir(args, "sweep")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UserError(f"--time-limit must be > 0 seconds; got {args.time_limit:g}")
    if args.methods and not args.inputs:
        raise UserError("--method needs --inputs: the rows the layers see, against which data-aware fits are made "
                        "and output errors measured")
    matrices = load_matrices(args.matrix)
    inputs = None
    if args.inputs:
        import structmat

        inputs = structmat.InputStatistics.from_path(args.inputs)
        wrong = {name: W.shape for name, W in matrices.items() if W.shape[1] != inputs.n_features}
        if wrong:
            raise UserError(f"--inputs {args.inputs} has {inputs.n_features} features per row, but these matrices "
                            f"have another in_features: " + ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in wrong.items()))
    rows = run_sweep(matrices, family_names(args), args.budget, csv_path=out / "sweep.csv",
                     resume=not args.no_resume, progress=not args.quiet,
                     save_dir=(out / "matrices") if args.save_matrices else None, time_limit=args.time_limit,
                     inputs=inputs, methods=args.methods, **executor_args(args))
    columns = ["matrix", "variant", "budget", "nparams", "share", "byte_share", "relative_error", "fit_seconds",
               "status"]
    if inputs is not None:
        columns[2:2] = ["method"]
        columns[-2:-2] = ["output_error"]
    print(format_table(rows, columns))
    if not any(r["status"] == "ok" for r in rows):
        raise RunFailedError(f"no cell of the sweep could be fitted (see the messages in {out / 'sweep.csv'})")
    plot_sweep(rows, out / "sweep.png")
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")


# ------------------------------------------------------------------------------------------------ bench-data-aware
def _add_bench_data_aware(sub):
    p = sub.add_parser("bench-data-aware", help="plain vs data-aware fits of a cached head, before fine-tuning",
                       description="On a feature cache with the backbone's dense head (default: the demo's "
                                   "EfficientNet-Lite0 features of the 5,000 MNIST digits, extracted if missing), fit "
                                   "every family at every share to the weight and to its outputs on the training "
                                   "rows; write weight error, held-out output error, agreement with the dense head "
                                   "and one-thread fit seconds to data_aware.csv and data_aware.png.")
    p.add_argument("cache", nargs="?", help="feature cache directory (default: the demo's, extracted if missing)")
    add_family_arg(p)
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets (default: 0.1 0.25 0.5)")
    p.add_argument("--repeats", type=int, default=1, help="fits per cell; fit time is their median (default 1)")
    p.add_argument("--fisher", action="store_true",
                   help="also fit with the logits weighted by the Fisher information of the dense head's softmax "
                        "(method data-aware-fisher; lowrank, sparse, sparse_product, monarch)")
    p.add_argument("--test-share", type=float, default=0.2, help="held-out share of the rows (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping cells in the CSV")
    p.add_argument("--output-dir", "-o", help=f"directory for the CSV and PNG (default {DEFAULT_OUTPUT}/bench-data-aware)")
    p.add_argument("--quiet", "-q", action="store_true")


def _run_bench_data_aware(args):
    from structmat.benchmarks.data_aware import (SUMMARY_COLUMNS, data_aware_summary, plot_data_aware,
                                                 run_data_aware_benchmark)
    from structmat.benchmarks.machine import machine_summary
    from structmat.benchmarks.results import format_table, write_rows
    from structmat.features import FeatureCache

    if args.cache:
        cache = FeatureCache(args.cache)
    else:
        from structmat.cli.features import demo_cache

        cache = demo_cache(quiet=args.quiet)
    out = output_dir(args, "bench-data-aware")
    before = machine_summary()
    rows = run_data_aware_benchmark(cache, family_names(args), args.budget, test_share=args.test_share,
                                    seed=args.seed, repeats=args.repeats, csv_path=out / "data_aware.csv",
                                    resume=not args.no_resume, progress=not args.quiet, fisher=args.fisher)
    print(format_table(rows, ["family", "share", "method", "nparams", "relative_error", "output_error", "agreement",
                              "fit_seconds", "fit_cpu_seconds", "status"]))
    summary = data_aware_summary(rows)
    write_rows(out / "data_aware_summary.csv", summary, SUMMARY_COLUMNS)
    print(format_table(summary, SUMMARY_COLUMNS))
    if any(r["status"] == "ok" for r in rows):
        plot_data_aware(rows, out / "data_aware.png")
    print(f"machine before: {before}\nmachine after:  {machine_summary()}")
    print(f"statistics of {rows[0]['train_rows']} training rows formed in {float(rows[0]['stats_seconds']):.2f} s "
          f"({float(rows[0]['stats_cpu_seconds']):.2f} CPU s); wrote {out / 'data_aware.csv'}, "
          f"{out / 'data_aware_summary.csv'} and {out / 'data_aware.png'}")


# ------------------------------------------------------------------------------------------------ bench-threads
def _add_bench_threads(sub):
    p = sub.add_parser("bench-threads", help="fit time against the number of threads, quiet and with busy neighbours",
                       description="Time each family's fit of each matrix with 1 and more BLAS/OpenMP/torch threads "
                                   "(interleaved repeats, medians), first alone and then with busy-looping processes "
                                   "alongside; write threads.csv and threads.png. The measurement behind the "
                                   "default of one thread per fit.")
    add_matrix_args(p)
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget (default 0.25)")
    p.add_argument("--fit-threads", nargs="+", type=int, default=[1, 2],
                   help="thread counts to compare (default 1 2)")
    p.add_argument("--busy", nargs="+", type=int, default=[0, 2],
                   help="busy processes to start alongside, per block (default 0 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed fits per thread count (default 5)")


def _run_bench_threads(args):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.threads import plot_thread_benchmark, run_thread_benchmark

    out = output_dir(args, "bench-threads")
    families = args.family or ["lowrank", "hodlr"]
    rows = run_thread_benchmark(load_matrices(args.matrix), families, args.budget, threads=args.fit_threads,
                                busy=args.busy, repeats=args.repeats, csv_path=out / "threads.csv")
    print(format_table(rows, ["matrix", "family", "busy", "threads", "median_seconds", "median_cpu_seconds",
                              "ratio_to_one_thread", "same_bytes_as_one_thread", "load_average"]))
    plot_thread_benchmark(rows, out / "threads.png")
    print(f"wrote {out / 'threads.csv'} and {out / 'threads.png'}")


# ------------------------------------------------------------------------------------------------ bench-layers
def _add_bench_layers(sub):
    p = sub.add_parser("bench-layers", help="forward and forward+backward time of structured layers vs nn.Linear",
                       description="Time each family's layer against nn.Linear (one thread, pinned to one core, CPU "
                                   "time of the thread) at several batch sizes: the forward pass without autograd "
                                   "(the inference fast path) and forward+backward; judge the forward ratio against "
                                   "its target; write layer_speed.csv, layer_speed.json (with the machine) and "
                                   "layer_speed.png.")
    add_matrix_args(p)
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget (default 0.25)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32, 256], help="batch sizes (default 1 32 256)")
    p.add_argument("--repeats", type=int, default=15, help="timed repeats per cell (default 15)")
    p.add_argument("--cpu", type=int, help="CPU to pin to (default: the highest-numbered allowed one)")


def _run_bench_layers(args):
    from structmat.benchmarks.layer_speed import plot_layer_speed, run_layer_speed
    from structmat.benchmarks.machine import machine_summary
    from structmat.benchmarks.results import format_table

    out = output_dir(args, "bench-layers")
    rows = run_layer_speed(load_matrices(args.matrix), family_names(args), args.budget, batch_sizes=args.batch,
                           repeats=args.repeats, csv_path=out / "layer_speed.csv", resume=False,
                           progress=not args.quiet, cpu=args.cpu)
    print(machine_summary())
    print(format_table(rows, ["matrix", "variant", "nparams", "byte_share", "batch", "forward_ms", "forward_ratio",
                              "target_ratio", "within_target", "forward_backward_ms", "speedup_vs_linear"]))
    plot_layer_speed(rows, out / "layer_speed.png")
    print(f"wrote {out / 'layer_speed.csv'}, {out / 'layer_speed.json'} and {out / 'layer_speed.png'}")


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

    out = output_dir(args, "bench-rsvd")
    specs = args.matrix or ["powerlaw:4096x4096", "gaussian:4096x4096"]
    rows = run_rsvd_benchmark(load_matrices(specs), args.rank, csv_path=out / "rsvd.csv")
    print(format_table(rows, RSVD_COLUMNS))
    print(f"wrote {out / 'rsvd.csv'}")


# ------------------------------------------------------------------------------------------------ bench-c
def _add_bench_c(sub):
    p = sub.add_parser("bench-c", help="single-core C speed of structured vs dense products",
                       description="Fit W with each family at each budget, time y = W x in C on one core (batch 1) "
                                   "against the dense C loop and NumPy's one-thread BLAS, check every C output "
                                   "against NumPy, and write bench_c.csv, bench_c.json and bench_c.png. The fits "
                                   "run on --jobs workers (or --dask) and all finish before the first product is "
                                   "timed.")
    p.add_argument("weight", nargs="+", help="weight spec(s) as for `approximate`, or a saved structured matrix "
                                             "(.npz), which is timed as it is")
    add_family_arg(p, help_text="families with a C kernel (default: all of them)")
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
    add_executor_args(p, what="fits")


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
    out = output_dir(args, "bench-c")
    matrices = {}
    for spec in args.weight:
        path = Path(spec)
        if path.suffix == ".npz" and path.is_file():
            from structmat.npyfile import open_npz

            with open_npz(path) as data:
                structured = "meta" in data.files
            matrices[spec] = structmat.load(path) if structured else load_weight(spec)
        else:
            matrices[spec] = load_weight(spec)
    try:
        rows = run_c_benchmark(matrices, families, args.budget, options=options, warmup=args.warmup,
                               repeats=args.repeats, compiler=args.cc, flags=args.cflags, cpu=args.cpu,
                               csv_path=out / "bench_c.csv", json_path=out / "bench_c.json",
                               progress=not args.quiet, **executor_args(args))
    except (CompilerError, OutputMismatchError) as exc:
        raise UserError(str(exc)) from None
    print(format_table(rows, ["matrix", "family", "implementation", "budget", "nparams", "share", "median_ns",
                              "ratio_to_c_dense", "ratio_to_blas_dense", "ratio_over_share", "within_target",
                              "relative_error"]))
    plot_c_benchmark(rows, out / "bench_c.png")
    print(f"wrote {out / 'bench_c.csv'}, {out / 'bench_c.json'} and {out / 'bench_c.png'}")


# ------------------------------------------------------------------------------------------------ bench-budgets
def _add_bench_budgets(sub):
    p = sub.add_parser("bench-budgets", help="error at equal parameters and at equal bytes (indices counted)",
                       description="Fit every matrix with every family at every share twice: with at most that "
                                   "share of the dense parameters, and with at most that share of the dense float32 "
                                   "bytes (values plus int32 indices); write equal_budgets.csv and "
                                   "equal_budgets.png. Reruns resume from the CSV unless --no-resume.")
    add_matrix_args(p)
    p.add_argument("--budget", "-b", nargs="+", type=float, default=list(DEMO_BUDGETS),
                   help="shares in (0, 1] (default: 0.1 0.25 0.5)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="FAMILY.KEY=VALUE",
                   help="a fit option for one family, e.g. block_sparse.block_shape=[1,8] (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping cells in the CSV")


def _run_bench_budgets(args):
    from structmat.benchmarks.equal_budgets import plot_equal_budgets, run_equal_budgets
    from structmat.benchmarks.results import format_table

    families = family_names(args)
    options = {f: {} for f in families}
    for key, value in args.option:
        family, dot, name = key.partition(".")
        if not dot or family not in options:
            raise UserError(f"--option {key}: expected FAMILY.KEY=VALUE with FAMILY one of {families}")
        options[family][name] = value
    out = output_dir(args, "bench-budgets")
    rows = run_equal_budgets(load_matrices(args.matrix), families, args.budget, options=options,
                             csv_path=out / "equal_budgets.csv", resume=not args.no_resume, progress=not args.quiet)
    print(format_table(rows, ["matrix", "family", "unit", "share", "nparams", "params_share", "byte_share",
                              "relative_error", "fit_seconds", "status"]))
    if any(r["status"] == "ok" for r in rows):
        plot_equal_budgets(rows, out / "equal_budgets.png")
    print(f"wrote {out / 'equal_budgets.csv'} and {out / 'equal_budgets.png'}")
# ------------------------------------------------------------------------------------------------ bench-parallel
def _add_bench_parallel(sub):
    p = sub.add_parser("bench-parallel", help="the same sweep serially, on a process pool and on Dask: wall times",
                       description="Run one sweep once per --run (from scratch, one after the other): serially, on "
                                   "a local pool of N worker processes, on a Dask LocalCluster of N single-threaded "
                                   "workers. Write parallel.csv (wall time, ratio to serial, per-task costs beyond "
                                   "the fits, same rows as serial?), tasks.csv (when and where every cell ran) and "
                                   "parallel.png (a timeline per run).")
    p.add_argument("--matrix", "-m", action="append", default=None,
                   help="weight spec (repeatable; default efficientnet_lite0:all)")
    add_family_arg(p)
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets (default: 0.1 0.25 0.5)")
    p.add_argument("--run", nargs="+", dest="runs", default=["serial", "processes:2", "dask-local:8"],
                   help="runs in order: serial, processes:N, dask-local:N (default: serial processes:2 dask-local:8)")
    p.add_argument("--output-dir", "-o", help=f"directory for CSVs and PNG (default: {DEFAULT_OUTPUT}/bench-parallel)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _run_bench_parallel(args):
    from structmat.benchmarks.parallel_bench import PARALLEL_COLUMNS, parse_run, run_parallel_benchmark
    from structmat.benchmarks.results import format_table

    for run in args.runs:
        parse_run(run)
    out = output_dir(args, "bench-parallel")
    summary, _ = run_parallel_benchmark(load_matrices(args.matrix or ["efficientnet_lite0:all"]),
                                        family_names(args), args.budget, args.runs, output_dir=out,
                                        progress=not args.quiet)
    print(format_table(summary, [c for c in PARALLEL_COLUMNS if c not in ("executor",)]))
    print(f"wrote {out / 'parallel.csv'}, {out / 'tasks.csv'} and {out / 'parallel.png'}")


# ------------------------------------------------------------------------------------------------ speed-labels
def _add_speed_labels(sub):
    p = sub.add_parser("speed-labels", help="write the measured speed labels shown by `structmat families`",
                       description="Combine a bench-layers CSV and a bench-c CSV (same matrix and budget) into the "
                                   "per-family speed labels: C and torch time ratios to dense at batch 1.")
    p.add_argument("--layers", required=True, help="layer_speed.csv from `structmat bench-layers`")
    p.add_argument("--c", required=True, help="bench_c.csv from `structmat bench-c`")
    p.add_argument("--matrix", default="efficientnet_lite0", help="the matrix rows to read (default: "
                                                                   "efficientnet_lite0)")
    p.add_argument("--command", dest="recorded_commands", action="append", default=[],
                   help="the commands that produced the CSVs (recorded; repeatable)")
    p.add_argument("--output", "-o", help="JSON to write (default: the labels shipped with structmat)")


def _run_speed_labels(args):
    from structmat.benchmarks.speed_labels import write_speed_labels

    for path in (args.layers, args.c):
        if not Path(path).exists():
            raise UserError(f"no such file: {path}")
    labels = write_speed_labels(args.layers, args.c, args.output, matrix=args.matrix,
                                commands=args.recorded_commands)
    for label in labels.values():
        print(f"{label.family:<16} {label.describe()}")


BENCHMARK_COMMANDS = {
    "bench-data-aware": (_add_bench_data_aware, _run_bench_data_aware),
    "sweep": (_add_sweep, _run_sweep),
    "bench-layers": (_add_bench_layers, _run_bench_layers),
    "bench-rsvd": (_add_bench_rsvd, _run_bench_rsvd),
    "bench-c": (_add_bench_c, _run_bench_c),
    "bench-budgets": (_add_bench_budgets, _run_bench_budgets),
    "bench-threads": (_add_bench_threads, _run_bench_threads),
    "bench-parallel": (_add_bench_parallel, _run_bench_parallel),
    "speed-labels": (_add_speed_labels, _run_speed_labels),
}
