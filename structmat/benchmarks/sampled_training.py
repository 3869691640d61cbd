"""Reproduction: an MLP trained with column-row sampled products (Adelman et al., NeurIPS 2021) against exact
training, on a real data set (scikit-learn's digits by default).

The paper's claim (README/abstract): forward sampling cuts training computation with "negligible or no impact on
the final test accuracy". The MLP is 64-256-256-10 (ReLU; 784 inputs on MNIST), trained with Adam (lr 1e-3,
batch 50), every ``nn.Linear`` converted by :func:`structmat.training.convert_to_sampled`. Variants: exact
training; forward top-k at every ratio; forward Bernoulli-CRS and CRS, and backward-only Bernoulli-CRS at the first
ratio; and forward top-k at the smallest ratio with the first layer exact. The first layer samples input *pixels*
by norm over the batch, so at small ratios top-k keeps the same central pixels for every batch and the weights of
the others never train; the authors likewise keep ImageNet's first convolution exact. Each variant runs with
several seeds (initialisation and batch order; the split is fixed). Test accuracy is measured in evaluation mode,
which is exact. ``train_macs_share`` is the multiply-adds of all training steps relative to exact training, also
split into the first layer and the others.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from structmat.benchmarks._training import load_split, mlp, run_cells, summarize, write_summary_and_plot
from structmat.training import accuracy, convert_to_sampled, train_epochs

__all__ = ["run_sampled_benchmark", "plot_sampled", "sampled_variants", "sampled_summary", "write_sampled_outputs",
           "SAMPLED_COLUMNS"]

SAMPLED_COLUMNS = ["dataset", "variant", "mode", "scheme", "sample_ratio", "first_layer", "seed", "epochs",
                   "test_accuracy", "train_accuracy", "train_macs_share", "first_layer_macs_share",
                   "other_layers_macs_share", "seconds"]


def sampled_variants(ratios=(0.5, 0.25)) -> list[dict]:
    """Exact training, forward top-k at each ratio, the other schemes and backward-only at ``ratios[0]``, and
    forward top-k at the smallest ratio with the first layer exact."""
    def variant(name, mode, scheme, ratio, first_layer="sampled"):
        return dict(variant=name, mode=mode, scheme=scheme, sample_ratio=ratio, first_layer=first_layer)

    variants = [variant("exact", "exact", "", 1.0, "exact")]
    variants += [variant(f"forward-topk-{r:g}", "forward", "topk", r) for r in ratios]
    main, low = ratios[0], min(ratios)
    variants += [variant(f"forward-bernoulli-{main:g}", "forward", "bernoulli", main),
                 variant(f"forward-crs-{main:g}", "forward", "crs", main),
                 variant(f"backward-bernoulli-{main:g}", "backward", "bernoulli", main)]
    if low < 1.0:  # the first layer samples input pixels; keep it exact, as the authors keep ImageNet's first conv
        variants.append(variant(f"forward-topk-{low:g}-first-exact", "forward", "topk", low, "exact"))
    return variants


def _train_one(split, cell, hidden, lr, batch_size) -> dict:
    seed, epochs = int(cell["seed"]), int(cell["epochs"])
    model = mlp([split.num_features, *hidden, split.num_classes], seed=seed)
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    first = names[0]
    if cell["mode"] != "exact":
        skip = first if cell.get("first_layer") == "exact" else None
        model = convert_to_sampled(model, float(cell["sample_ratio"]), mode=cell["mode"], scheme=cell["scheme"],
                                   seed=1000 * seed, where=lambda name, m: name != skip)
    used = defaultdict(float)
    dense = defaultdict(float)
    batch_rows = {}
    for name in names:  # exact layers cost what they cost: record their batch size
        model.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: batch_rows.__setitem__(name, output.numel() // output.shape[-1]))

    def on_step(model):
        for name in names:
            module = model.get_submodule(name)
            cost = getattr(module, "last_cost", None)
            if cost is None:
                macs = 3 * batch_rows[name] * module.weight.numel()
                used[name] += macs
                dense[name] += macs
            else:
                used[name] += cost.total
                dense[name] += 3 * cost.dense

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_epochs(model, split.X_train, split.y_train, epochs=epochs, optimizer=optimizer, batch_size=batch_size,
                 seed=seed, on_step=on_step)
    share = lambda keys: sum(used[k] for k in keys) / sum(dense[k] for k in keys)  # noqa: E731
    return {"test_accuracy": accuracy(model, split.X_test, split.y_test),
            "train_accuracy": accuracy(model, split.X_train, split.y_train),
            "train_macs_share": share(names), "first_layer_macs_share": share([first]),
            "other_layers_macs_share": share(names[1:])}


def run_sampled_benchmark(*, dataset: str = "digits", ratios=(0.5, 0.25), seeds=(0, 1, 2), epochs: int = 50,
                          hidden=(256, 256), lr: float = 1e-3, batch_size: int = 50, csv_path=None,
                          resume: bool = True, progress: bool = True) -> list[dict]:
    """Train every variant of :func:`sampled_variants` with every seed; one CSV row per run."""
    split = load_split(dataset)
    cells = [dict(dataset=dataset, seed=seed, epochs=epochs, **variant)
             for variant in sampled_variants(tuple(ratios)) for seed in seeds]
    return run_cells(cells, lambda cell: _train_one(split, cell, hidden, lr, batch_size),
                     key=("dataset", "variant", "seed", "epochs"), columns=SAMPLED_COLUMNS, csv_path=csv_path,
                     resume=resume, progress=progress, desc="sampled training")


def sampled_summary(rows) -> list[dict]:
    return summarize(rows, ["variant"], ["test_accuracy", "train_macs_share", "other_layers_macs_share"])


def plot_sampled(rows, path, *, title: str | None = None) -> None:
    """Test accuracy (mean ± std over seeds) against training multiply-adds relative to exact training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = sampled_summary(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in summary:
        marker = "*" if row["variant"] == "exact" else ("o" if row["variant"].startswith("forward-topk") else "s")
        ax.errorbar(row["train_macs_share_mean"], 100 * row["test_accuracy_mean"],
                    yerr=100 * row["test_accuracy_std"], fmt=marker, capsize=3, markersize=8, label=row["variant"])
    exact = next((r for r in summary if r["variant"] == "exact"), None)
    if exact is not None:
        ax.axhspan(100 * exact["test_accuracy_mean"] - 1, 100 * exact["test_accuracy_mean"] + 1, color="0.9",
                   label="exact ± 1 point")
    ax.set_xlabel("training multiply-adds / exact training")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "MLP trained with column-row sampled products")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sampled_outputs(rows, directory) -> tuple:
    """Write ``sampled_summary.csv`` and ``sampled.png`` beside the per-run CSV; return their paths."""
    return write_summary_and_plot(rows, directory, "sampled", sampled_summary, plot_sampled, f"MLP on {rows[0]['dataset']}: column-row sampled training")
