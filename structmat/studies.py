"""Head studies on a feature cache: every family's structured head against the dense one, before and after
fine-tuning, on held-out rows.

Two studies share one loop (:func:`compare_heads`):

``objective="distill"``
    the backbone's own dense head (stored in the cache) is approximated by each family under the budget and
    fine-tuned by distillation from the cached logits; the measure is top-1 *agreement* with the dense head.
``objective="labels"``
    a *new* dense head with one output per label is trained with cross-entropy, then each family's head is
    fitted to it or started fresh (``init="fresh"``) and trained on the labels; the measure is *accuracy*, dense
    and structured side by side.

Heads start from a fit to the dense head's weight: by default (``init="data-aware"``) a fit to the head's outputs
on the training rows' features (their :class:`~structmat.InputStatistics`), ``init="plain"`` the Frobenius fit.
With ``compare_plain`` (the default for data-aware heads) the plain fit is also measured before fine-tuning, so a
study shows both starts side by side: output error ``‖(W − M) Xᵀ‖_F / ‖W Xᵀ‖_F`` and agreement on held-out rows.

Families come from the registry (:func:`structmat.families.structured_family_names`): a family that joins the
registry joins the study. A family whose fit or training fails is reported with the error, not raised. Fits run
on one thread (their seconds are one-core seconds, as in the sweeps); fine-tuning uses torch's thread setting.
Fine-tuning gets ``max_seconds`` per family; with ``time_budget`` each family's fit (run in a child process killed
after ``fit_timeout``) and fine-tuning get no more than an equal share of what is left, so the study's length stays
bounded as families are added; the plain fit measured beside a data-aware start comes second and gets at most a
third of that share, so the comparison cannot starve the fine-tuning. Each family is one task (:func:`head_task`) of :func:`structmat.parallel.run_grid`,
so ``jobs``/``executor`` run several families at once, each on one thread, on local processes or Dask workers.
"""

from __future__ import annotations

import dataclasses
import math
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from structmat._validation import resolve_budget
from structmat.benchmarks.timing import single_thread
from structmat.families import get_family
from structmat.finetune import (
    Evaluation, FinetuneResult, TrainingConfig, dense_head, evaluate, finetune, fitted_head, random_linear_weights,
    split_indices, write_json,
)
from structmat.fit_process import FitTimeoutError, fit_with_timeout

__all__ = ["HeadResult", "Study", "compare_heads", "head_task", "STUDY_COLUMNS", "study_columns"]

logger = logging.getLogger(__name__)

INITS = ("data-aware", "plain", "fresh")


@dataclass(frozen=True)
class HeadResult:
    """One head of a study. ``before``/``after`` are measured on the held-out test rows."""

    family: str
    status: str                      # "ok", "fit failed", "fit timed out", "too slow" or "failed"
    message: str = ""
    nparams: int | None = None
    share: float | None = None
    fit_error: float | None = None   # relative Frobenius error of the fit to the dense weight
    fit_seconds: float | None = None
    before: Evaluation | None = None
    after: Evaluation | None = None
    finetune: FinetuneResult | None = None
    output_error: float | None = None        # held-out output error of the fitted start
    plain_output_error: float | None = None  # the same for the plain (Frobenius) fit, when compared
    plain_before: Evaluation | None = None
    plain_fit_seconds: float | None = None
    output_weights: str | None = None        # "fisher" when the start was fitted with Fisher-weighted outputs

    def row(self) -> dict:
        """A flat dict for tables and CSV."""
        ft = self.finetune
        return {
            "family": self.family, "nparams": self.nparams, "share": self.share, "fit_error": self.fit_error,
            "plain_output_error": self.plain_output_error,
            "plain_agreement_before": self.plain_before.agreement if self.plain_before else None,
            "plain_accuracy_before": self.plain_before.accuracy if self.plain_before else None,
            "plain_fit_seconds": self.plain_fit_seconds,
            "output_error": self.output_error, "output_weights": self.output_weights,
            "agreement_before": self.before.agreement if self.before else None,
            "agreement_after": self.after.agreement if self.after else None,
            "accuracy_before": self.before.accuracy if self.before else None,
            "accuracy_after": self.after.accuracy if self.after else None,
            "fit_seconds": self.fit_seconds, "finetune_seconds": ft.seconds if ft else None,
            "epochs": len(ft.history) - 1 if ft else None, "best_epoch": ft.best_epoch if ft else None,
            "stop_reason": ft.stop_reason if ft else None, "status": self.status, "message": self.message,
        }


