"""The figure of a head study (``structmat demo``, ``structmat finetune``): every family of the table, before and
after fine-tuning, and the fine-tuning curves.

Left, one row per head in the table's order: the held-out agreement with the dense head (or accuracy, for a
labels study) of the plain fit (×), of the fit the head started from (○) and after fine-tuning (●); a head that
has no result says why in its row (its status and the first words of its message), so every family of the table
is in the figure. Right, the validation loss and metric per epoch. Families whose curves are identical (several
families return their low-rank member, which then trains the same way) are drawn once, their legend entry naming
each of them; every family has its own colour, marker and line style (:mod:`structmat.benchmarks.plot_style`), so
curves that nearly coincide can still be told apart.

The figure is drawn from :meth:`structmat.studies.Study.to_json`'s dict, so a study's saved JSON redraws it:
``plot_study(json.load(open("demo.json")), "demo.png")``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["plot_study"]

_MESSAGE_CHARS = 78  # characters of a message across the whole left panel


def _measure(objective: str) -> tuple[str, str]:
    """``(key suffix, axis words)`` of the study's measure."""
    if objective == "distill":
        return "agreement", "top-1 agreement with the dense head"
    return "accuracy", "accuracy on the labels"


def _history_series(head: Mapping, key: str):
    history = head["history"]["history"]
    return [(r["epoch"], r["val_loss"], r[f"val_{key}"]) for r in history]


