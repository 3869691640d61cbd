import json

import numpy as np
import pytest
import torch

from structmat.compress import CompressionConfig, compress_model
from structmat.compress.calibration import attention_mask_rows
from structmat.compress.selection import structured_layers
from structmat.layers.pointwise_conv import StructuredPointwiseConv2d

from tests.compress.conftest import token_batches

FAMILIES = ["lowrank", "sparse", "dense"]


def settings(cache, **more):
    """Small and quick: three families, four grid points, fits in this process."""
    return {"families": FAMILIES, "cache_dir": cache, "max_slowdown": None, "measure_latency": False,
            "progress": False, "row_mask": attention_mask_rows, "fit_time_limit": None, "grid": (0.15, 0.3, 0.5, 0.7),
            **more}


def relative_change(a, b):
    return float((a - b).norm() / b.norm())


def test_global_allocation_meets_the_budget_and_beats_uniform(tiny_transformer, curve_cache, one_torch_thread):
    calibration, held_out = token_batches(6, seed=0), token_batches(3, seed=1)
    options = settings(curve_cache, weighting="relative")
    small, report = compress_model(tiny_transformer, 0.4, calibration, where="blocks.1.*", **options)
    assert report.nparams <= int(0.4 * report.dense_nparams)
    assert sum(m.nparams for _, m in structured_layers(small)) + sum(
        r.nparams for r in report.layers if r.family == "dense") == report.nparams
    assert len(report.layers) == 6 and small is not tiny_transformer
    _, uniform = compress_model(tiny_transformer, 0.4, calibration, where="blocks.1.*", allocation="uniform",
                                **options)
    assert len({r.family for r in uniform.layers}) == 1
    assert uniform.nparams <= int(0.4 * uniform.dense_nparams)

    def weighted(rep):
        return sum(r.output_error ** 2 for r in rep.layers)

    assert weighted(report) < weighted(uniform)
    with torch.no_grad():
        dense = [tiny_transformer(**b) for b in held_out]
        error = np.mean([relative_change(small(**b), d) for b, d in zip(held_out, dense)])
    assert error < 0.3


def test_a_second_budget_reuses_the_cached_curves(tiny_transformer, curve_cache, one_torch_thread, monkeypatch):
    calibration = token_batches(4, seed=0)
    compress_model(tiny_transformer, 0.5, calibration, where="blocks.0.*", **settings(curve_cache))
    import structmat.compress.curves as curves

    def no_fits(*args, **kwargs):
        raise AssertionError("a cached point was fitted again")

    monkeypatch.setattr(curves, "run_task", no_fits)
    _, report = compress_model(tiny_transformer, 0.3, calibration, where="blocks.0.*", **settings(curve_cache))
    assert report.nparams <= int(0.3 * report.dense_nparams)


def test_pointwise_convolutions_keep_their_interface(tiny_convnet, curve_cache, one_torch_thread):
    images = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    small, report = compress_model(tiny_convnet, 0.6, images, **settings(curve_cache, row_mask=None,
                                                                       measure_latency=True))
    kinds = {r.name: r.kind for r in report.layers}
    assert kinds == {"expand": "conv1x1", "project": "conv1x1", "fc": "linear"}
    for row in report.layers:
        module = small.get_submodule(row.name)
        if row.family != "dense" and row.kind == "conv1x1":
            assert isinstance(module, StructuredPointwiseConv2d)
        assert row.latency_32_ms > 0 and row.dense_latency_1_ms > 0
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert small(x).shape == tiny_convnet(x).shape


def test_bytes_measure_counts_indices(tiny_transformer, curve_cache, one_torch_thread):
    _, report = compress_model(tiny_transformer, 0.5, token_batches(3, seed=0), where="blocks.1.[qk]*",
                               **settings(curve_cache, measure="bytes"))
    assert report.nbytes <= int(0.5 * report.dense_nbytes)


def test_settings_are_checked_before_any_work(tiny_transformer, curve_cache):
    calibration = token_batches(1, seed=0)
    with pytest.raises(ValueError, match=r"unknown option \['rnak'\] for family 'monarch'; accepted: .*'rank'"):
        compress_model(tiny_transformer, 0.5, calibration, families=["lowrank", "monarch"],
                       family_options={"monarch": {"rnak": 2}}, cache_dir=curve_cache)
    with pytest.raises(TypeError, match="unknown compression settings \\['grid_points'\\]"):
        compress_model(tiny_transformer, 0.5, calibration, grid_points=3)
    with pytest.raises(ValueError, match="unknown family 'lowrnk'"):
        compress_model(tiny_transformer, 0.5, calibration, families=["lowrnk"])
    with pytest.raises(ValueError, match="allocation must be one of"):
        compress_model(tiny_transformer, 0.5, calibration, allocation="greedy")
    with pytest.raises(ValueError, match="budget must be an int >= 1 or a float in \\(0, 1\\]; got 1.5"):
        compress_model(tiny_transformer, 1.5, calibration, **settings(curve_cache))
    assert not curve_cache.exists()


