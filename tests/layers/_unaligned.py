"""The check both compiled-kernel test modules share: inputs that do not start on a 64-byte boundary."""

import numpy as np
import torch


def assert_unaligned_inputs_match(layer, M, rows: int, offset: int, rng) -> None:
    """``layer`` on ``rows`` inputs starting ``offset`` floats into a buffer equals the dense product plus the bias,
    and equals itself on an aligned copy."""
    n = M.shape[1]
    storage = torch.from_numpy(rng.standard_normal(rows * n + 16).astype(np.float32))
    x = storage[offset:offset + rows * n].view(rows, n)
    expected = x.double().numpy() @ M.to_dense().T + layer.bias.detach().double().numpy()
    with torch.no_grad():
        np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-5 * np.abs(expected).max())
        assert torch.equal(layer(x), layer(x.clone()))
