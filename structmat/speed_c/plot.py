"""Plot of C product time against parameters, with the dense times and the ideal line ``t_dense × share``."""

from __future__ import annotations

import numpy as np

from structmat.speed_c.runner import TARGET_FACTOR

__all__ = ["plot_c_benchmark"]


def plot_c_benchmark(rows: list[dict], path, *, title: str | None = None) -> None:
    """One panel per matrix: median ns per product against nparams for each family (C), the dense C time and
    NumPy's one-thread BLAS time as horizontal lines, and the ideal ``t_dense × nparams / (m n)`` through 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["matrix"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in rows if r["matrix"] == name]
        m, n = int(mine[0]["m"]), int(mine[0]["n"])
        dense = next((float(r["median_ns"]) for r in mine if r["family"] == "dense" and r["implementation"] == "c"),
                     None)
        blas = next((float(r["median_ns"]) for r in mine if r["implementation"] == "numpy-blas"), None)
        scale = 1e-3  # ns -> µs
        if dense is not None:
            ax.axhline(dense * scale, color="black", lw=1, label="dense, C")
            ax.plot([0, m * n], [0, dense * scale], color="gray", ls="--", lw=1, label="ideal: t_dense × share")
            ax.plot([0, m * n / TARGET_FACTOR], [0, dense * scale], color="gray", ls=":", lw=1,
                    label=f"target: {TARGET_FACTOR:g} × ideal")
        if blas is not None:
            ax.axhline(blas * scale, color="tab:purple", ls=":", lw=1.2, label="dense, NumPy BLAS (1 thread)")
        families = [f for f in dict.fromkeys(r["family"] for r in mine) if f != "dense"]
        for family in families:
            points = sorted((int(r["nparams"]), float(r["median_ns"]) * scale) for r in mine
                            if r["family"] == family and r["implementation"] == "c")
            xs, ys = np.array(points).T
            ax.plot(xs, ys, "o-", label=f"{family}, C")
        ax.set_xlim(0, m * n * 1.02)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("parameters")
        ax.set_ylabel("µs per product (median, one core)")
        ax.set_title(title or f"{name} ({m}×{n})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