def test_rank_multiples_round_low_rank(tiny_transformer, curve_cache, one_torch_thread):
    small, report = compress_model(tiny_transformer, 0.5, token_batches(3, seed=0), where="blocks.0.*",
                                   **settings(curve_cache, rank_multiple=4, allocation="uniform",
                                              uniform_family="lowrank"))
    ranks = [m.rank for _, m in structured_layers(small)]
    assert ranks and all(r % 4 == 0 for r in ranks)


class LongNames(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a_rather_long_submodule_name_for_a_linear_layer = torch.nn.Linear(24, 24)
        self.short = torch.nn.Linear(24, 8)

    def forward(self, x):
        return self.short(self.a_rather_long_submodule_name_for_a_linear_layer(x))


def test_report_outputs(curve_cache, tmp_path, one_torch_thread):
    torch.manual_seed(0)
    model = LongNames()
    _, report = compress_model(model, 0.5, [torch.randn(32, 24)],
                               **settings(curve_cache, measure_latency=True, row_mask=None))
    lines = report.to_text().splitlines()
    assert lines[1].startswith("a_rather_long_submodule_name_for_a_linear_layer linear ")
    assert lines[2].startswith("short") and lines[1].index(" linear") == lines[2].index(" linear")  # aligned
    paths = report.write(tmp_path, "report")
    data = json.loads(paths[2].read_text())
    assert data["totals"]["nparams"] == report.nparams and len(data["layers"]) == len(report.layers) == 2
    assert paths[1].read_text().splitlines()[0].startswith("name,kind,family")
    assert paths[3].stat().st_size > 1000
    from structmat.benchmarks.speed_labels import speed_labels

    structured = {layer.family for layer in report.layers} - {"dense"}
    assert structured and set(data["speed_labels"]) == structured & set(speed_labels())  # labels of the families used
    for family in data["speed_labels"]:
        assert f"{family} C " in report.to_text()


def test_default_config_is_documented_and_valid():
    config = CompressionConfig().check()
    assert config.max_slowdown == 1.0 and config.measure == "params" and config.grid[0] > 0


def test_a_second_call_skips_the_calibration_pass(tiny_transformer, curve_cache, one_torch_thread, monkeypatch):
    calibration = token_batches(2, seed=0)
    compress_model(tiny_transformer, 0.5, calibration, where="blocks.0.query", **settings(curve_cache))
    import structmat.compress.pipeline as pipeline

    monkeypatch.setattr(pipeline, "collect_statistics", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    compress_model(tiny_transformer, 0.3, calibration, where="blocks.0.query", **settings(curve_cache))
    other = token_batches(2, seed=5)
    with pytest.raises(AssertionError):  # other data: calibrated again
        compress_model(tiny_transformer, 0.3, other, where="blocks.0.query", **settings(curve_cache))


def test_sensitivity_weights_are_measured_per_layer(tiny_convnet, curve_cache, one_torch_thread):
    images = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    _, report = compress_model(tiny_convnet, 0.6, images, **settings(curve_cache, row_mask=None,
                                                                     weighting="sensitivity"))
    weights = report.settings["weights"]
    assert len(weights) == 3 and all(w > 0 for w in weights) and len(set(weights)) == 3


def test_curves_fitted_by_a_process_pool_are_the_serial_ones(tiny_convnet, tmp_path, one_torch_thread):
    images = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    files = []
    for jobs in (1, 2):
        cache = tmp_path / f"jobs{jobs}"
        compress_model(tiny_convnet, 0.5, images, **settings(cache, row_mask=None, jobs=jobs, grid=(0.3, 0.6)))
        rows = {}
        for path in sorted(cache.glob("*/curve.json")):
            rows[path.parent.name] = [{k: v for k, v in r.items() if k != "seconds"}
                                      for r in json.loads(path.read_text())]
        matrices = {p.relative_to(cache).as_posix(): p.read_bytes() for p in sorted(cache.glob("*/matrices/*.npz"))}
        files.append((rows, matrices))
    assert files[0][0] and files[0][1]
    assert files[0] == files[1]


@pytest.mark.parametrize("family", ["sparse", "lowrank"])
def test_uniform_allocation_keeps_a_byte_budget(tiny_transformer, curve_cache, one_torch_thread, family):
    calibration = token_batches(4, seed=0)
    _, report = compress_model(tiny_transformer, 0.4, calibration, where="blocks.0.*", allocation="uniform",
                               **settings(curve_cache, measure="bytes", uniform_family=family))
    assert {r.family for r in report.layers} == {family}
    assert report.nbytes <= int(0.4 * report.dense_nbytes)
    assert report.nbytes >= 0.3 * report.dense_nbytes    # the budget is used, not wasted
