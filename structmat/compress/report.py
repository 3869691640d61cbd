"""The compression report: one row per selected layer and the totals, as text, CSV and JSON, and the allocation plot.

Per layer: name, kind (``linear`` or ``conv1x1``), family (``dense`` when the layer was kept), shape, dense and
structured parameters, deployment bytes (float32 values plus int32 indices), the relative output error on the
calibration data, and the measured CPU latency of the layer against the dense layer at batch 1 and 32 (one thread,
medians; see :mod:`structmat.compress.latency`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["LayerRow", "CompressionReport", "REPORT_COLUMNS", "plot_allocation"]

REPORT_COLUMNS = ["name", "kind", "family", "out_features", "in_features", "dense_nparams", "nparams", "share",
                  "dense_nbytes", "nbytes", "output_error", "frobenius_error", "latency_1_ms", "dense_latency_1_ms",
                  "latency_32_ms", "dense_latency_32_ms"]


@dataclass(frozen=True)
class LayerRow:
    """One selected layer after compression."""

    name: str
    kind: str
    family: str
    out_features: int
    in_features: int
    dense_nparams: int
    nparams: int
    dense_nbytes: int
    nbytes: int
    output_error: float
    frobenius_error: float
    latency_1_ms: float | None = None
    dense_latency_1_ms: float | None = None
    latency_32_ms: float | None = None
    dense_latency_32_ms: float | None = None

    @property
    def share(self) -> float:
        return self.nparams / self.dense_nparams

    def speed_ratio(self, batch: int) -> float | None:
        """Structured latency / dense latency at ``batch`` (below 1: faster than dense)."""
        mine, dense = getattr(self, f"latency_{batch}_ms"), getattr(self, f"dense_latency_{batch}_ms")
        return None if mine is None or not dense else mine / dense

    def to_dict(self) -> dict:
        return {**asdict(self), "share": self.share}


@dataclass
class CompressionReport:
    """What :func:`~structmat.compress.compress_model` did: the layers, the totals and the settings."""

    layers: list[LayerRow]
    budget: float | int
    measure: str
    allocation: str
    seconds: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- totals
    @property
    def dense_nparams(self) -> int:
        return sum(r.dense_nparams for r in self.layers)

    @property
    def nparams(self) -> int:
        return sum(r.nparams for r in self.layers)

    @property
    def dense_nbytes(self) -> int:
        return sum(r.dense_nbytes for r in self.layers)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.layers)

    def totals(self) -> dict:
        def total(attr):
            values = [getattr(r, attr) for r in self.layers]
            return None if any(v is None for v in values) else sum(values)

        return {"layers": len(self.layers), "dense_nparams": self.dense_nparams, "nparams": self.nparams,
                "share": self.nparams / self.dense_nparams, "dense_nbytes": self.dense_nbytes, "nbytes": self.nbytes,
                "bytes_share": self.nbytes / self.dense_nbytes,
                "families": {f: sum(1 for r in self.layers if r.family == f) for f in sorted({r.family for r in self.layers})},
                **{f"{kind}_{b}_ms": total(f"{prefix}latency_{b}_ms") for b in (1, 32)
                   for kind, prefix in (("latency", ""), ("dense_latency", "dense_"))}}

    # ---------------------------------------------------------------- output
    def to_text(self) -> str:
        """A plain-text table; the name column is as wide as the longest name."""
        width = max([len("layer")] + [len(r.name) for r in self.layers])
        head = (f"{'layer':<{width}} {'kind':<7} {'family':<14} {'shape':>10} {'dense':>9} {'params':>9} {'share':>6} "
                f"{'bytes':>9} {'out err':>7} {'t/dense b1':>10} {'t/dense b32':>11}")
        lines = [head]

        def ratio(r, b):
            value = r.speed_ratio(b)
            return "" if value is None else f"{value:.2f}"

        for r in self.layers:
            lines.append(f"{r.name:<{width}} {r.kind:<7} {r.family:<14} {f'{r.out_features}x{r.in_features}':>10} "
                         f"{r.dense_nparams:>9} {r.nparams:>9} {r.share:>6.1%} {r.nbytes:>9} {r.output_error:>7.4f} "
                         f"{ratio(r, 1):>10} {ratio(r, 32):>11}")
        t = self.totals()
        speed = {b: (f"{t[f'latency_{b}_ms'] / t[f'dense_latency_{b}_ms']:.2f}" if t[f"latency_{b}_ms"] else "")
                 for b in (1, 32)}
        lines.append(f"{'total':<{width}} {'':<7} {'':<14} {'':>10} {t['dense_nparams']:>9} {t['nparams']:>9} "
                     f"{t['share']:>6.1%} {t['nbytes']:>9} {'':>7} {speed[1]:>10} {speed[32]:>11}")
        families = ", ".join(f"{f} {n}" for f, n in t["families"].items())
        lines.append(f"budget {self.budget} ({self.measure}), allocation {self.allocation}; families: {families}; "
                     f"bytes {t['bytes_share']:.1%} of dense")
        labels = self.speed_labels()
        if labels:
            lines.append("measured speed on the reference layer: " + "; ".join(
                f"{f} {label.describe()}" for f, label in labels.items()))
        if self.seconds:
            lines.append("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)

    def speed_labels(self) -> dict:
        """The shipped speed labels (:mod:`structmat.benchmarks.speed_labels`) of the structured families used:
        time over dense at batch 1 on the EfficientNet-Lite0 classifier, C kernel and torch layer."""
        from structmat.benchmarks.speed_labels import speed_labels

        labels = speed_labels()
        return {f: labels[f] for f in self.totals()["families"] if f != "dense" and f in labels}

    def to_json(self) -> dict:
        labels = {f: {"c_ratio": label.c_ratio, "torch_ratio": label.torch_ratio, "matrix": label.matrix,
                      "share": label.share, "cpu": label.cpu, "date": label.date}
                  for f, label in self.speed_labels().items()}
        return {"budget": self.budget, "measure": self.measure, "allocation": self.allocation,
                "totals": self.totals(), "seconds": self.seconds, "settings": self.settings, "speed_labels": labels,
                "layers": [r.to_dict() for r in self.layers]}

    def write(self, directory, stem: str = "compress") -> list[Path]:
        """``<stem>.txt``, ``<stem>.csv``, ``<stem>.json`` and ``<stem>.png`` (the allocation) in ``directory``."""
        from structmat.benchmarks.results import write_rows
        from structmat.matrices.io import atomic_write

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{stem}.{ext}" for ext in ("txt", "csv", "json", "png")]
        atomic_write(paths[0], lambda f: f.write((self.to_text() + "\n").encode()))
        write_rows(paths[1], [r.to_dict() for r in self.layers], REPORT_COLUMNS)
        atomic_write(paths[2], lambda f: f.write(json.dumps(self.to_json(), indent=1).encode()))
        plot_allocation(self, paths[3])
        return paths


def plot_allocation(report: CompressionReport, path, *, title: str | None = None) -> None:
    """A bar per layer: its share of dense parameters, coloured by family; the output error as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.layers
    families = sorted({r.family for r in rows})
    colours = {f: plt.get_cmap("tab20")(i % 20) for i, f in enumerate(families)}
    fig, ax = plt.subplots(figsize=(max(8.0, 0.28 * len(rows) + 3), 5.5))
    x = range(len(rows))
    ax.bar(x, [r.share for r in rows], color=[colours[r.family] for r in rows])
    ax.set_ylabel("share of the layer's dense parameters")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(list(x))
    ax.set_xticklabels([r.name for r in rows], rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    error_axis = ax.twinx()
    error_axis.plot(list(x), [r.output_error for r in rows], "k.-", linewidth=0.8, markersize=4)
    error_axis.set_ylabel("output error on calibration data (line)")
    error_axis.set_ylim(0, max([0.05] + [r.output_error * 1.15 for r in rows]))
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[f]) for f in families]
    ax.legend(handles, families, loc="upper left", fontsize=8, ncol=min(4, len(families)))
    t = report.totals()
    ax.set_title(title or f"{report.allocation} allocation: {t['nparams']:,} of {t['dense_nparams']:,} parameters "
                          f"({t['share']:.1%}), budget {report.budget} ({report.measure})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
