r"""Train a head (any ``StructuredLinear``, or an ``nn.Linear``) on cached features.

Two objectives:

``"labels"``
    cross-entropy with the dataset's labels.
``"distill"``
    knowledge distillation from the dense head's cached logits ``z`` (Hinton, Vinyals & Dean, "Distilling the
    Knowledge in a Neural Network", 2015, sec. 2): with the student's logits ``s`` and a temperature ``T``,

    .. math:: \mathcal{L} = T^2 \, \mathrm{KL}\big(\mathrm{softmax}(z/T) \,\|\, \mathrm{softmax}(s/T)\big),

    averaged over the batch; the factor :math:`T^2` keeps gradient magnitudes independent of ``T`` (ibid.).
    No labels are needed.

Training uses Adam (Kingma & Ba 2015) by default with a linear learning-rate warm-up, multiplies the learning
rate by ``lr_factor`` when the validation loss stops improving (``ReduceLROnPlateau``), goes back to the best state
at a smaller learning rate when the training loss runs away (structured parametrizations differ widely in how far
one step moves the weight: a Toeplitz-like head diverges where a low-rank one is fine), stops early after
``patience`` epochs without improvement or when ``max_seconds`` have passed, and restores the state with the best
validation loss. The validation rows are a seeded share of the training rows. Features may be in memory or a memory-mapped
:class:`~structmat.features.cache.ChunkedArray`; above ``max_memory_bytes`` batches are read from disk.
Parameters are trained in float32.
"""

from __future__ import annotations

import copy
import logging
import math
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "TrainingConfig", "EpochRecord", "FinetuneResult", "Evaluation", "OBJECTIVES", "finetune", "evaluate",
    "split_indices", "dense_head", "fitted_head", "fresh_head", "random_linear_weights", "plot_histories",
    "write_json",
]

logger = logging.getLogger(__name__)

