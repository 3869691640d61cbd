import numpy as np
import torch
from torch import nn

from structmat.compress import compress_model
from structmat.compress.calibration import attention_mask_rows
from structmat.compress.selection import select_layers
from structmat.compress.sequential import (SequentialStatistics, asymmetric_error, call_groups, layer_target,
                                          sequential_statistics)

from tests.compress.conftest import token_batches


def test_layers_reading_one_tensor_form_one_group_in_call_order(tiny_transformer):
    layers = select_layers(tiny_transformer, "blocks.*")
    groups = call_groups(tiny_transformer, layers, token_batches(1, seed=0)[0])
    names = [[layers[i][0].removeprefix("blocks.") for i in group] for group in groups]
    assert names == [["0.query", "0.key", "0.value"], ["0.output"], ["0.intermediate"], ["0.out"],
                     ["1.query", "1.key", "1.value"], ["1.output"], ["1.intermediate"], ["1.out"]]


def test_the_target_and_the_error_follow_the_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6))
    Xc = X + 0.3 * rng.standard_normal((400, 6))
    W, M = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    stats = SequentialStatistics(6)
    stats.update(torch.from_numpy(X[:150]), torch.from_numpy(Xc[:150]))
    stats.update(torch.from_numpy(X[150:]), torch.from_numpy(Xc[150:]))
    direct = np.linalg.norm(X @ W.T - Xc @ M.T) / np.linalg.norm(X @ W.T)
    assert abs(asymmetric_error(W, M, stats) - direct) < 1e-10
    least_squares = np.linalg.lstsq(Xc, X @ W.T, rcond=None)[0].T
    assert np.allclose(layer_target(W, stats, ridge=0.0), least_squares, atol=1e-8)
    same = SequentialStatistics(6)
    same.update(torch.from_numpy(X), torch.from_numpy(X))
    assert np.allclose(layer_target(W, same, ridge=0.0), W, atol=1e-8)


def test_statistics_stop_at_the_layer_and_see_the_compressed_inputs(tiny_transformer):
    batches = token_batches(2, seed=0)
    compressed = __import__("copy").deepcopy(tiny_transformer)
    with torch.no_grad():
        compressed.blocks[0].out.weight.mul_(0.5)
    stats = sequential_statistics(tiny_transformer, compressed, ["blocks.1.query", "blocks.1.key"], batches,
                                  row_mask=attention_mask_rows)
    assert set(stats) == {"blocks.1.query", "blocks.1.key"}
    s = stats["blocks.1.query"]
    assert s.count == sum(int(b["attention_mask"].sum()) for b in batches)
    assert not np.allclose(s.dense.second_moment, s.compressed.second_moment)


def test_sequential_refit_lowers_the_models_output_error(one_torch_thread, curve_cache):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 8)).eval()
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(64, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
                   for _ in range(4)]
    options = {"families": ["lowrank"], "allocation": "uniform", "cache_dir": curve_cache, "max_slowdown": None,
               "measure_latency": False, "progress": False, "fit_time_limit": None, "grid": (0.3,)}
    plain, plain_report = compress_model(model, 0.3, calibration, **options)
    refit, report = compress_model(model, 0.3, calibration, sequential=True, **options)
    assert report.nparams <= plain_report.nparams
    assert [r.family for r in report.layers] == ["lowrank"] * 3
    # the first layer sees the dense inputs: the same fit
    assert abs(report.layers[0].output_error - plain_report.layers[0].output_error) < 1e-6

    def error(small):
        with torch.no_grad():
            return sum(float((small(x) - model(x)).pow(2).sum()) for x in calibration)

    assert error(refit) < 0.9 * error(plain)