STUDY_COLUMNS = ["family", "nparams", "share", "fit_error", "plain_output_error", "plain_agreement_before",
                 "plain_accuracy_before", "plain_fit_seconds", "output_error", "output_weights", "agreement_before", "agreement_after",
                 "accuracy_before", "accuracy_after", "fit_seconds", "finetune_seconds", "epochs", "best_epoch",
                 "stop_reason", "status", "message"]


def study_columns(objective: str, rows: list[dict] | None = None) -> list[str]:
    """The columns worth printing for an objective (the plain-fit columns only when some row has them)."""
    measure = "agreement" if objective == "distill" else "accuracy"
    plain = ["plain_output_error", f"plain_{measure}_before", "plain_fit_seconds"]
    if rows is not None and not any(r.get(f"plain_{measure}_before") is not None for r in rows):
        plain = []
    weights = ["output_weights"] if rows is not None and any(r.get("output_weights") for r in rows) else []
    return ["family", "nparams", *plain, "output_error", *weights, f"{measure}_before", f"{measure}_after",
            "fit_seconds", "finetune_seconds", "epochs", "status"]


@dataclass(frozen=True)
class Study:
    """The dense reference and one :class:`HeadResult` per family, with the split that was used."""

    objective: str
    budget: float | int
    dense: HeadResult
    heads: tuple[HeadResult, ...]
    train_count: int
    test_count: int
    seconds: float
    config: dict = dataclasses.field(default_factory=dict)  # the TrainingConfig the heads were trained with

    def rows(self) -> list[dict]:
        return [self.dense.row()] + [h.row() for h in self.heads]

    def to_json(self) -> dict:
        return {"objective": self.objective, "budget": self.budget, "train_count": self.train_count,
                "test_count": self.test_count, "seconds": self.seconds, "config": self.config,
                "heads": [{**h.row(), "history": h.finetune.to_json() if h.finetune else None}
                          for h in (self.dense, *self.heads)]}

    def write(self, directory, stem: str) -> list[Path]:
        """``<stem>.csv``, ``<stem>.json`` (with per-epoch metrics) and ``<stem>.png`` (every head before and after
        fine-tuning, and the training curves: :func:`structmat.study_plot.plot_study`)."""
        from structmat.benchmarks.results import write_rows
        from structmat.study_plot import plot_study

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / f"{stem}.csv", directory / f"{stem}.json", directory / f"{stem}.png"]
        write_rows(paths[0], self.rows(), STUDY_COLUMNS)
        data = self.to_json()
        write_json(paths[1], data)
        plot_study(data, paths[2])
        return paths


def _fit_head(family, budget, weight, bias, timeout, inputs=None, output_weights=None):
    """``(layer, fit seconds)``: the family's layer fitted to ``weight`` (to its outputs on ``inputs`` when given,
    weighted by ``output_weights`` when given) on one thread, in a child process killed after ``timeout`` seconds
    when ``timeout`` is given."""
    options = {} if output_weights is None else {"output_weights": [float(w) for w in output_weights]}
    if timeout is None:
        t0 = time.perf_counter()
        with single_thread():  # fits are timed on one core, as in the sweeps
            head = fitted_head(family, budget, weight, bias, inputs=inputs, **options)
        return head, time.perf_counter() - t0
    from structmat.layers import layer_from_matrix
    from structmat.metrics import relative_error

    timed = fit_with_timeout(weight, family, budget, timeout, inputs=inputs, **options)
    head = layer_from_matrix(timed.matrix, np.asarray(bias, dtype=np.float32))
    head.fit_error = relative_error(weight, timed.matrix)
    return head, timed.seconds


