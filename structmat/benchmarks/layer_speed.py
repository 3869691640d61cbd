"""Layer speed: forward and forward+backward time of each structured layer against ``nn.Linear``, one thread.

Layers are built through the registry (``approximate`` then the family's ``from_matrix``), so every family
joins without a change here. The forward pass runs under ``torch.no_grad`` (the layers' inference fast path),
forward+backward with autograd (the training path). Times are medians over repeats of the CPU time of the calling
thread (one torch thread, pinned to one core), measured in one run; ratios are to ``nn.Linear`` of the same shape
at the same batch size. Each row carries the target of the forward ratio: ``max(1.5 × share, 0.5)`` at batch 1
and ``1.5 × share`` from batch 256 on, with the byte share (values plus int32 indices over the dense float32
bytes) for the families that store indices (as ``structmat bench-c`` judges them); Toeplitz-like and LDR layers
save parameters, not time, and have no target. The CPU model and SIMD flags are in every row and, with the load and
the date, in ``layer_speed.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._json import dumps
from structmat._validation import check_weight
from structmat.approximators import approximate
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.sweep import Variant
from structmat.benchmarks.machine import machine_info
from structmat.benchmarks.timing import single_thread, time_repeats
from structmat.speed_c.runner import BYTE_SHARE_FAMILIES

__all__ = ["run_layer_speed", "plot_layer_speed", "LAYER_SPEED_COLUMNS"]

logger = logging.getLogger(__name__)

LAYER_SPEED_COLUMNS = [
    "matrix", "m", "n", "variant", "family", "budget", "nparams", "share", "byte_share", "batch", "forward_ms",
    "forward_backward_ms", "forward_backward_min_ms", "repeats", "speedup_vs_linear", "forward_ratio",
    "target_ratio", "within_target", "cpu", "simd",
]

#: Families that save parameters, not time: no speed target.
NO_SPEED_TARGET = ("toeplitz_like", "ldr")


def speed_target(family: str, batch: int, share: float, byte_share: float):
    """The forward-time ratio to ``nn.Linear`` a layer should reach (None where no target applies)."""
    if family in NO_SPEED_TARGET or family in ("nn.Linear", "dense"):
        return None
    share = byte_share if family in BYTE_SHARE_FAMILIES else share
    if batch == 1:
        return max(1.5 * share, 0.5)
    if batch >= 256:
        return 1.5 * share
    return None


def _time_layer(layer, batch: int, n: int, repeats: int, seed: int):
    import torch

    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((batch, n)).astype(np.float32))
    x.requires_grad_(True)

    def forward():
        with torch.no_grad():
            layer(x)

    def forward_backward():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()

    fwd = time_repeats(forward, repeats=repeats, warmup=2, min_seconds=0.05, clock=time.thread_time)
    both = time_repeats(forward_backward, repeats=repeats, warmup=2, min_seconds=0.05, clock=time.thread_time)
    return fwd, both


def run_layer_speed(matrices, families: Sequence, budget, *, batch_sizes=(1, 32, 256), repeats: int = 15,
                    csv_path=None, resume: bool = True, progress: bool = False, seed: int = 0,
                    cpu=None) -> list[dict]:
    """Time ``nn.Linear`` and each family's layer fitted to each matrix at ``budget``, at each batch size.

    Parameters
    ----------
    matrices : mapping of name to array of shape (out_features, in_features)
    families : sequence of family names or :class:`~structmat.benchmarks.sweep.Variant`
    budget : int >= 1 or float in (0, 1]
    batch_sizes : sequence of int
    repeats : int
        Timed repeats per cell (at least; more while a cell has run under 50 ms).
    cpu : int, optional
        The core to pin to (default: the highest-numbered allowed one; see :func:`structmat.speed_c.one_core`).

    Returns
    -------
    list of dict with the keys in ``LAYER_SPEED_COLUMNS``; ``speedup_vs_linear`` is
    ``t(nn.Linear) / t(layer)`` for forward+backward; ``forward_ratio`` is ``t(layer) / t(nn.Linear)`` for the
    forward pass, beside its ``target_ratio`` (:func:`speed_target`). With ``csv_path``, ``layer_speed.json``
    beside it records the machine (:func:`~structmat.benchmarks.machine.machine_info`) before and after the run.
    """
    import torch

    from structmat.families import get_family
    from structmat.speed_c import one_core

    variants = [Variant.coerce(f) for f in families]
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["variant"], r["batch"]) for r in rows}
    jobs = [(name, v) for name in matrices for v in [Variant("nn.Linear", label="nn.Linear")] + variants]
    machine = {"before": machine_info()}
    cpu_fields = {"cpu": machine["before"]["cpu"], "simd": machine["before"]["simd"]}
    with single_thread(), one_core(cpu) as pinned:
        for name, variant in tqdm(jobs, desc="layer speed", disable=not progress):
            W = check_weight(matrices[name], name=f"matrix {name!r}")
            m, n = W.shape
            if variant.family == "nn.Linear":
                layer = torch.nn.Linear(n, m)
                nparams, nbytes = m * n, 4 * m * n
            else:
                try:
                    M = approximate(W, variant.family, budget, **dict(variant.options))
                except ValueError as exc:
                    logger.warning("layer speed: skipping %s on %s: %s", variant.name, name, exc)
                    continue
                layer = get_family(variant.family).layer_class().from_matrix(M, np.zeros(m))
                nparams, nbytes = M.nparams, M.nbytes
            for batch in batch_sizes:
                if (name, variant.name, str(batch)) in done:
                    continue
                fwd, both = _time_layer(layer, batch, n, repeats, seed)
                rows.append({"matrix": name, "m": m, "n": n, "variant": variant.name, "family": variant.family,
                             "budget": budget if variant.family != "nn.Linear" else 1.0, "nparams": nparams,
                             "share": nparams / (m * n), "byte_share": nbytes / (4 * m * n), "batch": batch,
                             "forward_ms": 1e3 * fwd.median,
                             "forward_backward_ms": 1e3 * both.median,
                             "forward_backward_min_ms": 1e3 * both.minimum, "repeats": both.repeats,
                             **cpu_fields})
                if csv_path is not None:
                    write_rows(csv_path, _with_speedups(rows), LAYER_SPEED_COLUMNS)
    machine.update(after=machine_info(), pinned_cpu=pinned)
    if csv_path is not None:
        from pathlib import Path

        from structmat.matrices.io import atomic_write

        data = (dumps({"machine": machine, "rows": _with_speedups(rows)}, indent=2) + "\n").encode()
        atomic_write(Path(csv_path).with_suffix(".json"), lambda f: f.write(data))
    return _with_speedups(rows)


def _with_speedups(rows: list[dict]) -> list[dict]:
    reference = {(r["matrix"], str(r["batch"])): (float(r["forward_backward_ms"]), float(r["forward_ms"]))
                 for r in rows if r["variant"] == "nn.Linear"}
    out = []
    for r in rows:
        both, forward = reference.get((r["matrix"], str(r["batch"])), (None, None))
        ratio = float(r["forward_ms"]) / forward if forward else ""
        target = speed_target(r["family"], int(r["batch"]), float(r["share"]),
                              float(r.get("byte_share") or r["share"]))
        out.append({**r, "speedup_vs_linear": (both / float(r["forward_backward_ms"])) if both else "",
                    "forward_ratio": ratio, "target_ratio": "" if target is None else target,
                    "within_target": "" if (target is None or ratio == "") else bool(ratio <= target)})
    return out


def plot_layer_speed(rows: list[dict], path) -> None:
    """Forward time over ``nn.Linear``'s per family and batch size (log scale), with each cell's target as a black
    tick; one panel per matrix, the machine in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["matrix"] for r in rows))
    variants = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "nn.Linear"]
    batches = sorted({int(r["batch"]) for r in rows})
    panel_width = max(6.0, 1.5 + 0.5 * len(batches) * len(variants))
    fig, axes = plt.subplots(1, len(names), figsize=(panel_width * len(names), 5.0), squeeze=False)
    width = 0.8 / max(len(variants), 1)
    colours = plt.get_cmap("tab20").colors
    for col, name in enumerate(names):
        ax = axes[0, col]
        for k, v in enumerate(variants):
            cells = [next((r for r in rows if r["matrix"] == name and r["variant"] == v and int(r["batch"]) == b),
                          None) for b in batches]
            ratios = [float(c["forward_ratio"]) if c and c["forward_ratio"] != "" else np.nan for c in cells]
            x = np.arange(len(batches)) + k * width
            ax.bar(x, ratios, width, label=v, color=colours[k % len(colours)])
            for xi, c in zip(x, cells):
                if c and c["target_ratio"] != "":
                    ax.plot([xi - width / 2, xi + width / 2], [float(c["target_ratio"])] * 2, color="black", lw=1.5)
        ax.axhline(1.0, color="grey", lw=1, ls="--")
        ax.set_xticks(np.arange(len(batches)) + 0.4 - width / 2, [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("forward time / nn.Linear (no_grad, 1 thread)")
        first = next(r for r in rows if r["matrix"] == name)
        budget = next((r["budget"] for r in rows if r["matrix"] == name and r["variant"] != "nn.Linear"), "")
        ax.set_title(f"{name} ({first['m']}×{first['n']}), budget {budget}; black ticks: targets", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=2)
    cpu = next((f"{r.get('cpu', '')} ({r.get('simd', '')})" for r in rows if r.get("cpu")), "")
    fig.suptitle(cpu, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
