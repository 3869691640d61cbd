"""``structmat figures``: the documentation's plots, measured and drawn, or redrawn from their committed CSVs."""

from __future__ import annotations

import shlex
import sys

from structmat.cli._common import UserError, add_family_arg, family_names, output_dir, parse_budget

__all__ = ["FIGURE_COMMANDS", "DEFAULT_COMPRESS_ARGS"]

#: The whole-model run behind the allocation figure: EfficientNet-Lite0's 1×1 convolutions and classifier at half
#: their parameters, calibrated on 256 of the 5,000 MNIST digits, choosing among four families or keeping a layer.
DEFAULT_COMPRESS_ARGS = ("efficientnet_lite0", "--budget", "0.5", "--calibration", "mnist5k", "--count", "256",
                         "--family", "lowrank", "--family", "monarch", "--family", "sparse", "--family",
                         "block_sparse", "--family", "dense")


def _add_figures(sub):
    from structmat.benchmarks.figures import CURVE_SHARES, FIGURES

    p = sub.add_parser("figures", help="the documentation's figures: measure and draw, or redraw from their CSVs",
                       description="Write <figure>.csv (the data), <figure>.json (date, machine, load, command) and "
                                   "<figure>.png for: family-curves (every family's error against its budget on "
                                   "the EfficientNet-Lite0 classifier, plain and fitted to its outputs on the demo "
                                   "cache), c-speed (C time over dense C per family, one pinned core) and "
                                   "allocation (the family and share per layer of a `structmat compress` run). "
                                   "--from-csv only redraws the PNGs from the CSVs already in the directory.")
    p.add_argument("--output-dir", "-o", default="docs/figures", help="directory (default docs/figures)")
    p.add_argument("--from-csv", action="store_true", help="redraw from the CSVs in the directory; measure nothing")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES), metavar="FIGURE",
                   help=f"figures to make (default all: {' '.join(FIGURES)})")
    p.add_argument("--cache", help="feature cache for family-curves (default: the demo's, extracted if missing)")
    add_family_arg(p, help_text="families of family-curves and c-speed (default: every structured family)")
    p.add_argument("--budget", "-b", nargs="+", type=parse_budget, default=list(CURVE_SHARES),
                   help=f"budgets of family-curves (default {' '.join(map(str, CURVE_SHARES))})")
    p.add_argument("--c-budget", type=parse_budget, default=0.25, help="budget of c-speed (default 0.25)")
    p.add_argument("--cpu", type=int, help="CPU to pin c-speed to (default: the highest-numbered allowed one)")
    p.add_argument("--compress-args", default=shlex.join(DEFAULT_COMPRESS_ARGS),
                   help="arguments of the `structmat compress` run behind allocation (default: "
                        f"{shlex.join(DEFAULT_COMPRESS_ARGS)!r})")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _run_figures(args):
    from structmat.benchmarks.figures import make_figures

    out = output_dir(args, "figures")
    cache = None
    if not args.from_csv and "family-curves" in args.only:
        from structmat.features import FeatureCache

        if args.cache:
            cache = FeatureCache(args.cache)
        else:
            from structmat.cli.features import demo_cache

            cache = demo_cache(quiet=args.quiet)
    try:
        compress_args = shlex.split(args.compress_args)
    except ValueError as exc:
        raise UserError(f"--compress-args is not a valid command line: {exc}") from None
    command = "structmat " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["figures"] else "structmat figures"
    try:
        written = make_figures(out, args.only, from_csv=args.from_csv, command=command, cache=cache,
                               families=family_names(args), shares=args.budget, c_budget=args.c_budget,
                               cpu=args.cpu, compress_args=compress_args, progress=not args.quiet)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    print("wrote " + ", ".join(str(p) for p in written))


FIGURE_COMMANDS = {"figures": (_add_figures, _run_figures)}
