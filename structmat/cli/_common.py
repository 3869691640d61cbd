"""What the sub-commands share: the error type that prints as one line, budget and option parsing, output
directories and weight loading."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUTPUT = Path("structmat-output")
DEMO_BUDGETS = (0.1, 0.25, 0.5)


class UserError(Exception):
    """A mistake in the command line or its inputs, reported as one line (exit code 2)."""


class RunFailedError(Exception):
    """The command ran but nothing it was asked for succeeded, e.g. every family failed (exit code 1)."""


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


def output_dir(args, command: str) -> Path:
    """The command's output directory (``--output-dir``, default ``structmat-output/<command>``), created now, before
    any work, so that a path that cannot be a directory is reported before a long run rather than after it."""
    out = Path(args.output_dir) if args.output_dir else DEFAULT_OUTPUT / command
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"the output directory {out} exists and is not a directory") from None
    except OSError as exc:
        raise UserError(f"cannot create the output directory {out}: {exc.strerror or exc}") from None
    return out


def output_file(path, what: str = "output") -> Path:
    """Check, before any work, that the file ``path`` can be written (not a directory, an existing writable
    directory); returns it as a Path."""
    from structmat.matrices.io import check_writable

    try:
        return check_writable(path, what)
    except OSError as exc:
        raise UserError(str(exc)) from None


def add_family_arg(p, *, help_text: str = "families (default: every structured family)") -> None:
    """``--family/-f``, taking one or more names and repeatable: ``-f lowrank sss`` = ``-f lowrank -f sss``."""
    p.add_argument("--family", "-f", nargs="+", action="extend", metavar="FAMILY", help=help_text)


def load_matrices(specs: list[str]) -> dict:
    from structmat.weights import EFFICIENTNET_LITE0_MATRICES, load_weight

    matrices = {}
    for spec in specs:
        if spec == "efficientnet_lite0:all":
            for key in EFFICIENTNET_LITE0_MATRICES:
                matrices[f"efficientnet_lite0:{key}"] = load_weight(f"efficientnet_lite0:{key}")
        else:
            matrices[spec] = load_weight(spec)
    return matrices


def add_matrix_args(p):
    """The ``--matrix/--family/--output-dir/--quiet`` options of the commands that loop over matrices x families."""
    p.add_argument("--matrix", "-m", action="append", required=True,
                   help="weight spec (repeatable); efficientnet_lite0:all = the classifier and largest 1x1 convs")
    add_family_arg(p)
    p.add_argument("--output-dir", "-o", help=f"directory for CSV and PNG (default: {DEFAULT_OUTPUT}/<command>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def family_names(args) -> list[str]:
    """``--family`` values (default: every structured family), each checked against the registry."""
    from structmat.families import get_family, structured_family_names

    names = list(dict.fromkeys(args.family)) if args.family else structured_family_names()
    for name in names:
        get_family(name)
    return names
