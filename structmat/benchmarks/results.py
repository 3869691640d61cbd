"""Benchmark result tables: CSV rows written atomically after every cell, so an interrupted run resumes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from structmat.matrices.io import atomic_write

__all__ = ["read_rows", "write_rows", "format_table"]


def read_rows(path) -> list[dict]:
    """Rows of a CSV written by :func:`write_rows` (an empty list if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a results CSV written by structmat ({exc}); move it away, or start over "
                         "with --no-resume") from None


def write_rows(path, rows: list[dict], columns: list[str]) -> None:
    """Write ``rows`` to ``path`` as CSV with ``columns``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` restricted to ``columns``."""
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
