"""The ``structmat`` command. User mistakes print one line and exit with code 2; no traceback.

Each sub-command is a pair ``_add_<name>(subparsers)`` / ``_run_<name>(args)`` in the module of its topic, collected
in ``COMMANDS``; a sub-command imports what it needs when it runs, so ``structmat --help`` stays fast.

What every command shares is added here, once: ``--verbose/-v`` (before or after the sub-command) and, on every
command that fits or trains, ``--threads`` (default 1; :mod:`structmat.threads`). Exit codes: 0 done, 1 the command
ran but nothing it was asked for succeeded (e.g. every family failed), 2 a mistake in the command line or its
inputs (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys

from structmat.cli._common import RunFailedError, UserError
from structmat.cli.benchmarks import BENCHMARK_COMMANDS
from structmat.cli.compress import COMPRESS_COMMANDS
from structmat.cli.export import EXPORT_COMMANDS
from structmat.cli.features import FEATURE_COMMANDS
from structmat.cli.figures import FIGURE_COMMANDS
from structmat.cli.fits import FIT_COMMANDS
from structmat.cli.matrices import MATRIX_COMMANDS
from structmat.cli.pyfaust import PYFAUST_COMMANDS
from structmat.cli.sss import SSS_COMMANDS
from structmat.cli.training import TRAINING_COMMANDS

__all__ = ["COMMANDS", "UNTHREADED_COMMANDS", "OneLineArgumentParser", "build_parser", "main"]

COMMANDS = {
    **MATRIX_COMMANDS,  # approximate, info, families
    **BENCHMARK_COMMANDS,  # sweep, bench-data-aware, bench-layers, bench-rsvd, bench-c, bench-budgets, bench-threads, bench-parallel, speed-labels
    **EXPORT_COMMANDS,  # export, bench-export
    **FEATURE_COMMANDS,  # features, finetune, demo
    **SSS_COMMANDS,  # bench-sss
    **PYFAUST_COMMANDS,  # bench-pyfaust
    **FIT_COMMANDS,  # bench-fits containment|scaling|ldr|sparse-conv|sparse-classifier|compare
    **TRAINING_COMMANDS,  # bench-sampled, bench-swat, bench-sum-product
    **COMPRESS_COMMANDS,  # compress, bench-compress
    **FIGURE_COMMANDS,  # figures
}

#: The commands that neither fit nor train, so take no ``--threads``; every other command does.
UNTHREADED_COMMANDS = ("families", "info")


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``structmat sweep: error: ... (see structmat sweep --help)``)
    and exit with code 2, instead of the usage block and the message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _leaf_parsers(parser):
    """The parsers that parse the last word of a command line: ``parser`` or, recursively, its sub-parsers."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield parser
        return
    for action in actions:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaf_parsers(child)


def _has_option(parser, option: str) -> bool:
    return any(option in action.option_strings for action in parser._actions)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="structmat",
        description="Replace dense weight matrices by structured matrices: fit, inspect, sweep and benchmark.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging, and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add, _ in COMMANDS.values():
        add(sub)
    for name, command in sub.choices.items():
        for leaf in _leaf_parsers(command):
            leaf.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                              help="debug logging, and tracebacks on errors")
            if name not in UNTHREADED_COMMANDS and not _has_option(leaf, "--threads"):
                leaf.add_argument("--threads", type=int, default=None,
                                  help="BLAS/OpenMP/torch threads for the whole command (default 1, or "
                                       "$STRUCTMAT_THREADS: fastest on a busy machine, and the same bytes everywhere)")
    return parser


def _threads(args):
    """The thread limit of the command: ``process_threads(--threads)``, or nothing for a command without it."""
    import contextlib

    from structmat.threads import check_threads, default_threads, process_threads

    if not hasattr(args, "threads"):
        return contextlib.nullcontext()
    try:
        args.threads = default_threads() if args.threads is None else check_threads(args.threads, "--threads")
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    return process_threads(args.threads)


def main(argv=None) -> int:
    from structmat.matrices.io import StructmatFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.WARNING if quiet else logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with _threads(args):
            COMMANDS[args.command][1](args)
    except RunFailedError as exc:
        if args.verbose:
            raise
        print(f"structmat {args.command}: failed: {exc}", file=sys.stderr)
        return 1
    except (UserError, ValueError, TypeError, OSError, ImportError, StructmatFileError) as exc:
        if args.verbose:
            raise
        print(f"structmat {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        if args.verbose:
            raise
        print(f"structmat {args.command}: error: not enough memory{': ' + _one_line(exc) if str(exc) else ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"structmat {args.command}: interrupted; finished results are kept and a rerun resumes", file=sys.stderr)
        return 130
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