def plot_study(study: Mapping, path, *, title: str | None = None) -> dict:
    """Draw the study ``study`` (the dict of :meth:`~structmat.studies.Study.to_json`) into the PNG ``path``.

    Returns
    -------
    dict
        What the figure shows, for checks: ``rows`` (the left panel's row labels, one per head), ``curves`` (the
        legend entries of the curves) and ``not_trained`` (the families without a curve, named in the figure).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from structmat.benchmarks.plot_style import family_style, group_label, identical_groups

    key, words = _measure(study["objective"])
    measure_word = key
    heads = list(study["heads"])  # the dense reference first, then the families in the table's order
    fig = plt.figure(figsize=(15, 0.32 * len(heads) + 4.6))
    grid = fig.add_gridspec(1, 3, width_ratios=(1.25, 1, 1))
    ax_rows, ax_loss, ax_metric = (fig.add_subplot(grid[0, i]) for i in range(3))

    # -- left: one row per head
    values = [v for h in heads for v in (h.get(f"plain_{key}_before"), h.get(f"{key}_before"), h.get(f"{key}_after"))
              if v is not None]
    left = max(0.0, np.floor(10 * min(values, default=0.0) - 0.5) / 10)  # the marks spread over the width
    dense = heads[0]
    dense_value = dense.get(f"{key}_after")
    if dense_value is not None:
        ax_rows.axvline(dense_value, color="0.35", linewidth=1.2, linestyle="-")
    for y, head in enumerate(heads):
        colour = family_style(head["family"])["color"]
        plain, before, after = (head.get(f"plain_{key}_before"), head.get(f"{key}_before"), head.get(f"{key}_after"))
        if head["family"] == "dense":
            if dense_value is not None:
                ax_rows.plot([dense_value], [y], "D", color="0.35", markersize=7)
            continue
        if plain is not None:
            ax_rows.plot([plain], [y], "x", color="0.35", markersize=7, markeredgewidth=1.5)
        if before is not None and after is not None:
            ax_rows.annotate("", xy=(after, y), xytext=(before, y),
                             arrowprops=dict(arrowstyle="->", color=colour, linewidth=1.2, shrinkA=4, shrinkB=5))
        if before is not None:
            ax_rows.plot([before], [y], "o", markerfacecolor="white", markeredgecolor=colour, markersize=7,
                         markeredgewidth=1.5)
        if after is not None:
            ax_rows.plot([after], [y], "o", color=colour, markersize=7)
            text = f"{before:.3f} → {after:.3f}" if before is not None else f"{after:.3f}"
            ax_rows.text((after + (before if before is not None else after)) / 2, y - 0.3, text, va="center",
                         ha="center", fontsize=7.5)
        if head["status"] != "ok" or after is None:
            start = max(v for v in (left, plain, before) if v is not None) + 0.03 * (1.0 - left)
            width = max(20, int(_MESSAGE_CHARS * (1.0 - start) / (1.0 - left)))  # what fits right of the marks
            reason = textwrap.shorten(f"{head['status']}: {head.get('message') or ''}", width, placeholder=" …")
            ax_rows.text(start, y, reason, va="center", fontsize=7.5, color="tab:red", style="italic", clip_on=True)
    labels = []
    for head in heads:
        share = head.get("share")
        labels.append(head["family"] + (f"  ({share:.1%})" if share is not None and head["family"] != "dense" else ""))
    ax_rows.set_yticks(range(len(heads)), labels, fontsize=8.5)
    ax_rows.set_ylim(len(heads) - 0.5, -0.5)
    ax_rows.set_xlim(left, 1.0 + 0.04 * (1.0 - left))
    ax_rows.set_xlabel(f"held-out {words}")
    ax_rows.grid(alpha=0.3, axis="x")
    ax_rows.set_title(f"{study['test_count']} held-out rows, before → after fine-tuning", fontsize=10)
    row_handles = [Line2D([], [], marker="x", color="0.35", linestyle="", markeredgewidth=1.5),
                   Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="0.2", linestyle=""),
                   Line2D([], [], marker="o", color="0.2", linestyle=""),
                   Line2D([], [], color="0.35", linewidth=1.2, marker="D")]
    row_labels = ["plain fit to W (not fine-tuned)",
                  "start: " + ("fit to W's outputs" if study.get("config", {}).get("init") == "data-aware"
                               else "the head fine-tuning began from"),
                  "after fine-tuning", f"dense head ({dense_value:.3f})" if dense_value is not None else "dense head"]
    ax_rows.legend(row_handles, row_labels, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
                   frameon=False)

    # -- right: the curves, identical ones once
    trained = {h["family"]: h for h in heads if h.get("history")}
    series = {family: _history_series(h, key) for family, h in trained.items()}
    for group in identical_groups(series, atol=1e-12):
        lead = "lowrank" if "lowrank" in group else group[0]
        epochs, losses, values = zip(*series[lead])
        style = family_style(lead)
        every = max(1, len(epochs) // 8)
        label = group_label([lead] + [g for g in group if g != lead], reference=None)
        for ax, ys in ((ax_loss, losses), (ax_metric, values)):
            ax.plot(epochs, ys, label=label, markevery=every, markersize=5,
                    **{**style, "linewidth": style.get("linewidth", 1.3)})
            best = trained[lead]["history"]["best_epoch"]
            ax.plot([epochs[best]], [ys[best]], marker="*", color=style["color"], markeredgecolor="black",
                    markersize=11, linestyle="", zorder=6)
    positive = all(loss > 0 for s in series.values() for _, loss, _ in s)
    ax_loss.set(xlabel="epoch", ylabel="validation loss", yscale="log" if positive else "linear")
    ax_metric.set(xlabel="epoch", ylabel=f"validation {words}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    handles, names = ax_metric.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="*", color="0.6", markeredgecolor="black", markersize=11, linestyle=""))
    names.append("best epoch (the weights kept)")
    ax_metric.legend(handles, names, fontsize=7.5, loc="lower right", framealpha=0.9)
    missing = [h["family"] for h in heads if not h.get("history") and h["family"] != "dense"]
    if missing:
        ax_loss.text(0.02, 0.02, "no curve (not fine-tuned, see left): " + ", ".join(missing),
                     transform=ax_loss.transAxes, fontsize=7.5, color="tab:red", style="italic")
    ax_loss.set_title("fine-tuning: validation loss per epoch", fontsize=10)
    ax_metric.set_title(f"validation {measure_word} (epoch 0: the fitted start)", fontsize=10)
    fig.suptitle(title or f"{study['objective']} study at budget {study['budget']}: {len(heads) - 1} families",
                 fontsize=11)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return {"rows": labels, "curves": names, "not_trained": missing}
