"""Reproduction: SWAT, an MLP trained with top-K sparse weights and activations (Raihan & Aamodt, NeurIPS 2020),
against dense training, on a real data set (scikit-learn's digits by default).

The paper's claim: SWAT-U at 50-70% sparsity trains to about dense accuracy, and 90% costs a little accuracy, while
the training multiply-adds fall by about the sparsity (README tables; Sec. 5). The MLP is 64-256-256-10 (ReLU),
trained with SGD (momentum 0.9, lr 0.05, weight decay 5e-4, batch 50, cosine decay), every ``nn.Linear``
converted by :func:`structmat.training.convert_to_topk_sparse`. Variants: dense; SWAT-U (uniform, unstructured) at
every sparsity with the threshold recomputed every ``topk_period`` steps; at the highest sparsity also SWAT-U with
the exact top-K every step and SWAT-ERK; and the channel-structured mode (whole input columns) at the lower
sparsities. Each runs with several seeds. ``train_macs_share`` is the multiply-adds of all training steps relative
to dense training (1 − the training-FLOP reduction); ``weight_sparsity`` is the final network's share of zero
weights and ``activation_sparsity`` the mean share of zeros in the saved activations.
"""

from __future__ import annotations

import torch

from structmat.benchmarks._training import load_split, mlp, run_cells, summarize, write_summary_and_plot
from structmat.training import accuracy, convert_to_topk_sparse, model_training_cost, train_epochs
from structmat.training.topk_sparse import TopKSparseLinear

__all__ = ["run_swat_benchmark", "plot_swat", "swat_variants", "swat_summary", "write_swat_outputs", "SWAT_COLUMNS"]

SWAT_COLUMNS = ["dataset", "variant", "sparsity", "distribution", "structure", "topk_period", "seed", "epochs",
                "test_accuracy", "train_accuracy", "weight_sparsity", "activation_sparsity", "train_macs_share",
                "seconds"]


def swat_variants(sparsities=(0.5, 0.7, 0.9), topk_period: int = 10) -> list[dict]:
    """Dense; SWAT-U at every sparsity; exact top-K every step and ERK at the highest; channel mode at the others."""
    variant = lambda name, s, dist="uniform", structure="unstructured", period=topk_period: dict(  # noqa: E731
        variant=name, sparsity=s, distribution=dist, structure=structure, topk_period=period)
    variants = [variant("dense", 0.0, period=1)]
    variants += [variant(f"swat-u-{s:g}", s) for s in sparsities]
    top = max(sparsities)
    variants += [variant(f"swat-u-{top:g}-period1", top, period=1), variant(f"swat-erk-{top:g}", top, "erk")]
    variants += [variant(f"swat-channel-{s:g}", s, structure="channel") for s in sparsities if s < top]
    return variants


def _train_one(split, cell, hidden, lr, batch_size) -> dict:
    seed, epochs, sparsity = int(cell["seed"]), int(cell["epochs"]), float(cell["sparsity"])
    model = mlp([split.num_features, *hidden, split.num_classes], seed=seed)
    if sparsity > 0:
        model = convert_to_topk_sparse(model, sparsity, distribution=cell["distribution"],
                                       structure=cell["structure"], topk_period=int(cell["topk_period"]))
    totals = {"used": 0.0, "dense": 0.0, "activation_density": 0.0, "steps": 0}

    def on_step(model):
        cost = model_training_cost(model)
        if cost is not None:
            totals["used"] += cost.total
            totals["dense"] += 3 * cost.dense
        densities = [m.last_activation_density for m in model.modules() if isinstance(m, TopKSparseLinear)]
        if densities:
            totals["activation_density"] += sum(densities) / len(densities)
            totals["steps"] += 1

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = -(-split.X_train.shape[0] // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    def step_and_schedule(model):
        schedule.step()
        on_step(model)

    train_epochs(model, split.X_train, split.y_train, epochs=epochs, optimizer=optimizer, batch_size=batch_size,
                 seed=seed, on_step=step_and_schedule)
    weights = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    kept = sum(getattr(m, "nparams", m.weight.numel()) for m in weights)
    return {"test_accuracy": accuracy(model, split.X_test, split.y_test),
            "train_accuracy": accuracy(model, split.X_train, split.y_train),
            "weight_sparsity": 1.0 - kept / sum(m.weight.numel() for m in weights),
            "activation_sparsity": 1.0 - totals["activation_density"] / totals["steps"] if totals["steps"] else 0.0,
            "train_macs_share": totals["used"] / totals["dense"] if totals["dense"] else 1.0}


def run_swat_benchmark(*, dataset: str = "digits", sparsities=(0.5, 0.7, 0.9), topk_period: int = 10,
                       seeds=(0, 1, 2), epochs: int = 60, hidden=(256, 256), lr: float = 0.05, batch_size: int = 50,
                       csv_path=None, resume: bool = True, progress: bool = True) -> list[dict]:
    """Train every variant of :func:`swat_variants` with every seed; one CSV row per run."""
    split = load_split(dataset)
    cells = [dict(dataset=dataset, seed=seed, epochs=epochs, **variant)
             for variant in swat_variants(tuple(sparsities), topk_period) for seed in seeds]
    return run_cells(cells, lambda cell: _train_one(split, cell, hidden, lr, batch_size),
                     key=("dataset", "variant", "seed", "epochs"), columns=SWAT_COLUMNS, csv_path=csv_path,
                     resume=resume, progress=progress, desc="SWAT training")


def swat_summary(rows) -> list[dict]:
    return summarize(rows, ["variant"], ["test_accuracy", "weight_sparsity", "activation_sparsity",
                                         "train_macs_share"])


def plot_swat(rows, path, *, title: str | None = None) -> None:
    """Test accuracy (mean ± std over seeds) against the training-FLOP reduction, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = swat_summary(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"dense": "*", "swat-u": "o", "swat-erk": "D", "swat-channel": "s"}
    for row in summary:
        marker = next((m for prefix, m in markers.items() if row["variant"].startswith(prefix)), "o")
        if "period1" in row["variant"]:
            marker = "x"
        ax.errorbar(100 * (1 - row["train_macs_share_mean"]), 100 * row["test_accuracy_mean"],
                    yerr=100 * row["test_accuracy_std"], fmt=marker, capsize=3, markersize=8, label=row["variant"])
    dense = next((r for r in summary if r["variant"] == "dense"), None)
    if dense is not None:
        ax.axhspan(100 * dense["test_accuracy_mean"] - 1, 100 * dense["test_accuracy_mean"] + 1, color="0.9",
                   label="dense ± 1 point")
    ax.set_xlabel("training-FLOP reduction (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "SWAT: top-K sparse weights and activations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_swat_outputs(rows, directory) -> tuple:
    """Write ``swat_summary.csv`` and ``swat.png``; return their paths."""
    return write_summary_and_plot(rows, directory, "swat", swat_summary, plot_swat, f"MLP on {rows[0]['dataset']}: SWAT")
