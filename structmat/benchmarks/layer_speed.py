"""Layer speed: forward and forward+backward time of each structured layer against ``nn.Linear``, one thread.

Layers are built through the registry (``approximate`` then the family's ``from_matrix``), so every family
joins without a change here. Times are medians over repeats measured in one run; ratios are to ``nn.Linear``
of the same shape at the same batch size.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat._validation import check_weight
from structmat.approximators import approximate
from structmat.benchmarks.results import read_rows, write_rows
from structmat.benchmarks.sweep import Variant
from structmat.benchmarks.timing import single_thread, time_repeats

__all__ = ["run_layer_speed", "plot_layer_speed", "LAYER_SPEED_COLUMNS"]

logger = logging.getLogger(__name__)

LAYER_SPEED_COLUMNS = [
    "matrix", "m", "n", "variant", "family", "budget", "nparams", "share", "batch", "forward_ms",
    "forward_backward_ms", "forward_backward_min_ms", "repeats", "speedup_vs_linear",
]


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

    fwd = time_repeats(forward, repeats=repeats, warmup=2, min_seconds=0.05)
    both = time_repeats(forward_backward, repeats=repeats, warmup=2, min_seconds=0.05)
    return fwd, both


def run_layer_speed(matrices, families: Sequence, budget, *, batch_sizes=(1, 32, 256), repeats: int = 15,
                    csv_path=None, resume: bool = True, progress: bool = False, seed: int = 0) -> list[dict]:
    """Time ``nn.Linear`` and each family's layer fitted to each matrix at ``budget``, at each batch size.

    Parameters
    ----------
    matrices : mapping of name to array of shape (out_features, in_features)
    families : sequence of family names or :class:`~structmat.benchmarks.sweep.Variant`
    budget : int >= 1 or float in (0, 1]
    batch_sizes : sequence of int
    repeats : int
        Timed repeats per cell (at least; more while a cell has run under 50 ms).

    Returns
    -------
    list of dict with the keys in ``LAYER_SPEED_COLUMNS``; ``speedup_vs_linear`` is
    ``t(nn.Linear) / t(layer)`` for forward+backward.
    """
    import torch

    from structmat.families import get_family

    variants = [Variant.coerce(f) for f in families]
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["matrix"], r["variant"], r["batch"]) for r in rows}
    jobs = [(name, v) for name in matrices for v in [Variant("nn.Linear", label="nn.Linear")] + variants]
    with single_thread():
        for name, variant in tqdm(jobs, desc="layer speed", disable=not progress):
            W = check_weight(matrices[name], name=f"matrix {name!r}")
            m, n = W.shape
            if variant.family == "nn.Linear":
                layer = torch.nn.Linear(n, m)
                nparams = m * n
            else:
                try:
                    M = approximate(W, variant.family, budget, **dict(variant.options))
                except ValueError as exc:
                    logger.warning("layer speed: skipping %s on %s: %s", variant.name, name, exc)
                    continue
                layer = get_family(variant.family).layer_class().from_matrix(M, np.zeros(m))
                nparams = M.nparams
            for batch in batch_sizes:
                if (name, variant.name, str(batch)) in done:
                    continue
                fwd, both = _time_layer(layer, batch, n, repeats, seed)
                rows.append({"matrix": name, "m": m, "n": n, "variant": variant.name, "family": variant.family,
                             "budget": budget if variant.family != "nn.Linear" else 1.0, "nparams": nparams,
                             "share": nparams / (m * n), "batch": batch, "forward_ms": 1e3 * fwd.median,
                             "forward_backward_ms": 1e3 * both.median,
                             "forward_backward_min_ms": 1e3 * both.minimum, "repeats": both.repeats})
                if csv_path is not None:
                    write_rows(csv_path, _with_speedups(rows), LAYER_SPEED_COLUMNS)
    return _with_speedups(rows)


def _with_speedups(rows: list[dict]) -> list[dict]:
    reference = {(r["matrix"], str(r["batch"])): float(r["forward_backward_ms"])
                 for r in rows if r["variant"] == "nn.Linear"}
    out = []
    for r in rows:
        ref = reference.get((r["matrix"], str(r["batch"])))
        out.append({**r, "speedup_vs_linear": (ref / float(r["forward_backward_ms"])) if ref else ""})
    return out


def plot_layer_speed(rows: list[dict], path) -> None:
    """Forward+backward time per batch size, one group of bars per matrix and batch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["matrix"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    batches = sorted({int(r["batch"]) for r in rows})
    panel_width = max(5.0, 1.0 + 0.45 * len(batches) * len(variants))
    fig, axes = plt.subplots(1, len(names), figsize=(panel_width * len(names), 4.5), squeeze=False)
    width = 0.8 / len(variants)
    for col, name in enumerate(names):
        ax = axes[0, col]
        for k, v in enumerate(variants):
            heights = []
            for b in batches:
                match = [float(r["forward_backward_ms"]) for r in rows
                         if r["matrix"] == name and r["variant"] == v and int(r["batch"]) == b]
                heights.append(match[0] if match else np.nan)
            ax.bar(np.arange(len(batches)) + k * width, heights, width, label=v)
        ax.set_xticks(np.arange(len(batches)) + 0.4 - width / 2, [f"batch {b}" for b in batches])
        ax.set_yscale("log")
        ax.set_ylabel("forward + backward, ms (median, 1 thread)")
        first = next(r for r in rows if r["matrix"] == name)
        budget = next((r["budget"] for r in rows if r["matrix"] == name and r["variant"] != "nn.Linear"), "")
        ax.set_title(f"{name} ({first['m']}×{first['n']}), budget {budget}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
