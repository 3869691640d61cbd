"""The ``structmat bench-sss`` sub-command: the fast SSS fit against the plain approach on real weights,
side by side in one CSV, or (``--scaling``) the fit time of n×n matrices and its measured exponent.

A ``(_add, _run)`` pair collected in :data:`structmat.cli.COMMANDS`; nothing heavy is imported until it runs.
"""

from __future__ import annotations

from structmat.cli._common import DEFAULT_OUTPUT, DEMO_BUDGETS, load_matrices, output_dir, parse_budget, parse_option

__all__ = ["SSS_COMMANDS"]


def _add_bench_sss(sub):

    p = sub.add_parser("bench-sss", help="SSS: fast fit vs the plain approach, or fit-time scaling",
                       description="Fit every matrix at every budget with fit_sss and with the plain approach (full "
                                   "Hankel SVDs, uniform grid of K, uniform state dim); write sss_vs_plain.csv with "
                                   "both errors (and the fast fit's error before refinement) side by side. With "
                                   "--scaling, time the default fit of n x n powerlaw matrices instead and write "
                                   "sss_scaling.csv with the measured exponent of time ~ n^p.")
    p.add_argument("--matrix", "-m", action="append",
                   help="weight spec (repeatable; default efficientnet_lite0:all = the classifier and the largest "
                        "1x1 convolutions)")
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets: floats are shares, ints counts (default: 0.1 0.25 0.5)")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="a fit_sss option, e.g. --option refine_iterations=0 (repeatable)")
    p.add_argument("--scaling", action="store_true", help="run the fit-time scaling benchmark instead")
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048, 4096],
                   help="--scaling: matrix sides n (default 512 1024 2048 4096)")
    p.add_argument("--repeats", type=int, default=3, help="--scaling: fits per point, median reported (default 3)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping rows in the CSV")
    p.add_argument("--output-dir", "-o", help=f"directory for the CSV (default: {DEFAULT_OUTPUT}/bench-sss)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _run_bench_sss(args):
    from structmat.benchmarks.results import format_table

    out = output_dir(args, "bench-sss")
    options = dict(args.option)
    if args.scaling:
        from structmat.benchmarks.sss_bench import SSS_SCALING_COLUMNS, run_sss_scaling, scaling_exponents

        rows = run_sss_scaling(args.sizes, repeats=args.repeats, csv_path=out / "sss_scaling.csv",
                               progress=not args.quiet, **options)
        print(format_table(rows, SSS_SCALING_COLUMNS))
        cpu = scaling_exponents(rows, "cpu_seconds")
        for regime, exponent in scaling_exponents(rows).items():
            print(f"{regime}: fit time grows like n^{exponent:.2f} (CPU time n^{cpu[regime]:.2f}) "
                  f"from n={min(args.sizes)} to {max(args.sizes)}")
        print(f"wrote {out / 'sss_scaling.csv'}")
        return
    from structmat.benchmarks.sss_bench import run_sss_comparison

    rows = run_sss_comparison(load_matrices(args.matrix or ["efficientnet_lite0:all"]), args.budget,
                              csv_path=out / "sss_vs_plain.csv", resume=not args.no_resume,
                              progress=not args.quiet, **options)
    print(format_table(rows, ["matrix", "budget", "plain_num_stages", "plain_state_dim", "plain_error",
                              "plain_seconds", "fast_num_stages", "fast_ordering", "fast_sweep_error", "fast_error",
                              "fast_seconds", "error_ratio"]))
    print(f"wrote {out / 'sss_vs_plain.csv'}")


SSS_COMMANDS = {"bench-sss": (_add_bench_sss, _run_bench_sss)}
