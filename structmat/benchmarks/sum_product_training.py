"""Reproduction: StrassenNets sum-product MLPs at several multiplication budgets (Tschannen et al., ICML 2018), on
a real data set (scikit-learn's digits by default).

The paper's claims (Sec. 4 and the authors' notebook): accuracy rises with the budget ``r``; switching the factors
to ternary costs accuracy, which training in the ternary stage and then the frozen-ternary stage (``ã`` and batch
norm only) mostly recovers; distillation from a full-precision teacher helps most at small ``r``. The network is
64 → SumProduct(r) → 128 → SumProduct(r) → 128 → dense 10 (ReLU; the authors keep the last layer dense too), trained
from scratch with Adam through the stages of :func:`structmat.training.train_staged`; the teacher and the dense
baseline are the same MLP with ``nn.Linear`` layers. Accuracy is measured after the full-precision stage, right
after switching to ternary (no training), after the ternary stage and after the frozen stage.
``multiplications`` and ``additions`` are per example for the whole network: the sum-product layers' ``r`` each
and their ternary non-zeros, plus the dense head's ``128·10`` multiply-adds.
"""

from __future__ import annotations

import copy

import torch

from structmat.benchmarks._training import load_split, mlp, run_cells, summarize, write_summary_and_plot
from structmat.training import Stage, accuracy, convert_to_sum_product, train_epochs, train_staged
from structmat.training.sum_product import SumProductLinear

__all__ = ["run_sum_product_benchmark", "plot_sum_product", "sum_product_summary", "write_sum_product_outputs",
           "SUM_PRODUCT_COLUMNS"]

SUM_PRODUCT_COLUMNS = ["dataset", "variant", "num_multiplications", "distillation", "seed", "epochs",
                       "full_precision_accuracy", "ternary_switch_accuracy", "ternary_accuracy", "final_accuracy",
                       "multiplications", "additions", "nparams", "seconds"]

#: Epochs and Adam learning rates of the three stages.
DEFAULT_STAGES = ((60, 3e-3), (20, 1e-3), (10, 3e-4))


