"""A results file that a grid fills one row at a time, that a re-run resumes, and whose bytes do not depend on
the order in which the rows arrived.

Rows are identified by their values in ``key_columns``, compared as strings (so a row read back from a CSV matches
the row written). The parent process adds each row as its task finishes and the whole file is rewritten atomically
(temporary file, then rename) every time: an interrupted run loses no finished row, and a re-run skips them. The
file lists the rows in the grid's canonical order (``order``), rows from earlier runs that are not in this grid
first, so a run with one worker, with eight, or interrupted and resumed writes the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["ResumableTable"]


class ResumableTable:
    """Rows of a grid kept in canonical order and written to ``path`` after every :meth:`add`.

    Parameters
    ----------
    path : path or None
        ``.csv`` (columns ``columns``) or ``.json`` (a list of objects); None keeps the rows in memory only.
    columns : sequence of str
        The CSV columns, in order (extra keys of a row are not written to a CSV).
    key_columns : sequence of str
        The columns that identify a row (a cell of the grid).
    order : iterable of tuple, optional
        Keys of the grid in canonical order. Rows with other keys keep their file order, before these.
    resume : bool
        Read the rows already in ``path``; False starts empty (the file is replaced at the first write).
    redo : sequence of str
        Values of the ``status`` column that do not count as finished: a re-run runs those cells again and
        replaces their rows (for example ``("timed out", "lost")``).
    defaults : mapping, optional
        Values of key columns that rows read back from an older file may lack (a key column added later): such a
        row gets the default, so it keeps identifying its cell.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.csv"
    >>> table = ResumableTable(path, ["cell", "value"], ["cell"], order=[("a",), ("b",)])
    >>> table.add({"cell": "b", "value": 2}); table.add({"cell": "a", "value": 1})
    >>> path.read_text().splitlines()
    ['cell,value', 'a,1', 'b,2']
    >>> ResumableTable(path, ["cell", "value"], ["cell"]).done(("a",))
    True
    """

    def __init__(self, path, columns: Sequence[str], key_columns: Sequence[str], *, order: Iterable = (),
                 resume: bool = True, redo: Sequence[str] = (), defaults: Mapping | None = None):
        self.path = None if path is None else Path(path)
        if self.path is not None and self.path.suffix not in (".csv", ".json"):
            raise ValueError(f"a resumable table is a .csv or .json file; got {self.path}")
        self.columns = list(columns)
        self.key_columns = list(key_columns)
        missing = [c for c in self.key_columns if c not in self.columns]
        if missing:
            raise ValueError(f"key_columns {missing} are not among the columns {self.columns}")
        self.redo = tuple(redo)
        self.defaults = dict(defaults or {})
        self._rank = {}
        for key in order:
            self._rank.setdefault(self._normalise(key), len(self._rank))
        self._rows: dict[tuple, dict] = {}
        if resume and self.path is not None:
            for row in self._read():
                row = {**row, **{k: v for k, v in self.defaults.items() if row.get(k) in (None, "")}}
                if row.get("status") not in self.redo:
                    self._rows[self.key_of(row)] = row

    @staticmethod
    def _normalise(key) -> tuple:
        return tuple(str(k) for k in (key if isinstance(key, (tuple, list)) else (key,)))

    def key_of(self, row) -> tuple:
        try:
            return tuple(str(row[c]) for c in self.key_columns)
        except KeyError as exc:
            raise ValueError(f"a row lacks the key column {exc}; key columns are {self.key_columns}") from None

    def done(self, key) -> bool:
        """Whether the cell ``key`` already has a finished row."""
        return self._normalise(key) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[dict]:
        """The rows in canonical order."""
        def position(item):
            arrival, (key, _) = item
            rank = self._rank.get(key)
            return (0, arrival) if rank is None else (1, rank)

        indexed = sorted(enumerate(self._rows.items()), key=position)
        return [row for _, (_, row) in indexed]

    def add(self, row: dict) -> None:
        """Insert (or replace) the row of its cell and rewrite the file."""
        key = self.key_of(row)
        self._rows.pop(key, None)
        self._rows[key] = row
        self.write()

    def write(self) -> None:
        from structmat.benchmarks.results import write_rows
        from structmat.matrices.io import atomic_write

        if self.path is None:
            return
        if self.path.suffix == ".csv":
            write_rows(self.path, self.rows, self.columns)
        else:
            data = (json.dumps(self.rows, indent=1) + "\n").encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(data))

    def _read(self) -> list[dict]:
        from structmat.benchmarks.results import read_rows

        if not self.path.exists():
            return []
        if self.path.suffix == ".csv":
            return read_rows(self.path)
        rows = json.loads(self.path.read_text())
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{self.path} is not a list of JSON objects, so it cannot be resumed")
        return rows
