"""``structmat export`` and ``structmat bench-export``: structured layers and models out of Python."""

from __future__ import annotations

from pathlib import Path

from structmat.cli._common import DEFAULT_OUTPUT, UserError, add_matrix_args, family_names, load_matrices
from structmat.cli._common import output_dir, parse_budget

__all__ = ["EXPORT_COMMANDS"]

MODELS = ("efficientnet_lite0",)


# ------------------------------------------------------------------------------------------------ export
def _add_export(sub):
    p = sub.add_parser("export", help="export a structured layer or a compressed model to ONNX or torch.export",
                       description="Export, keeping the structure (the file stores about nparams numbers, never the "
                                   "dense weight), with a dynamic batch size. SOURCE is a saved structured matrix "
                                   "(.npz from `structmat approximate`: its layer, without bias) or a model name "
                                   f"({', '.join(MODELS)}), compressed first with --family and --budget.")
    p.add_argument("source", metavar="MODEL_OR_LAYER", help="a structured matrix .npz, or a model name")
    p.add_argument("--format", choices=("onnx", "pt2"), help="onnx (ONNX Runtime & co.) or pt2 (torch.export "
                                                             "archive); default: from the output's suffix")
    p.add_argument("--output", "-o", required=True, help="the file to write (.onnx or .pt2)")
    p.add_argument("--family", "-f", help="for a model: the family replacing its nn.Linear layers")
    p.add_argument("--budget", "-b", type=parse_budget, help="for a model: the per-layer budget")
    p.add_argument("--where", help="for a model: glob of the nn.Linear names to replace (default: all)")
    p.add_argument("--image-size", type=int, default=224, help="for efficientnet_lite0: input size (default 224)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18, default 18)")
    p.add_argument("--non-strict", action="store_true", help="pt2: torch.export's non-strict mode")


def _exportable(args):
    """``(module, example input, description)`` for the source."""
    import torch

    source = Path(args.source)
    if source.suffix == ".npz":
        if not source.exists():
            raise UserError(f"no such file: {source}")
        import structmat
        from structmat.layers import layer_from_matrix

        M = structmat.load(source)
        layer = layer_from_matrix(M)
        return layer, torch.zeros(2, M.shape[1]), f"{M!r}"
    if args.source not in MODELS:
        raise UserError(f"MODEL_OR_LAYER must be a structured matrix .npz or one of {list(MODELS)}; "
                        f"got {args.source!r}")
    from structmat.features.backbones import efficientnet_lite0

    model = efficientnet_lite0(args.image_size).model.to(memory_format=torch.contiguous_format)
    description = "efficientnet_lite0 (dense)"
    if (args.family is None) != (args.budget is None):
        raise UserError("--family and --budget go together (compress the model), or neither (export it dense)")
    if args.family is not None:
        from structmat.layers import format_report, replace_linear, replacement_report

        model = replace_linear(model, args.family, args.budget, where=args.where, inplace=True)
        description = f"efficientnet_lite0 with {args.family} layers at {args.budget}\n" + \
            format_report(replacement_report(model))
    return model.eval(), torch.zeros(2, 3, args.image_size, args.image_size), description


def _run_export(args):
    from structmat.layers.export import EXPORT_FORMATS, export_onnx, export_program, onnx_initializer_count
    from structmat.layers.export import save_program

    output = Path(args.output)
    fmt = args.format or output.suffix.lstrip(".")
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"--format must be one of {list(EXPORT_FORMATS)} (or an output ending in .onnx or .pt2); "
                        f"got {fmt!r}")
    module, example, description = _exportable(args)
    print(description)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "onnx":
        export_onnx(module, example, output, opset=args.opset)
        stored = f", {onnx_initializer_count(output):_} numbers stored"
    else:
        save_program(export_program(module, example, strict=not args.non_strict), output)
        stored = ""
    weights = sum(p.numel() for p in module.parameters())
    print(f"wrote {output} ({fmt}, {output.stat().st_size:_} bytes{stored}; the module has {weights:_} parameters; "
          f"dynamic batch size)")


# ------------------------------------------------------------------------------------------------ bench-export
def _add_bench_export(sub):
    p = sub.add_parser("bench-export", help="ONNX Runtime time of exported structured layers vs the dense layer",
                       description="Fit each family, export its layer to ONNX and time ONNX Runtime (one thread, "
                                   "pinned) against the exported dense layer at each batch size; write "
                                   "onnx_speed.csv and onnx_speed.json (with the machine).")
    add_matrix_args(p)
    p.add_argument("--budget", "-b", type=parse_budget, default=0.25, help="budget (default 0.25)")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32], help="batch sizes (default 1 32)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per cell (default 50)")
    p.add_argument("--cpu", type=int, help="CPU to pin to (default: the highest-numbered allowed one)")
    p.add_argument("--keep-onnx", action="store_true", help=f"keep the ONNX files in the output directory "
                                                           f"(default: {DEFAULT_OUTPUT}/bench-export)")


def _run_bench_export(args):
    from structmat.benchmarks.machine import machine_summary
    from structmat.benchmarks.onnx_speed import run_onnx_speed
    from structmat.benchmarks.results import format_table

    out = output_dir(args, "bench-export")
    rows = run_onnx_speed(load_matrices(args.matrix), family_names(args), args.budget, batch_sizes=args.batch,
                          repeats=args.repeats, csv_path=out / "onnx_speed.csv", progress=not args.quiet,
                          cpu=args.cpu, workdir=(out / "onnx") if args.keep_onnx else None)
    print(machine_summary())
    print(format_table(rows, ["matrix", "family", "nparams", "stored_numbers", "batch", "ort_ms", "ratio_to_dense",
                              "faster_than_dense", "max_relative_error"]))
    print(f"wrote {out / 'onnx_speed.csv'} and {out / 'onnx_speed.json'}")


EXPORT_COMMANDS = {
    "export": (_add_export, _run_export),
    "bench-export": (_add_bench_export, _run_bench_export),
}