def _step_seconds(head, features, rows) -> float:
    """Seconds of one training step's forward and backward pass on ``rows`` (the gradients are cleared after)."""
    x = torch.as_tensor(np.asarray(features.take(np.sort(rows))), dtype=torch.float32)
    start = time.perf_counter()
    head(x).square().mean().backward()
    seconds = time.perf_counter() - start
    head.zero_grad(set_to_none=True)
    return seconds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _held_out_output_error(weight, head, test_rows) -> float:
    from structmat.metrics import output_error

    return output_error(weight, head.to_matrix(), test_rows)


def compare_heads(cache, families, budget, *, objective: str = "distill", init: str = "data-aware",
                  compare_plain: bool | None = None, config: TrainingConfig | None = None, test_share: float = 0.2,
                  seed: int = 0, time_budget: float | None = None, fit_timeout: float | None = None,
                  progress: bool = False, jobs: int = 1, executor=None, output_weights: str = "fisher") -> Study:
    """Fit and fine-tune a head of every family in ``families`` on ``cache``; measure on held-out rows.

    Parameters
    ----------
    cache : FeatureCache
    families : sequence of str
        Registered family names.
    budget : int or float
        Parameter budget of each structured head (a share of the dense head's ``m·n``, or a count).
    objective : {"distill", "labels"}
        See the module docstring.
    init : {"data-aware", "plain", "fresh"}
        Start from the fit to the dense head's outputs on the training rows (data-aware), from the Frobenius fit
        to its weight (plain), or from a fit to a random ``nn.Linear``-style weight (fresh).
    compare_plain : bool, optional
        Also fit each family plainly and measure that start on the held-out rows (default: when ``init`` is
        ``"data-aware"``).
    config : TrainingConfig, optional
        Training settings (its ``objective`` is replaced by ``objective``; ``max_seconds`` caps each head).
    test_share : float
        Share of the rows held out (seeded) for the before/after measures; never trained or validated on.
    time_budget : float, optional
        Seconds for the whole study: each family's fit (with ``fit_timeout``) and fine-tuning get at most an
        equal share of what is left.
    fit_timeout : float, optional
        Fit each head in a child process killed after this many seconds (reported as "fit timed out");
        None fits in this process without a limit.
    jobs, executor :
        Where the families run (:func:`structmat.parallel.run_grid`): one after the other in this process
        (``jobs=1``, torch's own thread setting), or ``jobs`` at a time on worker processes or Dask workers, one
        thread each. The cache directory must be readable where they run. With ``time_budget``, each family's
        share is then counted per worker: ``jobs`` workers give each family about ``jobs`` times the time.
    output_weights : {"fisher", "none"}
        With ``init="data-aware"``: weight the head's outputs by the Fisher information of the dense head's
        softmax on the training rows (:func:`~structmat.approximators.data_aware.fisher_output_weights`) in the
        fits of the families that keep their structure under row scaling (``lowrank``, ``sparse``,
        ``sparse_product``, ``monarch``), so the budget goes to the logits that decide the top class; ``"none"`` fits every
        output alike. The ``output_weights`` column says which heads were weighted.
    """
    if objective not in ("distill", "labels"):
        raise ValueError(f"objective must be 'distill' or 'labels'; got {objective!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    if output_weights not in ("fisher", "none"):
        raise ValueError(f"output_weights must be 'fisher' or 'none'; got {output_weights!r}")
    compare_plain = (init == "data-aware") if compare_plain is None else bool(compare_plain)
    config = dataclasses.replace(config or TrainingConfig(), objective=objective, seed=seed)
    start = time.perf_counter()
    if not families:
        raise ValueError("families must name at least one family")
    for family in families:
        get_family(family)
    train_pool, test = split_indices(cache.count, test_share, seed)
    # In distillation the labels (say digits) are not the head's classes (say ImageNet's): only agreement counts.
    features, labels = cache.features, (cache.labels if objective == "labels" else None)
    if objective == "distill":
        if cache.logits is None or cache.head_weights() is None:
            raise ValueError(f"distillation needs the backbone's head and logits; the cache at {cache.directory} "
                             "has none (its split layer is not an nn.Linear). Use objective='labels'")
        weight, bias = cache.head_weights()
        resolve_budget(budget, weight.shape)  # a budget no head can have fails here, before any work
        teacher = cache.logits
        dense = dense_head(weight, bias)
        dense_result = HeadResult("dense", "ok", nparams=weight.size, share=1.0, fit_error=0.0,
                                  after=evaluate(dense, features, labels=labels, teacher_logits=teacher, indices=test))
    else:
        if labels is None:
            raise ValueError(f"objective='labels' needs labels; the feature cache at {cache.directory} has none")
        classes = int(labels.to_numpy().max()) + 1
        resolve_budget(budget, (classes, cache.feature_dim))  # before the dense head is trained
        dense = dense_head(*random_linear_weights(cache.feature_dim, classes, seed))
        trained = finetune(dense, features, labels=labels, indices=train_pool,
                           config=dataclasses.replace(config, max_seconds=None), progress=progress)
        with torch.no_grad():  # the trained dense head's logits: the reference for agreement
            teacher = np.concatenate([dense(torch.as_tensor(np.array(part), dtype=torch.float32)).numpy()
                                      for part in features.chunks()])
        weight, bias = dense.weight.detach().double().numpy(), dense.bias.detach().numpy()
        dense_result = HeadResult("dense", "ok", nparams=weight.size, share=1.0, fit_error=0.0,
                                  after=evaluate(dense, features, labels=labels, teacher_logits=teacher, indices=test),
                                  finetune=trained)
    logger.info("dense head %dx%d: test %s", weight.shape[0], weight.shape[1], dense_result.after)

    if init == "fresh":
        weight, bias = random_linear_weights(weight.shape[1], weight.shape[0], seed)
    inputs_npz = None
    if init == "data-aware":  # the head's inputs: the features of the training rows only, never the held-out ones
        from structmat.parallel.tasks import to_file_bytes
        from structmat.statistics import InputStatistics

        inputs_npz = to_file_bytes(InputStatistics.from_cache(cache, train_pool))
    fisher = None
    if init == "data-aware" and output_weights == "fisher":  # from the training rows' logits only
        from structmat.approximators.data_aware import fisher_output_weights

        rows = np.sort(train_pool)
        logits = teacher.take(rows) if hasattr(teacher, "take") else np.asarray(teacher)[rows]
        fisher = fisher_output_weights(logits)
    from structmat.parallel import Task, check_jobs, run_grid

    jobs = check_jobs(jobs)
    serial = executor in (None, "serial") and (jobs == 1 or executor == "serial")
    slots = 1 if serial else jobs
    deadline = None if time_budget is None else time.time() + time_budget - (time.perf_counter() - start)
    common = {"cache_dir": str(cache.directory), "budget": budget, "weight": np.asarray(weight, dtype=np.float64),
              "bias": np.asarray(bias, dtype=np.float64), "objective": objective, "init": init,
              "compare_plain": compare_plain, "inputs_npz": inputs_npz, "output_weights": fisher,
              "config": dataclasses.asdict(config),
              "test_share": test_share, "seed": seed,
              "teacher": None if objective == "distill" else np.asarray(teacher),
              "fit_timeout": fit_timeout, "deadline": deadline, "progress": progress and serial}
    tasks = [Task(head_task, {**common, "family": family, "rounds_left": math.ceil((len(families) - i) / slots)},
                  key=(family,)) for i, family in enumerate(families)]
    results = {}
    for result in run_grid(tasks, jobs=jobs, executor=executor, threads=None if serial else 1, errors="return"):
        if result.ok:
            head = _head_from_json(result.value)
        else:  # the task itself failed (its worker died, say): report it like a family that failed
            head = HeadResult(result.key[0], "failed", f"{result.error_type or result.status}: {result.message}")
        results[result.index] = head
    heads = [results[i] for i in range(len(tasks))]
    return Study(objective, budget, dense_result, tuple(heads), len(train_pool), len(test),
                 time.perf_counter() - start, {**dataclasses.asdict(config), "init": init})


def head_task(cache_dir: str, family: str, budget, weight, bias, objective: str, init: str, compare_plain: bool,
              inputs_npz, config: dict, test_share: float, seed: int, teacher, fit_timeout, deadline,
              rounds_left: int, progress: bool = False, output_weights=None) -> dict:
    """One family of a study, as a task of :func:`structmat.parallel.run_grid`: fit its head to ``weight`` (to its
    outputs on the training rows, whose statistics ``inputs_npz`` holds, for ``init="data-aware"``), fine-tune it on
    the cache at ``cache_dir`` and measure it on the held-out rows. Returns :func:`_head_to_json`'s dict.

    ``output_weights`` (an array of the head's outputs' weights, or None) weights the data-aware fit of a family
    that keeps its structure under row scaling; other families are fitted unweighted.

    ``deadline`` (``time.time()``, or None) bounds the study: this family gets at most an equal share of what is
    left for the ``rounds_left`` families its worker still has to run, this one included.
    """
    from structmat.features import FeatureCache

    cache = FeatureCache(cache_dir)
    config = TrainingConfig(**config)
    train_pool, test = split_indices(cache.count, test_share, seed)
    features, labels = cache.features, (cache.labels if objective == "labels" else None)
    if teacher is None:
        teacher = cache.logits
    inputs = None
    if inputs_npz is not None:
        from structmat.parallel.tasks import from_file_bytes
        from structmat.statistics import InputStatistics

        inputs = from_file_bytes(inputs_npz, InputStatistics.load)
    test_rows = np.asarray(features.take(np.sort(test)), dtype=np.float64)

    def fit_timeout_now(part: float = 1.0):
        """The time limit of a fit started now: at most ``part`` of this family's equal share of what is left."""
        if deadline is None or fit_timeout is None:
            return fit_timeout
        return min(fit_timeout, max(part * (deadline - time.time()) / rounds_left, 5.0))

    weighted = output_weights is not None and inputs is not None and \
        get_family(family).matrix_class.supports_row_scaling()
    t0 = time.perf_counter()
    try:  # the start of fine-tuning first; the plain fit below is only measured beside it
        head, fit_seconds = _fit_head(family, budget, weight, bias, fit_timeout_now(), inputs,
                                      output_weights if weighted else None)
    except Exception as exc:  # a family that cannot fit this budget (or in time) is reported, not fatal
        status = "fit timed out" if isinstance(exc, FitTimeoutError) else "fit failed"
        logger.warning("%s: %s: %s", family, status, _first_line(exc))
        head, fit_seconds = None, time.perf_counter() - t0
        failure = (status, _first_line(exc))
    plain = {}
    if compare_plain:  # the plain start, measured before fine-tuning only, in at most a third of what is left
        try:
            plain_head, plain_seconds = _fit_head(family, budget, weight, bias, fit_timeout_now(1 / 3))
            plain = dict(plain_output_error=_held_out_output_error(weight, plain_head, test_rows),
                         plain_before=evaluate(plain_head, features, labels=labels, teacher_logits=teacher,
                                               indices=test),
                         plain_fit_seconds=plain_seconds)
        except Exception as exc:
            logger.warning("%s: plain fit failed: %s", family, _first_line(exc))
    if head is None:
        return _head_to_json(HeadResult(family, failure[0], failure[1], fit_seconds=fit_seconds, **plain))
    nparams = int(head.nparams)
    common = dict(nparams=nparams, share=nparams / weight.size,
                  fit_error=head.fit_error if init != "fresh" else None, fit_seconds=fit_seconds,
                  output_error=_held_out_output_error(weight, head, test_rows) if init != "fresh" else None,
                  output_weights="fisher" if weighted else None, **plain)
    try:
        seconds = config.max_seconds
        if deadline is not None:
            share = max((deadline - time.time()) / rounds_left, 1.0)
            # Two evaluations and one epoch must fit in the family's share: time one training step first, so
            # that a layer whose forward pass is very slow is reported instead of overrunning.
            step = _step_seconds(head, features, train_pool[:config.batch_size])
            steps = math.ceil((1 - config.validation_share) * len(train_pool) / config.batch_size)
            passes = (2 * len(test) + config.validation_share * len(train_pool)) / config.batch_size
            needed = step * (steps + passes / 3)  # a forward pass costs about a third of a step
            if needed > share:
                message = (f"one training step of {config.batch_size} rows took "
                           f"{step:.2f} s, so one epoch ({steps} steps) and the evaluations need ~{needed:.0f} s "
                           f"against {share:.0f} s left for this family (`finetune --batch-size` larger, more "
                           "--seconds)")
                logger.warning("%s: %s", family, message)
                return _head_to_json(HeadResult(family, "too slow", message, **common))
            share -= passes / 3 * step
            seconds = share if seconds is None else min(seconds, share)
        before = evaluate(head, features, labels=labels, teacher_logits=teacher, indices=test)
        result = finetune(head, features, labels=labels, teacher_logits=teacher if objective == "distill" else None,
                          indices=train_pool, config=dataclasses.replace(config, max_seconds=seconds),
                          progress=progress)
        after = evaluate(head, features, labels=labels, teacher_logits=teacher, indices=test)
    except Exception as exc:
        logger.warning("%s: fine-tuning failed: %s", family, _first_line(exc))
        return _head_to_json(HeadResult(family, "failed", _first_line(exc), **common))
    logger.info("%s: %d parameters, fit error %s, test %s -> %s", family, nparams, head.fit_error, before, after)
    return _head_to_json(HeadResult(family, "ok", **common, before=before, after=after, finetune=result))


_EVALUATIONS = ("before", "after", "plain_before")


def _head_to_json(head: HeadResult) -> dict:
    """A :class:`HeadResult` as JSON values (how a head travels back from its worker)."""
    data = {f.name: getattr(head, f.name) for f in dataclasses.fields(HeadResult)}
    for name in _EVALUATIONS:
        data[name] = dataclasses.asdict(data[name]) if data[name] is not None else None
    data["finetune"] = head.finetune.to_json() if head.finetune else None
    return data


def _head_from_json(data: dict) -> HeadResult:
    from structmat.finetune import EpochRecord

    data = dict(data)
    for name in _EVALUATIONS:
        data[name] = Evaluation(**data[name]) if data[name] is not None else None
    ft = data["finetune"]
    data["finetune"] = None if ft is None else FinetuneResult(
        history=tuple(EpochRecord(**r) for r in ft["history"]), best_epoch=ft["best_epoch"],
        stop_reason=ft["stop_reason"], seconds=ft["seconds"], train_count=ft["train_count"],
        val_count=ft["val_count"], config=TrainingConfig(**ft["config"]), backoffs=ft["backoffs"], lr=ft.get("lr"),
        lr_probe=tuple(tuple(p) for p in ft.get("lr_probe", ())))
    return HeadResult(**data)
