"""Every family that contains low rank against ``lowrank`` itself, cell by cell.

A family in :data:`structmat.families.CONTAINS_LOWRANK` represents every rank-r matrix at its own count, so at the
same budget its fit should never be worse than the ``lowrank`` fit. ``compare_with_lowrank`` pairs each such
family's error with low rank's in the same cell of a result table: a sweep CSV (cells ``(matrix, budget)``, column
``relative_error``) or a ``bench-data-aware`` CSV (cells ``(share, method)``, columns ``relative_error`` and
``output_error``). ``summarize`` counts, per family, the cells at or below low rank and the largest excess.

Run it as ``python -m structmat.benchmarks.lowrank_reference sweep.csv [data_aware.csv ...]``.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from structmat.benchmarks.results import read_rows
from structmat.families import CONTAINS_LOWRANK

__all__ = ["compare_with_lowrank", "summarize", "markdown_table", "main"]

#: Relative slack for "at or below": rounding of the SVDs, not a quality margin.
TOLERANCE = 1e-9


def _family(row: dict) -> str:
    return row.get("family") or row.get("variant")


def compare_with_lowrank(rows: list[dict], *, cell: Sequence[str], error: str = "relative_error") -> list[dict]:
    """One row per (cell, family containing low rank): its ``error``, low rank's, and whether it is at or below.

    ``cell`` names the columns that identify a cell (for a sweep ``("matrix", "budget")``); rows whose ``status``
    is not ``"ok"`` are ignored.
    """
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get(error) not in (None, "")]
    reference = {tuple(r[c] for c in cell): float(r[error]) for r in ok if _family(r) == "lowrank"}
    out = []
    for r in ok:
        family, key = _family(r), tuple(r[c] for c in cell)
        if family == "lowrank" or family not in CONTAINS_LOWRANK or key not in reference:
            continue
        value, lowrank = float(r[error]), reference[key]
        out.append({**{c: r[c] for c in cell}, "family": family, "error": value, "lowrank_error": lowrank,
                    "excess": value - lowrank, "within": value <= lowrank * (1 + TOLERANCE) + 1e-12})
    return out


def summarize(comparison: list[dict]) -> list[dict]:
    """Per family: cells compared, cells at or below low rank, and the largest excess over low rank."""
    out = []
    for family in dict.fromkeys(r["family"] for r in comparison):
        mine = [r for r in comparison if r["family"] == family]
        out.append({"family": family, "cells": len(mine), "within": sum(r["within"] for r in mine),
                    "largest_excess": max(r["excess"] for r in mine),
                    "median_ratio": sorted(r["error"] / r["lowrank_error"] for r in mine if r["lowrank_error"] > 0)
                    [len(mine) // 2] if mine else float("nan")})
    return out


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` restricted to ``columns`` as a Markdown table (floats with five decimals)."""

    def cell(v):
        return f"{v:.5f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    """Print, per CSV, the per-family summary as a Markdown table (sweep or bench-data-aware CSVs)."""
    parser = argparse.ArgumentParser(prog="python -m structmat.benchmarks.lowrank_reference",
                                     description="families containing low rank against lowrank, cell by cell")
    parser.add_argument("csv", nargs="+", help="sweep.csv or data_aware.csv files")
    parser.add_argument("--cells", action="store_true", help="also print every cell")
    args = parser.parse_args(argv)
    for path in args.csv:
        rows = read_rows(path)
        if rows and "method" in rows[0]:
            tables = [(f"{method}, {error}", compare_with_lowrank([r for r in rows if r["method"] == method],
                                                                  cell=("share",), error=error))
                      for method in dict.fromkeys(r["method"] for r in rows)
                      for error in ("relative_error", "output_error")]
        else:
            tables = [("relative_error", compare_with_lowrank(rows, cell=("matrix", "budget")))]
        for title, comparison in tables:
            print(f"\n{path}: {title}\n")
            print(markdown_table(summarize(comparison), ["family", "cells", "within", "largest_excess", "median_ratio"]))
            if args.cells:
                columns = [c for c in comparison[0] if c != "within"] if comparison else []
                print()
                print(markdown_table(comparison, columns + ["within"]))


if __name__ == "__main__":
    main()