def _dense_mlp(split, hidden, seed, epochs, lr, batch_size):
    model = mlp([split.num_features, *hidden, split.num_classes], seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_epochs(model, split.X_train, split.y_train, epochs=epochs, optimizer=optimizer, batch_size=batch_size,
                 seed=seed)
    return model


def _costs(model) -> dict:
    multiplications = additions = nparams = 0
    for module in model.modules():
        if isinstance(module, SumProductLinear):
            multiplications += module.multiplications
            additions += module.additions
            nparams += module.nparams
        elif type(module) is torch.nn.Linear:
            multiplications += module.weight.numel()
            additions += module.weight.numel()
            nparams += module.weight.numel()
    return {"multiplications": multiplications, "additions": additions, "nparams": nparams}


def _train_one(split, cell, hidden, stages, batch_size, teachers) -> dict:
    seed = int(cell["seed"])
    if cell["variant"] == "dense":
        model = teachers(seed)
        test = accuracy(model, split.X_test, split.y_test)
        return {"full_precision_accuracy": test, "final_accuracy": test, **_costs(model)}
    base = mlp([split.num_features, *hidden, split.num_classes], seed=seed)
    head = str(len(base) - 1)  # the last layer stays dense, as in the paper
    model = convert_to_sum_product(base, int(cell["num_multiplications"]), where=lambda name, m: name != head)
    (fp_epochs, fp_lr), (t_epochs, t_lr), (f_epochs, f_lr) = stages
    schedule = [Stage("full_precision", fp_epochs, fp_lr), Stage("ternary", 0, t_lr), Stage("ternary", t_epochs, t_lr),
                Stage("frozen_ternary", f_epochs, f_lr)]
    teacher = teachers(seed) if cell["distillation"] in (True, "True") else None
    rows = train_staged(model, split.X_train, split.y_train, schedule, batch_size=batch_size, teacher=teacher,
                        evaluate=lambda m: {"accuracy": accuracy(m, split.X_test, split.y_test)}, seed=seed)
    return {"full_precision_accuracy": rows[0]["accuracy"], "ternary_switch_accuracy": rows[1]["accuracy"],
            "ternary_accuracy": rows[2]["accuracy"], "final_accuracy": rows[3]["accuracy"], **_costs(model)}


def run_sum_product_benchmark(*, dataset: str = "digits", budgets=(2, 4, 8, 16, 32, 64, 128),
                              distill_budgets=(8, 32), seeds=(0, 1, 2), stages=DEFAULT_STAGES, hidden=(128, 128),
                              batch_size: int = 50, csv_path=None, resume: bool = True, progress: bool = True) -> list[dict]:
    """Train the dense MLP, and the sum-product MLP at every budget (with distillation at ``distill_budgets``),
    with every seed, through the staged schedule; one CSV row per run."""
    split = load_split(dataset)
    stages = tuple((int(e), float(lr)) for e, lr in stages)
    epochs = sum(e for e, _ in stages)
    cache: dict[int, torch.nn.Module] = {}

    def teachers(seed):  # the dense MLP, trained once per seed for as many epochs as the whole schedule
        if seed not in cache:
            cache[seed] = _dense_mlp(split, hidden, seed, epochs, stages[0][1], batch_size)
        return copy.deepcopy(cache[seed])

    cells = [dict(dataset=dataset, variant="dense", num_multiplications="", distillation=False, seed=s,
                  epochs=epochs) for s in seeds]
    for r in budgets:
        for distill in (False, True) if r in distill_budgets else (False,):
            cells += [dict(dataset=dataset, variant=f"sum-product-{r}" + ("-kd" if distill else ""),
                           num_multiplications=r, distillation=distill, seed=s, epochs=epochs) for s in seeds]
    return run_cells(cells, lambda cell: _train_one(split, cell, hidden, stages, batch_size, teachers),
                     key=("dataset", "variant", "seed", "epochs"), columns=SUM_PRODUCT_COLUMNS, csv_path=csv_path,
                     resume=resume, progress=progress, desc="sum-product training")


def sum_product_summary(rows) -> list[dict]:
    return summarize(rows, ["variant", "num_multiplications", "distillation"],
                     ["full_precision_accuracy", "ternary_switch_accuracy", "ternary_accuracy", "final_accuracy",
                      "multiplications", "additions"])


def plot_sum_product(rows, path, *, title: str | None = None) -> None:
    """Left: accuracy against ``r`` after the full-precision and the last stage (with and without distillation).
    Right: the drop on switching to ternary and its recovery through the stages. Means ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = sum_product_summary(rows)
    dense = next((r for r in summary if r["variant"] == "dense"), None)

    def series(distill):
        chosen = [r for r in summary if r["variant"] != "dense" and str(r["distillation"]) == str(distill)]
        return sorted(chosen, key=lambda r: float(r["num_multiplications"]))

    def line(ax, chosen, field, **style):
        if chosen:
            ax.errorbar([float(r["num_multiplications"]) for r in chosen], [100 * r[f"{field}_mean"] for r in chosen],
                        yerr=[100 * r[f"{field}_std"] for r in chosen], marker="o", capsize=3, **style)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    line(left, series(False), "full_precision_accuracy", color="C0", label="full precision (stage 1)")
    line(left, series(False), "final_accuracy", color="C1", label="ternary, final (stage 3)")
    line(left, series(True), "final_accuracy", color="C2", ls="--", label="ternary, final, with distillation")
    for field, label, color in (("ternary_switch_accuracy", "just switched to ternary", "C3"),
                                ("ternary_accuracy", "after the ternary stage (2)", "C4"),
                                ("final_accuracy", "after the frozen stage (3)", "C1")):
        line(right, series(False), field, color=color, label=label)
    for ax in (left, right):
        if dense is not None:
            ax.axhline(100 * dense["final_accuracy_mean"], color="k", ls=":",
                       label=f"dense MLP ({dense['multiplications_mean']:.0f} multiplications)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("r (multiplications per sum-product layer)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("test accuracy (%)")
    left.set_title("accuracy against the multiplication budget")
    right.set_title("ternary switch and recovery (no distillation)")
    fig.suptitle(title or "StrassenNets sum-product MLP")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_sum_product_outputs(rows, directory) -> tuple:
    """Write ``sum_product_summary.csv`` and ``sum_product.png``; return their paths."""
    return write_summary_and_plot(rows, directory, "sum_product", sum_product_summary, plot_sum_product, f"MLP on {rows[0]['dataset']}: StrassenNets sum-product layers")
