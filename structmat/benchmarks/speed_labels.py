"""Measured speed labels: per family, the C and torch time ratios to dense at batch 1 on the reference matrix.

Parameter counts say nothing about time: Toeplitz-like layers at the budgets they are used at are many times
slower than dense, and unstructured sparsity at a quarter of the weights is slower than a dense product that stays
in cache. So the family table, ``structmat families`` and other code that picks a family (a latency budget in a
whole-model allocation) read *measured* ratios from ``speed_labels.json`` beside this module: the C kernel's time
over the dense C loop (``structmat bench-c``) and the torch layer's forward time without autograd over
``nn.Linear``'s (``structmat bench-layers``), both at batch 1 on one pinned core, for the EfficientNet-Lite0
classifier (1000×1280) fitted at a quarter of its parameters. Each label carries the CPU model, SIMD flags, date
and commands it came from: ratios move with the machine, so re-measure on yours with the two commands and
``structmat speed-labels`` (``--output`` writes a file of your own; :func:`speed_labels` reads it with ``path=``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from structmat._json import dumps

__all__ = ["SpeedLabel", "speed_label", "speed_labels", "write_speed_labels", "LABELS_PATH"]

#: The labels shipped with structmat (measured on the machine named inside).
LABELS_PATH = Path(__file__).with_name("speed_labels.json")


@dataclass(frozen=True)
class SpeedLabel:
    """Measured time ratios of one family to dense, batch 1, one core (None where not measured).

    ``c_ratio``: C kernel over the dense C loop. ``torch_ratio``: forward without autograd over ``nn.Linear``;
    ``torch_ratio_batch256`` the same at batch 256. ``matrix``, ``share``: what was timed; ``cpu``, ``simd``,
    ``date``, ``commands``: where, when and how.
    """

    family: str
    c_ratio: float | None
    torch_ratio: float | None
    torch_ratio_batch256: float | None
    matrix: str
    share: float
    cpu: str
    simd: str
    date: str
    commands: tuple[str, ...]

    def describe(self) -> str:
        """``C 0.31×, torch 0.41× dense (batch 1)``, or what is missing."""
        c = "C –" if self.c_ratio is None else f"C {self.c_ratio:.2f}×"
        t = "torch –" if self.torch_ratio is None else f"torch {self.torch_ratio:.2f}×"
        return f"{c}, {t} dense (batch 1)"


def speed_labels(path=None) -> dict[str, SpeedLabel]:
    """All measured labels, by family (empty if the file is missing)."""
    path = Path(path) if path is not None else LABELS_PATH
    if not path.exists():
        return {}
    document = json.loads(path.read_text())
    machine = document["machine"]
    out = {}
    for family, entry in document["families"].items():
        out[family] = SpeedLabel(family, entry.get("c_ratio"), entry.get("torch_ratio"),
                                 entry.get("torch_ratio_batch256"), document["matrix"], document["share"],
                                 machine["cpu"], machine["simd"], machine["date"], tuple(document["commands"]))
    return out


def speed_label(family: str, path=None) -> SpeedLabel | None:
    """The measured label of ``family`` (a registered name), or None if it was not measured."""
    from structmat.families import get_family

    get_family(family)
    return speed_labels(path).get(family)


def _read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_speed_labels(layer_speed_csv, bench_c_csv, path=None, *, matrix: str = "efficientnet_lite0",
                       commands=()) -> dict[str, SpeedLabel]:
    """Build the labels from a ``bench-layers`` CSV and a ``bench-c`` CSV of the same matrix and budget; write
    them as JSON (atomically) with the machine record of the layer run (``layer_speed.json`` beside its CSV)."""
    from structmat.benchmarks.machine import machine_info
    from structmat.matrices.io import atomic_write

    layer_rows = [r for r in _read_csv(layer_speed_csv) if r["matrix"] == matrix]
    c_rows = [r for r in _read_csv(bench_c_csv) if r["matrix"] == matrix and r["family"] != "dense"]
    if not layer_rows:
        raise ValueError(f"{layer_speed_csv} has no rows for matrix {matrix!r}")
    budgets = {r["budget"] for r in layer_rows if r["variant"] != "nn.Linear"}
    if len(budgets) != 1:
        raise ValueError(f"{layer_speed_csv} must hold one budget for {matrix!r}; got {sorted(budgets)}")
    budget = float(budgets.pop())
    families: dict[str, dict] = {}
    for r in layer_rows:
        if r["variant"] == "nn.Linear" or r["forward_ratio"] == "":
            continue
        key = "torch_ratio" if int(r["batch"]) == 1 else ("torch_ratio_batch256" if int(r["batch"]) == 256 else None)
        if key:
            families.setdefault(r["family"], {})[key] = round(float(r["forward_ratio"]), 4)
    for r in c_rows:
        if float(r["budget"]) == budget and r["implementation"] == "c":
            families.setdefault(r["family"], {})["c_ratio"] = round(float(r["ratio_to_c_dense"]), 4)
    sidecar = Path(layer_speed_csv).with_suffix(".json")
    machine = json.loads(sidecar.read_text())["machine"]["before"] if sidecar.exists() else machine_info()
    document = {"matrix": matrix, "share": budget, "batch": 1, "machine": machine, "commands": list(commands),
                "families": families}
    data = (dumps(document, indent=2, sort_keys=True) + "\n").encode()
    path = Path(path) if path is not None else LABELS_PATH
    atomic_write(path, lambda f: f.write(data))
    return speed_labels(path)


def labels_as_dicts(path=None) -> list[dict]:
    """The labels as plain dicts (for JSON reports)."""
    return [asdict(label) for label in speed_labels(path).values()]
