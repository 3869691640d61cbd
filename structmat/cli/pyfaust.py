"""The ``structmat bench-pyfaust`` sub-command: fit_sparse_product against pyfaust's hierarchical
factorization at equal non-zeros, with fit times, cached in a resumable CSV (pyfaust takes minutes per cell).

A ``(_add, _run)`` pair collected in :data:`structmat.cli.COMMANDS`; nothing heavy is imported until it runs.
"""

from __future__ import annotations

from structmat.cli._common import DEFAULT_OUTPUT, DEMO_BUDGETS, UserError, load_matrices, output_dir, parse_budget

__all__ = ["PYFAUST_COMMANDS"]


def _add_bench_pyfaust(sub):

    p = sub.add_parser("bench-pyfaust", help="sparse products: fit_sparse_product vs pyfaust (optional extra)",
                       description="Fit every matrix at every budget with fit_sparse_product and with pyfaust's "
                                   "hierarchical factorization into two factors (one run per split share of the last "
                                   "factor); write pyfaust.csv (resumable) and print the best pyfaust split beside "
                                   "structmat. Needs pip install 'structmat[faust]'.")
    p.add_argument("--matrix", "-m", action="append",
                   help="weight spec (repeatable; default gaussian:256x256 and efficientnet_lite0)")
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS),
                   help="budgets: floats are shares, ints counts (default: 0.1 0.25 0.5)")
    p.add_argument("--split", nargs="+", type=float, default=[0.3, 0.5, 0.7],
                   help="pyfaust: shares of the non-zeros in the last factor (default 0.3 0.5 0.7)")
    p.add_argument("--faust-iterations", nargs="+", default=["500"], metavar="[MATRIX=]N",
                   help="pyfaust iterations per PALM4MSA run (default 500, pyfaust's own); MATRIX=N for one matrix")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping rows in the CSV")
    p.add_argument("--output-dir", "-o", help=f"directory for the CSV (default: {DEFAULT_OUTPUT}/bench-pyfaust)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _run_bench_pyfaust(args):
    from structmat.benchmarks.pyfaust_comparison import run_pyfaust_comparison, summarize_pyfaust_comparison
    from structmat.benchmarks.results import format_table

    out = output_dir(args, "bench-pyfaust")
    iterations: dict = {}
    default = 500
    for item in args.faust_iterations:
        name, sep, value = item.rpartition("=")
        try:
            count = int(value)
        except ValueError:
            raise UserError(f"--faust-iterations takes N or MATRIX=N; got {item!r}") from None
        if sep:
            iterations[name] = count
        else:
            default = count
    matrices = load_matrices(args.matrix or ["gaussian:256x256", "efficientnet_lite0"])
    rows = run_pyfaust_comparison(matrices, args.budget, splits=args.split,
                                  faust_iterations={name: iterations.get(name, default) for name in matrices},
                                  csv_path=out / "pyfaust.csv", resume=not args.no_resume, progress=not args.quiet)
    print(format_table(summarize_pyfaust_comparison(rows),
                       ["matrix", "budget", "method", "relative_error", "nparams", "best_split", "fit_seconds",
                        "total_seconds"]))
    print(f"wrote {out / 'pyfaust.csv'}")


PYFAUST_COMMANDS = {"bench-pyfaust": (_add_bench_pyfaust, _run_bench_pyfaust)}
