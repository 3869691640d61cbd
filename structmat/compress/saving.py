"""Save a compressed model's structured layers and rebuild them into a freshly built base model, without pickle.

The file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: flat named arrays plus string
metadata, read without running any code. It holds, per structured layer ``NAME``:

- ``NAME::<array>``: the arrays of the layer's :class:`~structmat.StructuredMatrix` (as
  ``StructuredMatrix.save`` writes them; float arrays in float32 when that is exact, which it is for a float32
  layer), and ``NAME::bias``;
- ``NAME::state::<key>``: the layer's own tensors, only for a layer that its matrix does not rebuild bit for bit;

and one metadata entry ``structmat`` with a JSON description: format and version, and per layer its name, kind
(``linear`` or ``conv1x1`` with stride and padding), family, shape, the matrix's meta and the parameter dtype.
The remaining weights of the model are not stored by default: their SHA-256 is, and :func:`load_compressed`
refuses a base model whose other weights differ (``strict=False`` accepts it). With
``include_other_weights=True`` they are stored as ``__other__::<key>`` and loaded too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from structmat.matrices.io import StructmatFileError, atomic_write

__all__ = ["save_compressed", "load_compressed", "COMPRESSED_FORMAT", "COMPRESSED_FORMAT_VERSION"]

COMPRESSED_FORMAT = "structmat-compressed-model"
COMPRESSED_FORMAT_VERSION = 1
_SEP = "::"


def _structured(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from structmat.compress.selection import structured_layers

    return structured_layers(model)


def _inner(module: nn.Module):
    from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

    return module.linear if isinstance(module, StructuredPointwiseConv2d) else module


def _other_state(model: nn.Module, excluded: list[str]) -> dict[str, torch.Tensor]:
    prefixes = tuple(f"{name}." for name in excluded)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}


def _fingerprint(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def _compact(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype == np.float64:
        single = array.astype(np.float32)
        if np.array_equal(single.astype(np.float64), array):
            return single
    return array


def save_compressed(model: nn.Module, path, *, include_other_weights: bool = False) -> Path:
    """Write the structured layers of ``model`` to ``path`` (a ``.safetensors`` file; atomic; no pickle).

    Parameters
    ----------
    model : nn.Module
        A model with structured layers (from :func:`~structmat.compress.compress_model` or ``replace_linear``).
    path : str or Path
    include_other_weights : bool
        Also store every other weight of the model (then :func:`load_compressed` needs only the architecture).

    Returns
    -------
    Path
    """
    from safetensors.numpy import save

    from structmat.layers.base import layer_from_matrix
    from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

    layers = _structured(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no structured layers to save; compress it first")
    tensors, described = {}, []
    for name, module in layers:
        layer = _inner(module)
        M = layer.to_matrix()
        arrays = {k: _compact(np.asarray(v)) for k, v in M._arrays().items()}
        meta = {"family": M.family, "shape": list(M.shape), "dtype": str(M.dtype), **M._meta()}
        dtype = next(p for key, p in layer.named_parameters() if key != "bias").dtype
        rebuilt = layer_from_matrix(M, None if layer.bias is None else layer.bias.detach(), dtype=dtype)
        own, again = layer.state_dict(), rebuilt.state_dict()
        exact = own.keys() == again.keys() and all(
            own[k].dtype == again[k].dtype and own[k].shape == again[k].shape and torch.equal(own[k].cpu(), again[k])
            for k in own)
        for key, array in arrays.items():
            tensors[f"{name}{_SEP}{key}"] = array
        if layer.bias is not None:
            tensors[f"{name}{_SEP}bias"] = layer.bias.detach().cpu().numpy().copy()
        if not exact:
            for key, value in own.items():
                tensors[f"{name}{_SEP}state{_SEP}{key}"] = value.detach().cpu().numpy().copy()
        entry = {"name": name, "family": M.family, "in_features": layer.in_features,
                 "out_features": layer.out_features, "matrix": meta, "arrays": sorted(arrays),
                 "bias": layer.bias is not None, "dtype": str(dtype).replace("torch.", ""), "exact": exact,
                 "kind": "conv1x1" if isinstance(module, StructuredPointwiseConv2d) else "linear"}
        if isinstance(module, StructuredPointwiseConv2d):
            entry.update(stride=list(module.stride), padding=list(module.padding))
        described.append(entry)
    other = _other_state(model, [name for name, _ in layers])
    if include_other_weights:
        for key, value in other.items():
            tensors[f"__other__{_SEP}{key}"] = value.detach().cpu().numpy().copy()
    description = {"format": COMPRESSED_FORMAT, "format_version": COMPRESSED_FORMAT_VERSION,
                   "model_class": type(model).__name__, "layers": described,
                   "other_weights": "included" if include_other_weights else "fingerprint",
                   "other_weights_sha256": _fingerprint(other)}
    data = save(tensors, metadata={"structmat": json.dumps(description)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    return path


def _read(path: Path) -> tuple[dict, dict]:
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no such compressed-model file: {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for foreign or truncated files
        raise StructmatFileError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}); "
                                 "expected a file written by structmat.compress.save_compressed") from exc
    try:
        description = json.loads(metadata["structmat"])
    except (KeyError, ValueError) as exc:
        raise StructmatFileError(f"{path} is a safetensors file but not a structmat compressed model (no "
                                 "'structmat' metadata entry)") from exc
    if not isinstance(description, dict) or description.get("format") != COMPRESSED_FORMAT:
        raise StructmatFileError(f"{path}: metadata format is not {COMPRESSED_FORMAT!r}")
    version = description.get("format_version")
    if not isinstance(version, int) or version > COMPRESSED_FORMAT_VERSION:
        raise StructmatFileError(f"{path} has format_version {version!r}; this structmat reads versions <= "
                                 f"{COMPRESSED_FORMAT_VERSION}")
    return description, tensors


def _rebuild_layer(path: Path, entry: dict, tensors: dict):
    from structmat.families import FAMILIES
    from structmat.layers.base import layer_from_matrix

    name = entry["name"]
    family = FAMILIES.get(entry["family"])
    if family is None:
        raise StructmatFileError(f"{path}: layer {name!r} has family {entry['family']!r}, unknown to this structmat; "
                                 f"known: {sorted(FAMILIES)}")
    try:
        arrays = {key: tensors[f"{name}{_SEP}{key}"] for key in entry["arrays"]}
        M = family.matrix_class._from_arrays(arrays, entry["matrix"])
        bias = tensors[f"{name}{_SEP}bias"] if entry["bias"] else None
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise StructmatFileError(f"{path}: the arrays of layer {name!r} do not form its {entry['family']} matrix "
                                 f"({type(exc).__name__}: {exc})") from exc
    layer = layer_from_matrix(M, bias, dtype=getattr(torch, entry["dtype"]))
    if not entry["exact"]:
        prefix = f"{name}{_SEP}state{_SEP}"
        state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)}
        try:
            layer.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise StructmatFileError(f"{path}: stored tensors of layer {name!r} do not fit it ({exc})") from exc
    return layer


def load_compressed(path, model: nn.Module, *, strict: bool = True) -> nn.Module:
    """Rebuild the structured layers saved at ``path`` into ``model`` (a freshly built base model), in place.

    What comes back is an ordinary module tree: the registry's layers (and
    :class:`~structmat.layers.pointwise_conv.StructuredPointwiseConv2d` around those of 1×1 convolutions) where
    the saved model had them, everything else the base model's.

    Parameters
    ----------
    path : str or Path
    model : nn.Module
        The same architecture as the saved model, with its original dense layers (and weights, unless the file
        includes them).
    strict : bool
        Refuse a base model whose other weights differ from the saved model's.

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    StructmatFileError
        a foreign, truncated or newer file, or one that does not match ``model`` (names, shapes, other weights).
    """
    from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

    path = Path(path)
    description, tensors = _read(path)
    modules = dict(model.named_modules())
    for entry in description["layers"]:
        target = modules.get(entry["name"])
        if target is None:
            raise StructmatFileError(f"{path} does not match the model: it has no module {entry['name']!r} "
                                     f"(the file was saved from a {description.get('model_class')})")
        weight = getattr(target, "weight", None)
        shape = (entry["out_features"], entry["in_features"])
        if weight is None or tuple(weight.shape[:2]) != shape:
            found = None if weight is None else tuple(weight.shape)
            raise StructmatFileError(f"{path} does not match the model: layer {entry['name']!r} is {shape[0]}x"
                                     f"{shape[1]} in the file but the model's {type(target).__name__} has weight "
                                     f"shape {found}")
    names = [entry["name"] for entry in description["layers"]]
    if description.get("other_weights") == "included":
        prefix = f"__other__{_SEP}"
        other = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(_other_state(model, names)) - set(other))
        if missing:
            raise StructmatFileError(f"{path} does not match the model: weights {missing[:5]} are not in the file")
        model.load_state_dict(other, strict=False)
    elif strict and _fingerprint(_other_state(model, names)) != description.get("other_weights_sha256"):
        raise StructmatFileError(f"{path} does not match the model: its other (non-structured) weights differ from "
                                 "those the file was saved with (another checkpoint or dtype?); pass strict=False "
                                 "to load anyway, or save with include_other_weights=True")
    for entry in description["layers"]:
        target = modules[entry["name"]]
        layer = _rebuild_layer(path, entry, tensors)
        layer = layer.to(device=target.weight.device)
        if entry["kind"] == "conv1x1":
            layer = StructuredPointwiseConv2d(layer, tuple(entry["stride"]), tuple(entry["padding"]))
        parent_name, _, attr = entry["name"].rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, layer)
    return model
