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


# ------------------------------------------------------------------------------------------------ demo
def _add_demo(sub):
    p = sub.add_parser("demo", help="approximate EfficientNet-Lite0's classifier with every family",
                       description="The built-in example: fit the real 1000x1280 classifier of the ImageNet-trained "
                                   "EfficientNet-Lite0 with every structured family at budgets 0.1, 0.25 and 0.5, "
                                   "and print error, parameters and fit time.")
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(DEMO_BUDGETS))
    p.add_argument("--output-dir", "-o", help=f"directory for CSV and PNG (default: {DEFAULT_OUTPUT}/demo)")
    p.add_argument("--quiet", "-q", action="store_true")


def _run_demo(args):
    from structmat.benchmarks.results import format_table
    from structmat.benchmarks.sweep import plot_sweep, run_sweep
    from structmat.families import structured_family_names
    from structmat.weights import load_weight

    out = _output_dir(args, "demo")
    W = load_weight("efficientnet_lite0:_fc.weight")
    print(f"EfficientNet-Lite0 classifier: {W.shape[0]}x{W.shape[1]} = {W.size:_} parameters")
    rows = run_sweep({"efficientnet_lite0:_fc.weight": W}, structured_family_names(), args.budget,
                     csv_path=out / "demo.csv", resume=False, progress=not args.quiet)
    print(format_table(rows, ["variant", "budget", "nparams", "share", "relative_error", "fit_seconds", "status"]))
    plot_sweep(rows, out / "demo.png", title="EfficientNet-Lite0 classifier")
    print(f"wrote {out / 'demo.csv'} and {out / 'demo.png'}")


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
    "demo": (_add_demo, _run_demo),
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
