"""The ``structmat compress`` and ``structmat bench-compress`` sub-commands.

``structmat compress MODEL --budget B --calibration SPEC -o DIR`` compresses a model, prints the report and writes
``DIR/compress.{txt,csv,json,png}`` and ``DIR/model.safetensors`` (plus ``DIR/distill.json`` with ``--distill``).
MODEL is ``efficientnet_lite0``, ``minilm`` (the ``minilm`` extra), or a state dict ``model.pt`` with
``--module package.module:Class`` (built without arguments, weights loaded with ``weights_only=True``).
"""

from __future__ import annotations

import logging

from structmat.cli._common import (UserError, add_executor_args, executor_args, output_dir, parse_budget,
                                   parse_option)

__all__ = ["COMPRESS_COMMANDS"]

logger = logging.getLogger(__name__)

_CALIBRATION_HELP = ("image models: a dataset spec (mnist5k, digits, idx:IMAGES, folder:ROOT, FILE.npz); minilm: "
                     "'text' (the machine's English sentences) or a text file with one sentence per line; a "
                     "module: an .npy or .npz file of inputs, one per row along the first axis")


def _add_compress(sub):
    p = sub.add_parser("compress", help="compress a whole model under one budget across layers and families",
                       description="Calibrate, fit error curves (cached), allocate the budget across layers and "
                                   "families, optionally distil, and save the structured layers (safetensors).")
    p.add_argument("model", help="efficientnet_lite0, minilm, or a state dict model.pt with --module")
    p.add_argument("--module", help="package.module:Class of a model.pt state dict (built with no arguments)")
    p.add_argument("--budget", "-b", type=parse_budget, required=True,
                   help="share of the selected layers' dense weights (float in (0, 1]) or a count (int)")
    p.add_argument("--calibration", "-c", required=True, help=_CALIBRATION_HELP)
    p.add_argument("--count", type=int, default=512, help="calibration items (images, sentences, rows; default 512)")
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch size (default 32)")
    p.add_argument("--image-size", type=int, default=96, help="efficientnet_lite0 input size (default 96)")
    p.add_argument("--where", "-w", action="append",
                   help="glob of layer names (repeatable); default: every nn.Linear and 1x1 convolution "
                        "(minilm: encoder.*)")
    p.add_argument("--family", "-f", action="append",
                   help="candidate family (repeatable); default every registered family and keeping a layer dense")
    p.add_argument("--option", action="append", type=parse_option, default=[],
                   help="family option as family.key=value, e.g. monarch.rank=2 (repeatable)")
    p.add_argument("--allocation", choices=("global", "uniform"), default="global")
    p.add_argument("--measure", choices=("params", "bytes"), default="params")
    p.add_argument("--max-slowdown", default="1.0",
                   help="never pick a layer slower than this times dense at batch 32 ('none': ignore speed)")
    p.add_argument("--fit-time-limit", type=float, default=120.0, help="seconds per fit (default 120)")
    p.add_argument("--no-screen", action="store_true", help="fit every family on the whole grid (slower)")
    p.add_argument("--cache-dir", help="where error curves are cached (default ~/.cache/structmat/curves)")
    p.add_argument("--sequential", action="store_true",
                   help="refit each chosen layer on the inputs of the model compressed so far, in call order")
    add_executor_args(p, what="curve fits")
    p.set_defaults(jobs=1)
    p.add_argument("--distill", type=float, metavar="SECONDS", help="distil the compressed model for this long")
    p.add_argument("--distill-cpu", type=float, metavar="CPU_SECONDS",
                   help="distil the compressed model for this much CPU time of this process")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="distillation learning rate (default 1e-4)")
    p.add_argument("--validation-count", type=int, default=64,
                   help="items after the calibration items that choose the distillation's best state, never fitted "
                        "or trained on (default 64; 0: the first calibration batch)")
    p.add_argument("--output-dir", "-o", help="directory for the report and the model (default "
                                              "structmat-output/compress)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or log lines")


def _family_options(pairs) -> dict:
    options = {}
    for key, value in pairs:
        family, sep, name = key.partition(".")
        if not sep or not name:
            raise UserError(f"--option must be family.key=value (e.g. monarch.rank=2); got {key}={value}")
        options.setdefault(family, {})[name] = value
    return options


