"""Benchmarks of the sparse families' fits: output-aware pruning on real layer inputs, and fit time against size.

Three measurements, each a CSV (the first two resumable, with a PNG):

- :func:`run_conv_inputs_benchmark`: EfficientNet-Lite0's 1×1 convolutions with real inputs:
  the network runs on the demo's MNIST digits at 96 px, forward pre-hooks collect every 1×1 convolution's input
  pixels (each pixel's channel vector is one row), the first ``fit_images`` images give the
  :class:`~structmat.InputStatistics` and the others the held-out rows. Per layer, family and share: the plain fit
  (magnitude pruning for ``sparse``) and the fit to the outputs, with held-out output error and one-thread fit
  seconds.
- :func:`run_classifier_fit_times`: one-thread CPU seconds of the plain fits and the fits to the outputs of a
  feature cache's head (the demo's EfficientNet-Lite0 classifier by default), beside the time to form ``C``: the
  data-aware fit-time target is three times the plain fit plus that.
- :func:`run_fit_time_scaling`: one-thread CPU seconds of the plain fits of Gaussian ``n × n`` matrices for ``n``
  from 512 to 4096 and the exponent ``log(t_4096 / t_512) / log 8``.

Run as ``python -m structmat.benchmarks.sparse_fit_quality conv|classifier|scaling -o DIR`` (see ``--help``).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from structmat.benchmarks.results import format_table, read_rows, write_rows
from structmat.benchmarks.timing import single_thread

__all__ = ["conv_layer_inputs", "run_conv_inputs_benchmark", "run_classifier_fit_times", "run_fit_time_scaling",
           "scaling_exponent", "plot_classifier_fit_times", "plot_conv", "plot_scaling", "CONV_COLUMNS",
           "CLASSIFIER_COLUMNS", "SCALING_COLUMNS"]

logger = logging.getLogger(__name__)

CONV_COLUMNS = ["layer", "m", "n", "family", "share", "method", "nparams", "relative_error", "output_error",
                "fit_seconds", "fit_rows", "test_rows"]
CLASSIFIER_COLUMNS = ["family", "share", "method", "output_error", "agreement", "cpu_seconds", "stats_seconds"]
SCALING_COLUMNS = ["family", "n", "share", "nparams", "relative_error", "cpu_seconds", "cpu_seconds_min", "repeats"]


def conv_layer_inputs(*, image_count: int = 256, fit_images: int = 192, image_size: int = 96, seed: int = 0,
                      test_rows_per_layer: int = 4000, progress: bool = False):
    """Inputs of EfficientNet-Lite0's 1×1 convolutions on the demo's digits (the classifier's are the feature
    cache's, see ``structmat bench-data-aware``).

    Returns ``{layer name: (W, InputStatistics of the fitting images' rows, held-out rows)}`` with ``W`` of shape
    ``(out_channels, in_channels)``; the images are a seeded sample of the 5,000 MNIST digits, the first
    ``fit_images`` (of a seeded permutation, so all labels appear in both parts) for the statistics, the rest held
    out (at most ``test_rows_per_layer`` seeded rows kept).
    """
    import torch

    from structmat.features.backbones import efficientnet_lite0
    from structmat.features.datasets import mnist5k_dataset
    from structmat.statistics import InputStatistics

    backbone = efficientnet_lite0(image_size)
    digits = mnist5k_dataset()
    dataset = digits.subset(np.random.default_rng(seed).permutation(len(digits))[:image_count])  # labels mixed
    layers = {name: module for name, module in backbone.model.named_modules()
              if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1}
    stats = {name: None for name in layers}
    held_out: dict = {name: [] for name in layers}
    phase = {"fit": True}

    def hook(name):
        def collect(module, inputs):
            x = inputs[0].detach()
            rows = (x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) if x.ndim == 4 else x).double().numpy()
            if phase["fit"]:
                if stats[name] is None:
                    stats[name] = InputStatistics(rows.shape[1])
                stats[name].update(rows)
            else:
                held_out[name].append(rows)
        return collect

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in layers.items()]
    try:
        batch = 32
        starts = sorted(set(range(0, fit_images, batch)) | set(range(fit_images, len(dataset), batch)))
        for start in tqdm(starts, desc="layer inputs", disable=not progress):
            stop = min(start + batch, len(dataset), fit_images if start < fit_images else len(dataset))
            images = backbone.transform(torch.stack([dataset[i][0] for i in range(start, stop)]))
            phase["fit"] = start < fit_images
            backbone.forward(images)
    finally:
        for handle in handles:
            handle.remove()
    rng = np.random.default_rng(seed)
    out = {}
    for name, module in layers.items():
        W = module.weight.detach().double().numpy().reshape(module.weight.shape[0], -1)
        rows = np.concatenate(held_out[name])
        if rows.shape[0] > test_rows_per_layer:
            rows = rows[np.sort(rng.choice(rows.shape[0], test_rows_per_layer, replace=False))]
        out[name] = (W, stats[name], rows)
    return out


def run_conv_inputs_benchmark(layer_inputs: dict, families: Sequence[str] = ("sparse", "sparse_product"),
                              shares: Sequence[float] = (0.1, 0.25, 0.5), *, csv_path=None, resume: bool = True,
                              progress: bool = False) -> list[dict]:
    """Plain and output-aware fits of every layer in ``layer_inputs`` (from :func:`conv_layer_inputs`)."""
    from structmat.approximators import approximate
    from structmat.metrics import output_error, relative_error

    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["layer"], r["family"], r["share"], r["method"]) for r in rows}
    cells = [(layer, family, share, method) for layer in layer_inputs for family in families for share in shares
             for method in ("plain", "data-aware") if (layer, family, repr(share), method) not in done]
    with single_thread():
        for layer, family, share, method in tqdm(cells, desc="conv inputs", disable=not progress):
            W, stats, test = layer_inputs[layer]
            start = time.process_time()
            M = approximate(W, family, share, **({"inputs": stats} if method == "data-aware" else {}))
            seconds = time.process_time() - start
            rows.append({"layer": layer, "m": W.shape[0], "n": W.shape[1], "family": family, "share": repr(share),
                         "method": method, "nparams": M.nparams, "relative_error": relative_error(W, M),
                         "output_error": output_error(W, M, test), "fit_seconds": seconds,
                         "fit_rows": stats.count, "test_rows": test.shape[0]})
            if csv_path is not None:
                write_rows(csv_path, rows, CONV_COLUMNS)
    return rows


def run_fit_time_scaling(families: Sequence[str] = ("sparse", "sparse_product"),
                         sizes: Sequence[int] = (512, 1024, 2048, 4096), *, share: float = 0.25, repeats: int = 3,
                         csv_path=None, resume: bool = True, progress: bool = False) -> list[dict]:
    """One-thread CPU seconds (``time.process_time``, median of ``repeats``) of ``approximate`` on the seeded
    Gaussian ``n × n`` matrix for every family and size."""
    from structmat.approximators import approximate
    from structmat.metrics import relative_error
    from structmat.weights import load_weight

    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["family"], r["n"]) for r in rows}
    cells = [(f, n) for f in families for n in sizes if (f, str(n)) not in done]
    with single_thread():
        for family, n in tqdm(cells, desc="fit time", disable=not progress):
            W = load_weight(f"gaussian:{n}x{n}")
            seconds, M = [], None
            for _ in range(repeats):
                start = time.process_time()
                fitted = approximate(W, family, share)
                seconds.append(time.process_time() - start)
                M = M or fitted
            rows.append({"family": family, "n": n, "share": share, "nparams": M.nparams,
                         "relative_error": relative_error(W, M), "cpu_seconds": statistics.median(seconds),
                         "cpu_seconds_min": min(seconds), "repeats": repeats})
            logger.info("%s", rows[-1])
            if csv_path is not None:
                write_rows(csv_path, rows, SCALING_COLUMNS)
    return rows


def run_classifier_fit_times(cache, families: Sequence[str] = ("sparse", "sparse_product"),
                             shares: Sequence[float] = (0.1, 0.25, 0.5), *, refits: Sequence[str] = (),
                             repeats: int = 3, test_share: float = 0.2, seed: int = 0, csv_path=None,
                             resume: bool = False) -> list[dict]:
    """One-thread CPU seconds (median of ``repeats``) of the plain fit and of the fit to the outputs of a feature
    cache's head, with the time to form ``C`` from the training rows, and the held-out output error and agreement.
    ``refits`` adds rows for ``fit_sparse``'s ``refit`` settings (method ``"refit=<name>"``). With ``resume``, the
    cells already in ``csv_path`` are kept and not refitted."""
    from structmat.approximators import approximate
    from structmat.approximators.sparse import fit_sparse
    from structmat.finetune import split_indices
    from structmat.metrics import output_error
    from structmat.statistics import InputStatistics

    W, bias = cache.head_weights()
    W = np.asarray(W, dtype=np.float64)
    bias = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    train, test = split_indices(cache.count, test_share, seed)
    test_rows = np.asarray(cache.features.take(np.sort(test)), dtype=np.float64)
    dense_top1 = (test_rows @ W.T + bias).argmax(axis=1)
    rows = read_rows(csv_path) if (csv_path is not None and resume) else []
    done = {(r["family"], str(r["share"]), r["method"]) for r in rows}
    with single_thread():
        stats_seconds = []
        for _ in range(repeats):
            start = time.process_time()
            stats = InputStatistics.from_cache(cache, train)
            stats_seconds.append(time.process_time() - start)
        fits = [(f, s, m, None) for f in families for s in shares for m in ("plain", "data-aware")]
        fits += [("sparse", s, f"refit={r}", r) for s in shares for r in refits]
        fits = [f for f in fits if (f[0], str(f[1]), f[2]) not in done]
        for family, share, method, refit in fits:
            seconds, M = [], None
            for _ in range(repeats):
                start = time.process_time()
                if refit is not None:
                    fitted = fit_sparse(W, share, inputs=stats, refit=refit)
                else:
                    fitted = approximate(W, family, share, **({"inputs": stats} if method == "data-aware" else {}))
                seconds.append(time.process_time() - start)
                M = M or fitted
            agreement = float(np.mean((test_rows @ M.to_dense().T + bias).argmax(axis=1) == dense_top1))
            rows.append({"family": family, "share": share, "method": method, "output_error":
                         output_error(W, M, test_rows), "agreement": agreement,
                         "cpu_seconds": statistics.median(seconds), "stats_seconds": statistics.median(stats_seconds)})
            logger.info("%s", rows[-1])
            if csv_path is not None:
                write_rows(csv_path, rows, CLASSIFIER_COLUMNS)
    return rows


def scaling_exponent(rows: list[dict], family: str) -> float:
    """``log(t_max / t_min) / log(n_max / n_min)`` of a family's CPU seconds between its smallest and largest n."""
    points = sorted((int(r["n"]), float(r["cpu_seconds"])) for r in rows if r["family"] == family)
    (n0, t0), (n1, t1) = points[0], points[-1]
    return math.log(t1 / t0) / math.log(n1 / n0)


def plot_scaling(rows: list[dict], path) -> None:
    """CPU seconds against n (log-log), one line per family, with the n^2.3 slope for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for family in dict.fromkeys(r["family"] for r in rows):
        points = sorted((int(r["n"]), float(r["cpu_seconds"])) for r in rows if r["family"] == family)
        ns, ts = zip(*points)
        ax.loglog(ns, ts, marker="o", label=f"{family} (exponent {scaling_exponent(rows, family):.2f})")
        ax.loglog(ns, [ts[0] * (x / ns[0]) ** 2.3 for x in ns], color="grey", linestyle=":", linewidth=1)
    ax.axhline(30, color="red", linestyle="--", linewidth=1, label="30 s")
    ax.set(xlabel="n (Gaussian n × n, share 0.25)", ylabel="fit CPU seconds (one thread)",
           title="fit time against size (dotted: slope 2.3)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_classifier_fit_times(rows: list[dict], path) -> None:
    """Held-out output error against fit CPU seconds (log x), one marker per (family, method), labelled by share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for family, method in dict.fromkeys((r["family"], r["method"]) for r in rows):
        mine = sorted((float(r["cpu_seconds"]), float(r["output_error"]), str(r["share"])) for r in rows
                      if r["family"] == family and r["method"] == method)
        ax.plot([p[0] for p in mine], [p[1] for p in mine], marker="o", linestyle="", label=f"{family}, {method}")
        for seconds, error, share in mine:
            ax.annotate(share, (seconds, error), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="fit CPU seconds (one thread, median)",
           ylabel="held-out output error", title="fits of the cached head: error against fit time (labels: share)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_conv(rows: list[dict], path) -> None:
    """Held-out output error of every layer, plain against fitted to its inputs (log-log), one marker per share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4.8), squeeze=False)
    markers = {"0.1": "o", "0.25": "s", "0.5": "^"}
    for ax, family in zip(axes[0], families):
        index = {(r["layer"], r["share"], r["method"]): float(r["output_error"]) for r in rows
                 if r["family"] == family}
        for share in dict.fromkeys(r["share"] for r in rows):
            pairs = [(index[(layer, s, "plain")], index[(layer, s, "data-aware")]) for layer, s, method in index
                     if s == share and method == "plain" and (layer, s, "data-aware") in index]
            if pairs:
                x, y = zip(*pairs)
                ax.scatter(x, y, marker=markers.get(share, "o"), s=18, label=f"share {share}")
        ax.plot([1e-3, 2], [1e-3, 2], color="grey", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="plain fit: held-out output error",
               ylabel="fitted to the inputs: held-out output error", title=family)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("EfficientNet-Lite0 1×1 convolutions, inputs from MNIST digits at 96 px")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m structmat.benchmarks.sparse_fit_quality",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["conv", "classifier", "scaling"])
    parser.add_argument("--output-dir", "-o", required=True)
    parser.add_argument("--family", "-f", nargs="+", default=["sparse", "sparse_product"])
    parser.add_argument("--budget", "-b", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=256, help="conv: digits run through the network")
    parser.add_argument("--fit-images", type=int, default=192, help="conv: of which give the statistics")
    parser.add_argument("--cache", help="classifier: feature cache directory (default: the demo's, extracted if missing)")
    parser.add_argument("--refit", nargs="*", default=["none", "cg", "exact"],
                        help="classifier: also time fit_sparse with these refit settings")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "classifier":
        from structmat.features import FeatureCache

        if args.cache is None:
            from structmat.cli.features import demo_cache

            cache = demo_cache()
        else:
            cache = FeatureCache(args.cache)
        rows = run_classifier_fit_times(cache, args.family, args.budget, refits=args.refit, repeats=args.repeats,
                                        csv_path=out / "classifier_fit_times.csv")
        if rows:
            print(format_table(rows, list(rows[0])))
    elif args.what == "conv":
        inputs = conv_layer_inputs(image_count=args.images, fit_images=args.fit_images, progress=True)
        rows = run_conv_inputs_benchmark(inputs, args.family, args.budget, csv_path=out / "conv_inputs.csv",
                                         progress=True)
        plot_conv(rows, out / "conv_inputs.png")
    else:
        rows = run_fit_time_scaling(args.family, args.sizes, share=args.budget[0] if len(args.budget) == 1 else 0.25,
                                    repeats=args.repeats, csv_path=out / "fit_time.csv", progress=True)
        plot_scaling(rows, out / "fit_time.png")
        for family in dict.fromkeys(r["family"] for r in rows):
            print(f"{family}: exponent {scaling_exponent(rows, family):.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