OBJECTIVES = ("distill", "labels")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainingConfig:
    """How to train a head. Defaults suit heads of a few hundred thousand parameters on a few thousand rows.

    Attributes
    ----------
    objective : {"distill", "labels"}
    temperature : float
        Distillation temperature T.
    epochs, batch_size : int
        Most passes over the training rows; rows per step.
    lr : float or "auto"
        The learning rate, or ``"auto"`` (the default): a short range test from the head's starting point picks
        the rate among ``lr_candidates`` whose ``lr_probe_steps`` training steps give the lowest validation loss.
        A head that starts close to its teacher (a data-aware fit) and one that starts far from it (a plain fit,
        a fresh head) need different rates; the probe finds each one's (Smith, "Cyclical Learning Rates for
        Training Neural Networks", WACV 2017, sec. 3.3, run on a few fixed rates instead of a sweep).
    lr_candidates, lr_probe_steps
        The rates ``"auto"`` tries and the steps it gives each (at most one epoch).
    weight_decay, optimizer
        Adam (default) or SGD with momentum 0.9.
    lr_factor, lr_patience : float, int
        ``ReduceLROnPlateau``: multiply the learning rate by ``lr_factor`` after ``lr_patience`` epochs without a
        better validation loss.
    patience : int
        Stop after this many epochs without a better validation loss.
    validation_share, seed
        The seeded share of the training rows kept for validation.
    max_seconds : float or None
        Stop (after validating what was trained) once this many seconds have passed.
    max_memory_bytes : int
        Arrays up to this size are loaded into memory; larger ones are read batch by batch.
    warmup_epochs : float
        The learning rate rises linearly from ``lr / steps`` to ``lr`` over this many epochs.
    spike_factor, backoff_factor, max_backoffs
        When the smoothed training loss exceeds ``spike_factor`` times the best validation loss (or is not
        finite), the best state is restored and training restarts at ``backoff_factor`` times the learning rate,
        at most ``max_backoffs`` times (then training stops as "diverged"). ``spike_factor=None`` turns this off.
    """

    objective: str = "distill"
    temperature: float = 2.0
    epochs: int = 40
    batch_size: int = 128
    lr: float | str = "auto"
    lr_candidates: tuple = (3e-3, 1e-3, 3e-4, 1e-4)
    lr_probe_steps: int = 30
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_factor: float = 0.5
    lr_patience: int = 2
    patience: int = 6
    validation_share: float = 0.1
    seed: int = 0
    max_seconds: float | None = None
    max_memory_bytes: int = 1 << 30
    warmup_epochs: float = 1.0
    spike_factor: float | None = 2.0
    backoff_factor: float = 0.3
    max_backoffs: int = 4

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "lr_patience", "patience", "max_memory_bytes", "max_backoffs",
                     "lr_probe_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (0 if name in ("lr_patience", "max_backoffs") else 1):
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature!r}")
        if self.lr != "auto" and (isinstance(self.lr, (bool, str)) or not isinstance(self.lr, numbers.Real)
                                  or not self.lr > 0):
            raise ValueError(f"lr must be a float > 0 or 'auto'; got {self.lr!r}")
        candidates = tuple(self.lr_candidates)
        if not candidates or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and c > 0
                                     for c in candidates):
            raise ValueError(f"lr_candidates must be a non-empty sequence of floats > 0; got {self.lr_candidates!r}")
        object.__setattr__(self, "lr_candidates", tuple(float(c) for c in candidates))
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"lr_factor must be in (0, 1); got {self.lr_factor!r}")
        if not 0 < self.validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1); got {self.validation_share!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None; got {self.max_seconds!r}")
        if not self.warmup_epochs >= 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {self.warmup_epochs!r}")
        if self.spike_factor is not None and not self.spike_factor > 1:
            raise ValueError(f"spike_factor must be > 1 or None; got {self.spike_factor!r}")
        if not 0 < self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be in (0, 1); got {self.backoff_factor!r}")


@dataclass(frozen=True)
class EpochRecord:
    """Metrics after one epoch (epoch 0: before training). ``None`` where the data to compute it was absent."""

    epoch: int
    train_loss: float | None
    val_loss: float
    val_accuracy: float | None
    val_agreement: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` did; the head itself was trained in place and holds the best state."""

    history: tuple[EpochRecord, ...]
    best_epoch: int
    stop_reason: str
    seconds: float
    train_count: int
    val_count: int
    config: TrainingConfig = field(repr=False)
    backoffs: int = 0
    lr: float | None = None                        # the learning rate training started with
    lr_probe: tuple = ()                           # ("auto" only) (rate, validation loss after the probe) pairs

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch]

    def to_json(self) -> dict:
        return {"best_epoch": self.best_epoch, "stop_reason": self.stop_reason, "seconds": self.seconds,
                "backoffs": self.backoffs, "lr": self.lr, "lr_probe": [list(p) for p in self.lr_probe],
                "train_count": self.train_count, "val_count": self.val_count, "config": asdict(self.config),
                "history": [asdict(r) for r in self.history]}


@dataclass(frozen=True)
class Evaluation:
    """Accuracy against labels and top-1 agreement with the teacher's logits, over ``count`` rows."""

    count: int
    accuracy: float | None
    agreement: float | None


# ---------------------------------------------------------------------------------------------------- data
class _Rows:
    """Rows of an ndarray, tensor or ChunkedArray as float32/int64 tensors; in memory when small enough."""

    def __init__(self, array, name: str, max_bytes: int, dtype=torch.float32) -> None:
        self.name, self.dtype = name, dtype
        if torch.is_tensor(array):
            array = array.detach().cpu().numpy()
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            array = np.asarray(array)
        if len(array.shape) < 1:
            raise ValueError(f"{name} must be an array with one row per example; got a scalar")
        kind = np.dtype(array.dtype).kind
        if kind not in ("iu" if dtype == torch.int64 else "fiu"):
            raise TypeError(f"{name} must hold {'integers' if dtype == torch.int64 else 'real numbers'}; "
                            f"got dtype {array.dtype}")
        self.length = int(array.shape[0])
        nbytes = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
        if nbytes <= max_bytes:
            whole = array.to_numpy() if hasattr(array, "to_numpy") else np.asarray(array)
            self._check(whole)
            self.tensor, self.array = torch.as_tensor(np.ascontiguousarray(whole)).to(dtype), None
        else:
            self.tensor, self.array = None, array

    def _check(self, values: np.ndarray) -> None:
        """Refuse what would silently train on garbage: NaN/Inf values, negative labels."""
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            raise ValueError(f"{self.name} hold {bad} NaN or Inf values; training on them gives NaN losses")
        if self.dtype == torch.int64 and values.size and values.min() < 0:
            raise ValueError(f"{self.name} must be class indices >= 0; found {int(values.min())}")

    def __getitem__(self, indices: np.ndarray) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[torch.from_numpy(indices)]
        order = np.argsort(indices)  # read in file order, then put the rows back
        wanted = indices[order]
        rows = np.asarray(self.array[wanted]) if isinstance(self.array, np.ndarray) else self.array.take(wanted)
        self._check(rows)
        out = np.empty_like(rows)
        out[order] = rows
        return torch.as_tensor(out).to(self.dtype)

    def max(self) -> int:
        """The largest value (labels: to check them against the head's outputs)."""
        if self.tensor is not None:
            return int(self.tensor.max()) if self.length else -1
        return max((int(np.max(part)) for part in _parts(self.array)), default=-1)


def _parts(array):
    """An array's chunks (a ChunkedArray's files), or the array itself in one piece."""
    return array.chunks() if hasattr(array, "chunks") else [np.asarray(array)]


def _check_label_range(head, X: _Rows, y: _Rows | None, rows: np.ndarray) -> None:
    """Labels must index the head's outputs (cross-entropy would fail deep inside torch otherwise)."""
    if y is None or not len(rows):
        return
    with torch.no_grad():
        width = int(head(X[rows[:1]]).shape[-1])
    largest = y.max()
    if largest >= width:
        raise ValueError(f"labels go up to {largest}, but the head has {width} outputs (classes 0..{width - 1})")


def _rows(array, name, count, max_bytes, dtype=torch.float32):
    if array is None:
        return None
    rows = _Rows(array, name, max_bytes, dtype)
    if rows.length != count:
        raise ValueError(f"{name} has {rows.length} rows; features have {count}")
    return rows


def split_indices(indices, validation_share: float, seed) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``indices`` (an int count or an index array) into ``(train, validation)``, each sorted.

    Examples
    --------
    >>> train, val = split_indices(10, 0.2, seed=0)
    >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
    (8, 2, True)
    """
    indices = np.arange(indices) if isinstance(indices, numbers.Integral) else np.asarray(indices, dtype=np.int64)
    if not 0 < validation_share < 1:
        raise ValueError(f"validation_share must be in (0, 1); got {validation_share!r}")
    if indices.size < 2:
        raise ValueError(f"need at least 2 rows to split off a validation set; got {indices.size}")
    permuted = np.random.default_rng(seed).permutation(indices)
    n_val = min(max(1, int(round(validation_share * indices.size))), indices.size - 1)
    return np.sort(permuted[n_val:]), np.sort(permuted[:n_val])


def _loss(outputs, config: TrainingConfig, labels, teacher):
    if config.objective == "labels":
        return F.cross_entropy(outputs, labels)
    T = config.temperature
    return F.kl_div(F.log_softmax(outputs / T, dim=1), F.log_softmax(teacher / T, dim=1), log_target=True,
                    reduction="batchmean") * (T * T)


@torch.no_grad()
def _predict(head, features: _Rows, indices: np.ndarray, batch_size: int = 2048):
    head.eval()
    return [(i, head(features[indices[i:i + batch_size]])) for i in range(0, len(indices), batch_size)]


@torch.no_grad()
def _validate(head, config, features, labels, teacher, indices) -> tuple[float, float | None, float | None]:
    total, correct, agree = 0.0, 0, 0
    for start, outputs in _predict(head, features, indices):
        rows = indices[start:start + outputs.shape[0]]
        y = labels[rows] if labels is not None else None
        z = teacher[rows] if teacher is not None else None
        total += float(_loss(outputs, config, y, z)) * len(rows)
        if y is not None:
            correct += int((outputs.argmax(1) == y).sum())
        if z is not None:
            agree += int((outputs.argmax(1) == z.argmax(1)).sum())
    n = len(indices)
    return total / n, (correct / n if labels is not None else None), (agree / n if teacher is not None else None)


# ---------------------------------------------------------------------------------------------------- training
def finetune(head: nn.Module, features, *, labels=None, teacher_logits=None, indices=None,
             config: TrainingConfig = TrainingConfig(), progress: bool = False) -> FinetuneResult:
    """Train ``head`` in place on ``features``; it ends holding the state with the best validation loss.

    Parameters
    ----------
    head : nn.Module
        Maps ``(batch, feature_dim)`` to ``(batch, num_classes)``: a ``StructuredLinear`` or an ``nn.Linear``.
    features : array of shape (count, feature_dim)
        ndarray, tensor or :class:`~structmat.features.cache.ChunkedArray`.
    labels : int array of shape (count,), optional
        Needed for ``objective="labels"``; also gives validation accuracy.
    teacher_logits : array of shape (count, num_classes), optional
        The dense head's logits. Needed for ``objective="distill"``; also gives validation agreement.
    indices : int array, optional
        The rows to use (split into training and validation); default all. Keep test rows out of it.
    config : TrainingConfig
    progress : bool
        A tqdm bar over epochs.

    Returns
    -------
    FinetuneResult
    """
    if not isinstance(head, nn.Module):
        raise TypeError(f"head must be a torch nn.Module; got {type(head).__name__}")
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig; got {type(config).__name__}")
    if config.objective == "distill" and teacher_logits is None:
        raise ValueError("objective='distill' needs teacher_logits (the dense head's logits); pass them, or use "
                         "objective='labels' with labels")
    if config.objective == "labels" and labels is None:
        raise ValueError("objective='labels' needs labels; pass them, or use objective='distill' with teacher_logits")
    start_time = time.perf_counter()
    X = _rows(features, "features", len(features), config.max_memory_bytes)
    y = _rows(labels, "labels", X.length, config.max_memory_bytes, torch.int64)
    z = _rows(teacher_logits, "teacher_logits", X.length, config.max_memory_bytes)
    train, val = split_indices(X.length if indices is None else indices, config.validation_share, config.seed)
    rng = np.random.default_rng(config.seed)
    _check_label_range(head, X, y, train)

    params = [p for p in head.parameters() if p.requires_grad]

    def make_optimizer(lr):
        if config.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=config.weight_decay)
        return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=config.lr_factor,
                                                               patience=config.lr_patience)

    probe = ()
    if config.lr == "auto":
        probe = _probe_learning_rates(head, params, make_optimizer, config, X, y, z, train, val)
        base_lr = min(probe, key=lambda p: (p[1], -p[0]))[0]
        logger.debug("learning-rate probe: %s -> %g", probe, base_lr)
    else:
        base_lr = float(config.lr)
    start_lr = base_lr
    optimizer, scheduler = make_optimizer(base_lr)

    def record(epoch, train_loss):
        val_loss, accuracy, agreement = _validate(head, config, X, y, z, val)
        return EpochRecord(epoch, train_loss, val_loss, accuracy, agreement, optimizer.param_groups[0]["lr"],
                           time.perf_counter() - start_time)

    history = [record(0, None)]
    best_epoch, best_state, stale, stop_reason = 0, copy.deepcopy(head.state_dict()), 0, "epochs"
    out_of_time, backoffs = False, 0
    # Linear warm-up of the learning rate: Adam's first steps, before its moment estimates settle, otherwise knock
    # a fitted head far from its starting point (Goyal et al., "Accurate, Large Minibatch SGD", 2017, sec. 2.2).
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    warmup_steps, step, smoothed, last_step = int(config.warmup_epochs * steps_per_epoch), 0, None, 0.0
    bar = tqdm(range(1, config.epochs + 1), desc="fine-tune", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        head.train()
        order = rng.permutation(train)
        total, seen = 0.0, 0
        for b in range(0, len(order), config.batch_size):
            step_start = time.perf_counter()
            if config.max_seconds is not None and step_start + last_step - start_time > config.max_seconds:
                out_of_time = True  # the next step would end past the time limit
                break
            rows = order[b:b + config.batch_size]
            if step < warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = base_lr * (step + 1) / warmup_steps
            step += 1
            outputs = head(X[rows])
            loss = _loss(outputs, config, y[rows] if y is not None else None, z[rows] if z is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total, seen = total + value * len(rows), seen + len(rows)
            smoothed = value if smoothed is None else 0.7 * smoothed + 0.3 * value
            if config.spike_factor is not None and (not math.isfinite(value)
                                                    or smoothed > config.spike_factor * history[best_epoch].val_loss):
                # The loss ran away: go back to the best state and start again at a smaller learning rate.
                backoffs += 1
                if backoffs > config.max_backoffs:
                    stop_reason = "diverged"
                    break
                head.load_state_dict(best_state)
                base_lr *= config.backoff_factor
                optimizer, scheduler = make_optimizer(base_lr)
                step, smoothed = 0, None
                logger.debug("loss spike (%.3g vs best %.3g): learning rate backed off to %.3g", value,
                             history[best_epoch].val_loss, base_lr)
            last_step = time.perf_counter() - step_start
            if config.max_seconds is not None and time.perf_counter() - start_time > config.max_seconds:
                out_of_time = True
                break
        if stop_reason == "diverged" or seen == 0:
            stop_reason = "time" if seen == 0 else stop_reason
            break
        history.append(record(epoch, total / seen))
        current = history[-1]
        bar.set_postfix(val_loss=f"{current.val_loss:.4f}")
        if not math.isfinite(current.val_loss):
            stop_reason = "diverged"
            break
        scheduler.step(current.val_loss)
        if current.val_loss < history[best_epoch].val_loss:
            best_epoch, best_state, stale = epoch, copy.deepcopy(head.state_dict()), 0
        else:
            stale += 1
        if out_of_time:
            stop_reason = "time"
            break
        if stale >= config.patience:
            stop_reason = "early_stopping"
            break
    head.load_state_dict(best_state)
    head.eval()
    logger.debug("fine-tuned %s: %d epochs, best %d, stopped by %s", type(head).__name__, len(history) - 1,
                 best_epoch, stop_reason)
    return FinetuneResult(tuple(history), best_epoch, stop_reason, time.perf_counter() - start_time, len(train),
                          len(val), config, backoffs, start_lr, probe)


def _probe_learning_rates(head, params, make_optimizer, config, X, y, z, train, val) -> tuple:
    """``((rate, validation loss), ...)`` after ``lr_probe_steps`` steps (with warm-up) from the head's current
    state at each candidate rate; the head is put back in its starting state."""
    start = copy.deepcopy(head.state_dict())
    steps = min(config.lr_probe_steps, math.ceil(len(train) / config.batch_size))
    order = np.random.default_rng(config.seed).permutation(train)
    results = []
    for lr in config.lr_candidates:
        head.load_state_dict(start)
        optimizer, _ = make_optimizer(lr)
        head.train()
        for step in range(steps):
            rows = order[(step * config.batch_size) % len(order):][:config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, 2.0 * (step + 1) / steps)
            loss = _loss(head(X[rows]), config, y[rows] if y is not None else None, z[rows] if z is not None else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        value = _validate(head, config, X, y, z, val)[0]
        results.append((lr, value if math.isfinite(value) else math.inf))
    head.load_state_dict(start)
    return tuple(results)


def evaluate(head: nn.Module, features, *, labels=None, teacher_logits=None, indices=None,
             max_memory_bytes: int = 1 << 30) -> Evaluation:
    """Accuracy against ``labels`` and top-1 agreement with ``teacher_logits`` (each None when not given)."""
    if labels is None and teacher_logits is None:
        raise ValueError("evaluate needs labels, teacher_logits, or both")
    X = _rows(features, "features", len(features), max_memory_bytes)
    y = _rows(labels, "labels", X.length, max_memory_bytes, torch.int64)
    z = _rows(teacher_logits, "teacher_logits", X.length, max_memory_bytes)
    indices = np.arange(X.length) if indices is None else np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise ValueError("evaluate needs at least one row; got an empty index set")
    correct = agree = 0
    for start, outputs in _predict(head, X, indices):
        rows = indices[start:start + outputs.shape[0]]
        top1 = outputs.argmax(1)
        if y is not None:
            correct += int((top1 == y[rows]).sum())
        if z is not None:
            agree += int((top1 == z[rows].argmax(1)).sum())
    n = int(indices.size)
    return Evaluation(n, correct / n if y is not None else None, agree / n if z is not None else None)


# ---------------------------------------------------------------------------------------------------- heads
def dense_head(weight, bias=None) -> nn.Linear:
    """An ``nn.Linear`` (float32) holding ``weight`` of shape (out_features, in_features) and ``bias``."""
    weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features); got shape {tuple(weight.shape)}")
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
    return head


def fitted_head(family: str, budget, weight, bias=None, *, inputs=None, **options):
    """The family's layer fitted to the dense ``weight`` under ``budget`` (via the registry), with ``bias``.

    With ``inputs`` (the features the head sees, as rows or :class:`~structmat.InputStatistics`) the fit minimises
    the output error on them (data-aware) instead of the Frobenius error. ``layer.fit_error`` holds the relative
    Frobenius error of the fit (fitted in float64; the layer is float32).
    """
    from structmat.approximators import approximate
    from structmat.layers import layer_from_matrix
    from structmat.metrics import relative_error

    weight = np.asarray(weight, dtype=np.float64)
    M = approximate(weight, family, budget, inputs=inputs, **options)
    layer = layer_from_matrix(M, None if bias is None else np.asarray(bias, dtype=np.float32))
    layer.fit_error = relative_error(weight, M)
    return layer


def random_linear_weights(in_features: int, out_features: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """``nn.Linear``'s initialisation, seeded: weight and bias uniform on ``±1/sqrt(in_features)`` (float64)."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(in_features)
    return rng.uniform(-bound, bound, (out_features, in_features)), rng.uniform(-bound, bound, out_features)


def fresh_head(family: str, budget, in_features: int, out_features: int, *, seed=None, **options):
    """A newly initialised head of ``family``: fitted to :func:`random_linear_weights`, so every registered
    family starts the same way."""
    weight, bias = random_linear_weights(in_features, out_features, seed)
    return fitted_head(family, budget, weight, bias, **options)


# ---------------------------------------------------------------------------------------------------- outputs
def write_json(path, data) -> None:
    """Write ``data`` as indented JSON, atomically; NaN and Inf are written as null (JSON has no NaN)."""
    from structmat._json import dumps
    from structmat.matrices.io import atomic_write

    encoded = (dumps(data, indent=1) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(encoded))


def plot_histories(results: Mapping[str, FinetuneResult], path, *, title: str | None = None,
                   starts: Mapping[str, tuple] | None = None) -> None:
    """Training curves: validation loss, and validation agreement (or accuracy), against epochs, one line per head.

    ``starts`` (optional) maps a head's name to ``(plain start, fitted start, fine-tuned)`` measures on the
    held-out rows (None where missing): a third panel then shows them side by side per head, so a study that
    compares the plain and the data-aware start shows both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if starts else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    ax_loss, ax_metric = axes[0], axes[1]
    colours = plt.get_cmap("tab10" if len(results) <= 10 else "tab20")
    metric_name = None
    for i, (name, result) in enumerate(results.items()):
        epochs = [r.epoch for r in result.history]
        (line,) = ax_loss.plot(epochs, [r.val_loss for r in result.history], label=name, color=colours(i % colours.N))
        agreement = [r.val_agreement for r in result.history]
        accuracy = [r.val_accuracy for r in result.history]
        values, metric_name = ((agreement, "validation top-1 agreement with the dense head")
                               if agreement[0] is not None else (accuracy, "validation accuracy"))
        ax_metric.plot(epochs, values, color=line.get_color(), label=name)
        ax_loss.plot([result.best_epoch], [result.best.val_loss], "o", color=line.get_color())
    positive = all(r.val_loss > 0 for result in results.values() for r in result.history)
    ax_loss.set(xlabel="epoch", ylabel="validation loss", yscale="log" if positive else "linear")
    ax_metric.set(xlabel="epoch", ylabel=metric_name or "")
    ax_metric.legend(fontsize=8)
    if starts:
        ax = axes[2]
        names = list(starts)
        x = np.arange(len(names))
        labels = ("plain start", "fitted start", "fine-tuned")
        for k, label in enumerate(labels):
            heights = [np.nan if starts[n][k] is None else starts[n][k] for n in names]
            ax.bar(x + (k - 1) * 0.27, heights, width=0.27, label=label, color=("0.7", "tab:blue", "tab:green")[k])
        finite = [v for n in names for v in starts[n] if v is not None]
        low = max(0.0, min(finite) - 0.05) if finite else 0.0
        accuracy_only = metric_name is not None and "accuracy" in metric_name
        ax.set(xticks=x, ylim=(low, 1.0 + 0.12 * (1.0 - low)),
               ylabel="held-out accuracy" if accuracy_only else "held-out top-1 agreement with the dense head")
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=8, loc="upper center", ncol=3)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
