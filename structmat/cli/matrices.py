"""``structmat approximate``, ``info`` and ``families``: one matrix at a time."""

from __future__ import annotations

import time

from structmat.cli._common import UserError, output_file, parse_budget, parse_option

__all__ = ["MATRIX_COMMANDS"]


# ------------------------------------------------------------------------------------------------ approximate
def _add_approximate(sub):
    p = sub.add_parser("approximate", help="fit one weight matrix and save the structured matrix",
                       description="Fit W by a structured matrix under a budget; save it (.npz) and a JSON report.")
    p.add_argument("weight", help="weight spec: W.npy, W.npz[:name], model.pt[:layer.weight], "
                                  "efficientnet_lite0[:name], gaussian:MxN, powerlaw:MxN")
    p.add_argument("--family", "-f", required=True, help="family name (see `structmat families`)")
    p.add_argument("--budget", "-b", required=True, type=parse_budget, help="int parameter count or float share in (0, 1]")
    p.add_argument("--output", "-o", required=True, help="where to save the structured matrix (.npz)")
    p.add_argument("--report", help="JSON report path (default: OUTPUT with .json)")
    p.add_argument("--inputs", metavar="X.npy|CACHE_DIR|STATS.npz",
                   help="fit to the layer's outputs on these inputs (rows of shape (N, in_features), a feature "
                        "cache, or saved input statistics) instead of to the weight itself")
    p.add_argument("--option", action="append", type=parse_option, default=[], metavar="KEY=VALUE",
                   help="a fit option of the family, e.g. --option method=randomized (repeatable)")


def _run_approximate(args):
    import structmat
    from structmat._json import dumps
    from structmat.matrices.io import atomic_write
    from structmat.weights import load_weight

    output = output_file(args.output, "output")  # checked before the fit, which may take minutes
    report_path = output_file(args.report if args.report else output.with_suffix(".json"), "report")
    if report_path.resolve() == output.resolve():
        raise UserError(f"the report would overwrite the output {output}; give --report another name")
    W = load_weight(args.weight)
    inputs = None
    if args.inputs:
        inputs = structmat.InputStatistics.from_path(args.inputs)
        if inputs.n_features != W.shape[1]:
            raise UserError(f"--inputs {args.inputs} has {inputs.n_features} features per row, but the weight "
                            f"{args.weight} has in_features={W.shape[1]}")
    start = time.perf_counter()
    M = structmat.approximate(W, args.family, args.budget, inputs=inputs, **dict(args.option))
    seconds = time.perf_counter() - start
    M.save(output)
    report = {
        "weight": args.weight, "shape": list(M.shape), "family": M.family, "budget": args.budget,
        "options": dict(args.option), "nparams": M.nparams, "nbytes": M.nbytes, "share": M.params_share,
        "relative_error": structmat.relative_error(W, M), "fit_seconds": seconds, "output": str(output),
        "repr": repr(M), "inputs": args.inputs,
    }
    if inputs is not None:
        report["input_rows"] = inputs.count
        report["output_error"] = structmat.output_error(W, M, inputs)
    encoded = (dumps(report, indent=2) + "\n").encode()
    atomic_write(report_path, lambda f: f.write(encoded))
    errors = f"relative error {report['relative_error']:.6f}"
    if inputs is not None:
        errors += f", output error {report['output_error']:.6f} on {inputs.count} input rows"
    print(f"{M!r}\n{errors}, fit {seconds:.2f} s -> {output}, {report_path}")


# ------------------------------------------------------------------------------------------------ info
def _add_info(sub):
    p = sub.add_parser("info", help="describe a saved structured matrix",
                       description="Print what a saved structured-matrix file holds.")
    p.add_argument("path")
    p.add_argument("--against", help="a weight spec to compute the relative error against")
    p.add_argument("--plot", metavar="PNG", help="also draw the matrix's structure (families that have a picture, "
                                                  "e.g. the hierarchical ones: leaves and their ranks)")


def _run_info(args):
    import structmat
    from structmat.matrices.io import read_meta

    meta = read_meta(args.path)
    M = structmat.load(args.path)
    print(repr(M))
    print(f"nbytes (float32 values + int32 indices): {M.nbytes:_}")
    for key, value in meta.items():
        if key not in ("format", "arrays"):
            print(f"  {key}: {value}")
    print("  arrays: " + ", ".join(f"{k}{tuple(v)}" for k, v in meta["arrays"].items()))
    if args.against:
        from structmat.weights import load_weight

        print(f"relative error against {args.against}: {structmat.relative_error(load_weight(args.against), M):.6f}")
    if args.plot:
        if not hasattr(M, "plot"):
            raise UserError(f"family {M.family!r} has no structure picture; --plot works for hodlr, hedlr, hmatrix")
        M.plot(args.plot)
        print(f"wrote {args.plot}")


# ------------------------------------------------------------------------------------------------ families
def _add_families(sub):
    p = sub.add_parser("families", help="list the families, their parameter counts and measured speed",
                       description="List registered families, their matrix class, layer and nparams formula, with "
                                   "their measured time ratios to dense at batch 1 on one core (C kernel over the "
                                   "dense C loop; torch forward without autograd over nn.Linear) on the "
                                   "EfficientNet-Lite0 classifier at a quarter of its parameters.")
    p.add_argument("--labels", help="a speed-labels JSON of your own (`structmat speed-labels -o`)")


def _run_families(args):
    from structmat.benchmarks.speed_labels import speed_labels
    from structmat.families import FAMILIES

    labels = speed_labels(args.labels)

    def ratio(value):
        return "–" if value is None else f"{value:.2f}x"

    width = max(len(f.layer) for f in FAMILIES.values())
    print(f"{'family':<16} {'C b=1':>8} {'torch b=1':>9}  {'matrix':<14} {'layer':<{width}} nparams")
    for f in FAMILIES.values():
        label = labels.get(f.name)
        c, t = (ratio(label.c_ratio), ratio(label.torch_ratio)) if label else ("–", "–")
        if f.name == "dense":
            c, t = "1.00x", "1.00x"
        print(f"{f.name:<16} {c:>8} {t:>9}  {f.matrix_class.__name__:<14} {f.layer:<{width}} {f.nparams_formula}")
    if labels:
        first = next(iter(labels.values()))
        print(f"\nspeed: time / dense at batch 1, one core, {first.matrix} at share {first.share}; measured "
              f"{first.date} on {first.cpu} ({first.simd}). Ratios move with the machine: re-measure with "
              f"`structmat bench-layers`, `structmat bench-c` and `structmat speed-labels`.")


MATRIX_COMMANDS = {
    "approximate": (_add_approximate, _run_approximate),
    "info": (_add_info, _run_info),
    "families": (_add_families, _run_families),
}