def _load_model(args):
    """``(model, fresh_builder, calibration_items, validation_items, distill_kwargs, default_where, row_mask)``.

    The validation items are the next ``--validation-count`` items after the calibration ones (when distilling and
    the source has them): the fits never saw them, so they judge the distillation's states without favouring the
    fitted start."""
    import torch

    from structmat.compress import attention_mask_rows

    if args.validation_count < 0:
        raise UserError(f"--validation-count must be >= 0; got {args.validation_count}")
    extra = args.validation_count if (args.distill or args.distill_cpu) else 0
    total = args.count + extra

    def batches(rows):
        return [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]

    if args.model == "minilm":
        from structmat.compress.minilm import MINILM_ENCODER_LINEARS, load_minilm, tokenize
        from structmat.features.text import english_sentences

        model, tokenizer = load_minilm()
        if args.calibration == "text":
            sentences = english_sentences()[:total]
        else:
            with open(args.calibration, encoding="utf-8") as f:
                sentences = [line.strip() for line in f if line.strip()][:total]
        items = tokenize(tokenizer, sentences[:args.count], batch_size=args.batch_size)
        validation = tokenize(tokenizer, sentences[args.count:], batch_size=args.batch_size)
        return (model, lambda: load_minilm()[0], items, validation,
                {"target": lambda out: out.last_hidden_state, "row_mask": attention_mask_rows},
                MINILM_ENCODER_LINEARS, attention_mask_rows)
    if args.model == "efficientnet_lite0":
        from structmat.features import efficientnet_lite0, limit_dataset, load_dataset
        from structmat.features.datasets import held_out_subset

        backbone = efficientnet_lite0(args.image_size)
        full = load_dataset(args.calibration)

        def images(dataset):
            if dataset is None:
                return []
            return [backbone.transform(torch.stack([torch.as_tensor(dataset[i][0]) for i in chunk]))
                    .contiguous(memory_format=torch.channels_last) for chunk in batches(range(len(dataset)))]

        items = images(limit_dataset(full, args.count))
        validation = images(held_out_subset(full, args.count, extra))
        return (backbone.model, lambda: efficientnet_lite0(args.image_size).model.eval(), items, validation,
                {"loss": "kl"}, None, None)
    if not args.module:
        raise UserError(f"model {args.model!r} is not efficientnet_lite0 or minilm; a state dict needs "
                        "--module package.module:Class")
    import importlib

    import numpy as np

    module_name, _, class_name = args.module.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UserError(f"--module {args.module!r} does not name an importable class ({exc})") from exc

    def build():
        model = cls()
        model.load_state_dict(torch.load(args.model, map_location="cpu", weights_only=True))
        return model.eval()

    data = np.load(args.calibration, allow_pickle=False)
    if not isinstance(data, np.ndarray):
        data = data[data.files[0]]
    data = torch.from_numpy(np.asarray(data[:total], dtype=np.float32))
    return build(), build, batches(data[:args.count]), batches(data[args.count:]), {}, None, None


def _run_compress(args):
    from structmat.compress import compress_model, distill_model, save_compressed

    slowdown = None if str(args.max_slowdown).lower() == "none" else float(args.max_slowdown)
    model, build, items, validation, distill_kwargs, default_where, row_mask = _load_model(args)
    where = args.where if args.where and len(args.where) > 1 else (args.where[0] if args.where else default_where)
    settings = {"measure": args.measure, "max_slowdown": slowdown, "fit_time_limit": args.fit_time_limit,
                "family_options": _family_options(args.option), "progress": not args.quiet, "row_mask": row_mask}
    if args.cache_dir:
        settings["cache_dir"] = args.cache_dir
    if args.no_screen:
        settings.update(screen_share=None, screen_keep=None)
    settings.update(sequential=args.sequential, **executor_args(args))
    small, report = compress_model(model, args.budget, items, families=args.family, where=where,
                                   allocation=args.allocation, **settings)
    out = output_dir(args, "compress")
    written = report.write(out, "compress")
    if args.distill or args.distill_cpu:
        if not validation and args.validation_count:
            logger.warning("no items after the %d calibration items to validate the distillation on; it is judged "
                           "on the first calibration batch, which favours the fitted start", args.count)
        result = distill_model(small, model, items, validation=validation or None, seconds=args.distill,
                               cpu_seconds=args.distill_cpu,
                               learning_rate=args.learning_rate, metrics_path=out / "distill.json",
                               progress=not args.quiet, **distill_kwargs)
        written.append(out / "distill.json")
        print(f"distillation: {result.steps} steps in {result.seconds:.0f} s, validation loss "
              f"{result.start_validation:.4f} -> {result.best_validation:.4f} (best at step {result.best_step})")
    written.append(save_compressed(small, out / "model.safetensors"))
    print(report.to_text())
    print("wrote " + ", ".join(str(p) for p in written))


def _add_bench_compress(sub):
    p = sub.add_parser("bench-compress", help="whole-model compression of MiniLM or EfficientNet-Lite0, measured",
                       description="Global against uniform allocation, before and after distillation, the time of "
                                   "a second budget, and the save/load round trip; writes <model>.csv/json and "
                                   "the global run's report.")
    p.add_argument("model", choices=("minilm", "efficientnet_lite0"))
    p.add_argument("--budget", "-b", type=float, default=0.5)
    p.add_argument("--family", "-f", action="append", help="candidate family (repeatable; default lowrank, sparse, "
                                                           "dense)")
    p.add_argument("--distill", type=float, default=600.0, help="distillation seconds (default 600)")
    p.add_argument("--max-slowdown", default="1.0", help="as for compress ('none' ignores speed)")
    p.add_argument("--cache-dir", help="curve cache (default ~/.cache/structmat/curves)")
    p.add_argument("--output-dir", "-o", help="default structmat-output/bench-compress")
    p.add_argument("--quiet", "-q", action="store_true")


def _run_bench_compress(args):
    import torch

    from structmat.benchmarks.compress_models import run_efficientnet_benchmark, run_minilm_benchmark
    from structmat.benchmarks.results import format_table

    torch.set_num_threads(1)
    slowdown = None if str(args.max_slowdown).lower() == "none" else float(args.max_slowdown)
    families = args.family or ["lowrank", "sparse", "dense"]
    out = output_dir(args, "bench-compress")
    run = run_minilm_benchmark if args.model == "minilm" else run_efficientnet_benchmark
    rows = run(out, budget=args.budget, families=families, distill_seconds=args.distill, cache_dir=args.cache_dir,
               settings={"progress": not args.quiet, "max_slowdown": slowdown})
    print(format_table(rows, ["variant", "nparams", "share", "agreement", "cpu_seconds", "distill_steps"]))
    print(f"wrote {out}")


COMPRESS_COMMANDS = {
    "compress": (_add_compress, _run_compress),
    "bench-compress": (_add_bench_compress, _run_bench_compress),
}
