"""``StructuredLinear``: the torch side of a structured matrix, a drop-in for ``nn.Linear``.

Conventions every family layer follows (new families too):

**Three ways to compute ``x @ Wᵀ``.** ``forward`` validates the input, flattens it to ``(batch, in_features)`` and
picks one of:

* ``_weight_product(x)`` -- the *plain path*: torch operations only (no Python ``autograd.Function``, no
  ``.data_ptr()``, no NumPy or Numba call, no caches), differentiable by autograd and accepted by
  ``torch.export.export`` (strict and non-strict), ``torch.jit.trace`` and the ONNX exporter, for any batch size
  (no branch on the batch size, no data-dependent shapes). It never forms the dense weight. Every family must
  supply it; it is also the path for devices other than the CPU, for bfloat16/float16, and the reference the tests
  compare the other two against.
* ``_train_product(x)`` -- when autograd is on and nothing is being traced: a family may use custom autograd
  functions and cached derived tensors here (faster backward passes); by default the plain path.
* ``_fast_product(x)`` -- the *inference fast path*, taken when :func:`fast_path_applies` (autograd off or
  ``torch.inference_mode``, a float32/float64 CPU tensor, nothing tracing, exporting or compiling): the family's
  compiled product (Numba kernels over the tensors' memory, no copies of the parameters) with minimal per-call
  overhead; derived structures are built once and cached with :meth:`StructuredLinear._cached`, keyed on the
  parameters' storage and version, so an optimiser step or ``load_state_dict`` invalidates them. By default the
  plain path. ``_fast_forward(x)`` adds the bias to it; a family whose kernel adds the bias in the same call
  overrides that instead.

**What is stored.** Parameters hold exactly ``nparams`` numbers (no padding); buffers that go into the state dict
hold only what the matrix accounts for in ``nindices``, as int32, or int16 where the indexed dimension is below
2**15 (:func:`compact_index`). Anything derived (transposed index structures, int64 copies, padded tensors) is
built when needed and kept out of the state dict. So a saved state dict is about ``nbytes`` plus the bias.

**Dtypes.** float32 (default), float64, bfloat16 and float16 all work: a family whose operations lack a reduced
precision kernel computes internally in float32 and returns the layer's dtype. Anything else is refused with one
error naming the supported dtypes. ``to_matrix(dtype=np.float64)`` returns a float64 copy by default; pass
``np.float32`` for compact saves.

**Shapes.** Inputs are ``(..., in_features)`` like ``nn.Linear``, including empty batches (``(0, in)`` or a zero
anywhere in the leading dimensions), which give an empty output. Constructors refuse structure sizes that the
shape does not allow (a rank above ``min(in, out)``, more stages than features, ...) with one error naming the
limit, before allocating anything.

Round trip: ``L.from_matrix(M).to_matrix()`` equals ``M`` to float32 rounding and ``L(x) ≈ x @ M.to_dense().T + b``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

from structmat.matrices.base import StructuredMatrix

__all__ = ["StructuredLinear", "layer_from_matrix", "fast_path_applies", "is_tracing", "compact_index",
           "SUPPORTED_DTYPES", "check_structure_size"]

#: The parameter dtypes every layer accepts.
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
#: The dtypes the compiled inference kernels handle (the others take the plain path).
FAST_DTYPES = (torch.float32, torch.float64)


def is_tracing() -> bool:
    """True while ``torch.jit.trace``/``script``, ``torch.compile``, ``torch.export`` (strict or not) or any
    ``__torch_dispatch__`` mode (fake tensors, proxies) is recording: then only the plain path may run."""
    if torch.compiler.is_compiling():  # dynamo: torch.compile and strict torch.export (checked first: no graph break)
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting() or is_in_torch_dispatch_mode()


def fast_path_applies(x: torch.Tensor) -> bool:
    """Whether the inference fast path may run on ``x``: autograd off (``torch.no_grad`` or
    ``torch.inference_mode``), a float32/float64 CPU tensor, and nothing tracing, exporting or compiling."""
    return (not torch.is_grad_enabled() and x.is_cpu and x.dtype in FAST_DTYPES
            and not is_tracing())


def compact_index(values, bound: int, *, device=None) -> torch.Tensor:
    """An index array as the smallest stored integer type: int16 when every value (and ``bound``, the size of the
    indexed dimension) is below 2**15, else int32 (refused beyond 2**31 - 1)."""
    array = np.asarray(values)
    top = max(int(bound), int(array.max(initial=0)) + 1)
    if top <= np.iinfo(np.int16).max:
        dtype = np.int16
    elif top <= np.iinfo(np.int32).max:
        dtype = np.int32
    else:
        raise ValueError(f"an index dimension of {top} exceeds int32; structmat layers store int32 indices at most")
    array = np.ascontiguousarray(array, dtype=dtype)
    if not array.flags.writeable:  # torch warns on read-only arrays (a memory map, a frozen fit's arrays)
        array = array.copy()
    return torch.from_numpy(array).to(device)


def check_dtype(dtype) -> None:
    """Refuse parameter dtypes other than :data:`SUPPORTED_DTYPES` (None means torch's default)."""
    if dtype is not None and torch.empty(0, dtype=dtype).dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be one of {', '.join(str(d) for d in SUPPORTED_DTYPES)}; got {dtype}")


def check_structure_size(value: int, name: str, limit: int, why: str) -> int:
    """Refuse a structure size above what the shape allows (``why`` says where ``limit`` comes from)."""
    if value > limit:
        raise ValueError(f"{name} must be <= {limit} ({why}); got {value}")
    return value


class StructuredLinear(nn.Module):
    """Base class of the structured layers: ``y = x Wᵀ + b`` with ``W`` held in a structured form.

    Parameters
    ----------
    in_features, out_features : int
        As ``nn.Linear``; the weight has shape ``(out_features, in_features)``.
    bias : bool
        Whether to learn an additive bias (not counted in ``nparams``).
    """

    #: The registry key of the family this layer implements.
    family: ClassVar[str]

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        check_dtype(dtype)
        self.in_features = in_features
        self.out_features = out_features
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        #: Relative Frobenius error of the fit this layer was built from (set by ``from_linear``), else None.
        self.fit_error: float | None = None

    # ---------------------------------------------------------------- what a family supplies
    def _weight_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Wᵀ`` for ``x`` of shape ``(batch, in_features)``, plain torch operations (the export path)."""
        raise NotImplementedError

    def _train_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Wᵀ`` with autograd on (may use custom autograd functions); the plain path by default."""
        return self._weight_product(x)

    def _fast_product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Wᵀ`` without autograd on the CPU (compiled kernels); ``x`` is C-contiguous. Plain by default."""
        return self._weight_product(x)

    def _fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Wᵀ + b`` on the fast path, a fresh C-contiguous ``(batch, out_features)`` tensor: by default
        :meth:`_fast_product` with the bias added in place; a family whose compiled kernel adds the bias itself
        overrides this (one call per forward)."""
        y = self._fast_product(x)
        if self.bias is not None:
            y.add_(self.bias)
        return y

    def to_matrix(self, dtype=np.float64) -> StructuredMatrix:
        """The weight as a :class:`StructuredMatrix` in ``dtype`` (float64 by default; a copy, detached)."""
        raise NotImplementedError

    @classmethod
    def _build_from_matrix(cls, M: StructuredMatrix, bias: bool, device, dtype) -> "StructuredLinear":
        """A layer holding ``M``'s arrays as parameters (bias left uninitialised)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- derived
    @property
    def nparams(self) -> int:
        """Stored weight numbers, as the matrix counts them (the bias is separate)."""
        return sum(p.numel() for name, p in self.named_parameters() if name != "bias")

    def reset_bias(self) -> None:
        """``nn.Linear``'s bias initialisation: uniform on ``±1/sqrt(in_features)``."""
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"{type(self).__name__} expects input of shape (..., {self.in_features}); got {tuple(input.shape)}"
            )
        if not input.is_floating_point():  # as nn.Linear: an integer or complex input is not silently cast
            raise TypeError(f"{type(self).__name__} expects a floating-point input (float32, float64, bfloat16 or "
                            f"float16); got {input.dtype}")
        lead = input.shape[:-1]
        x = input if input.dim() == 2 else (input.unsqueeze(0) if input.dim() == 1 else input.flatten(0, -2))
        if is_tracing():
            y = self._weight_product(x)
        elif x.shape[0] == 0:  # an empty batch, as nn.Linear: an empty output (reshape(-1) cannot infer it)
            y = x.new_zeros((0, self.out_features))
        elif (not torch.is_grad_enabled() and x.is_cpu and x.dtype in FAST_DTYPES
              and self._any_param().dtype == x.dtype):  # fast_path_applies, tracing already excluded
            y = self._fast_forward(x.contiguous())
            return y if input.dim() == 2 else y.view(*lead, self.out_features)  # a view costs ~0.7 µs at batch 1
        elif torch.is_grad_enabled():
            y = self._train_product(x)
        else:
            y = self._weight_product(x)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def _cached(self, name: str, build, sources=None):
        """``build()``, cached under ``name`` (training and fast paths only, never while tracing).

        With ``sources`` (tensors the result was computed from), the entry is rebuilt when one of them changes
        storage or version (an optimiser step, ``load_state_dict``): for derived copies. Without, it lives until
        the module's tensors are moved or replaced (``.to()``, ``load_state_dict``, a new parameter): for views of
        the parameters' memory, which see in-place updates by themselves and cost nothing to check.
        """
        cache = self.__dict__.setdefault("_derived_cache", {})
        key = None if sources is None else tuple((t.data_ptr(), t._version) for t in sources)
        entry = cache.get(name)
        if entry is None or entry[0] != key:
            # the storages are held so that no other tensor can reuse their addresses while the entry lives
            entry = cache[name] = (key, build(), [t.untyped_storage() for t in sources or ()])
        return entry[1]

    def _clear_cache(self) -> None:
        self.__dict__.pop("_derived_cache", None)

    def _apply(self, fn, *args, **kwargs):
        self._clear_cache()
        return super()._apply(fn, *args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs):
        self._clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def register_parameter(self, name, param) -> None:
        self._clear_cache()
        super().register_parameter(name, param)

    def register_buffer(self, name, tensor, persistent: bool = True) -> None:
        self._clear_cache()
        super().register_buffer(name, tensor, persistent)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_derived_cache", None)  # deep copies and pickles rebuild it
        return state

    @classmethod
    def from_matrix(cls, M: StructuredMatrix, bias=None, *, device=None, dtype=torch.float32) -> "StructuredLinear":
        """A layer computing ``x @ M.to_dense().T + bias``; parameters in ``dtype`` (float32 by default).

        ``bias`` is None (no bias), or an array/tensor of shape ``(out_features,)``.
        """
        if not isinstance(M, StructuredMatrix):
            raise TypeError(f"M must be a StructuredMatrix; got {type(M).__name__}")
        if getattr(cls, "family", None) != M.family:
            raise TypeError(f"{cls.__name__} holds family {cls.family!r}; got a {M.family!r} matrix {M!r}")
        layer = cls._build_from_matrix(M, bias is not None, device, dtype)
        if bias is not None:
            b = torch.as_tensor(np.asarray(bias.detach().cpu() if torch.is_tensor(bias) else bias))
            if b.is_complex() or not (b.is_floating_point() or b.dtype in (torch.int32, torch.int64)):
                raise TypeError(f"bias must hold real numbers; got dtype {b.dtype}")
            if tuple(b.shape) != (M.shape[0],):
                raise ValueError(f"bias must have shape ({M.shape[0]},) to match M of shape {M.shape}; got {tuple(b.shape)}")
            with torch.no_grad():
                layer.bias.copy_(b.to(layer.bias.dtype))
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, budget, **options) -> "StructuredLinear":
        """Fit ``linear.weight`` under ``budget`` with this layer's family; copy the bias, device and dtype."""
        from structmat.approximators import approximate
        from structmat.metrics import relative_error

        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear; got {type(linear).__name__}")
        weight = linear.weight.detach().cpu().double().numpy()
        M = approximate(weight, cls.family, budget, **options)
        layer = cls.from_matrix(M, linear.bias, device=linear.weight.device, dtype=linear.weight.dtype)
        layer.fit_error = relative_error(weight, M)
        return layer

    def dense_weight(self) -> torch.Tensor:
        """The weight as a dense ``(out_features, in_features)`` tensor, through autograd (for checks)."""
        eye = torch.eye(self.in_features, device=self._any_param().device, dtype=self._any_param().dtype)
        return self._weight_product(eye).T

    def _any_param(self) -> torch.Tensor:
        for name, p in self._parameters.items():  # direct parameters first: no generator over submodules
            if name != "bias" and p is not None:
                return p
        return next(p for name, p in self.named_parameters() if name != "bias")

    def extra_repr(self) -> str:
        share = self.nparams / (self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"nparams={self.nparams} ({100 * share:.1f}%)"
            + (f", {self._structure_repr()}" if self._structure_repr() else "")
        )

    def _structure_repr(self) -> str:
        return ""


def layer_from_matrix(M: StructuredMatrix, bias=None, **kwargs) -> StructuredLinear:
    """The family's layer built from ``M`` (looks the layer class up in the registry)."""
    from structmat.families import get_family

    return get_family(M.family).layer_class().from_matrix(M, bias, **kwargs)
