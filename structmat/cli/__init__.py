"""The ``structmat`` command. User mistakes print one line and exit with code 2; no traceback.

Each sub-command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)`` in the module of its topic, collected
in ``COMMANDS``; a sub-command imports what it needs when it runs, so ``structmat --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys

from structmat.cli._common import UserError
from structmat.cli.benchmarks import BENCHMARK_COMMANDS
from structmat.cli.export import EXPORT_COMMANDS
from structmat.cli.features import FEATURE_COMMANDS
from structmat.cli.matrices import MATRIX_COMMANDS
from structmat.cli.pyfaust import PYFAUST_COMMANDS
from structmat.cli.sss import SSS_COMMANDS
from structmat.cli.training import TRAINING_COMMANDS

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {
    **MATRIX_COMMANDS,  # approximate, info, families
    **BENCHMARK_COMMANDS,  # sweep, bench-layers, bench-rsvd, bench-c, speed-labels
    **EXPORT_COMMANDS,  # export, bench-export
    **FEATURE_COMMANDS,  # features, finetune, demo
    **SSS_COMMANDS,  # bench-sss
    **PYFAUST_COMMANDS,  # bench-pyfaust
    **TRAINING_COMMANDS,  # bench-sampled, bench-swat, bench-sum-product
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
