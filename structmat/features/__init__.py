"""Run a pretrained backbone once over a dataset, cache the features that feed its head, read them back.

>>> from structmat.features import efficientnet_lite0, mnist5k_dataset, extract_features   # doctest: +SKIP
>>> cache = extract_features(efficientnet_lite0(96), mnist5k_dataset(), "cache/lite0-mnist")  # doctest: +SKIP
>>> cache.features.shape, cache.logits.shape                                                 # doctest: +SKIP
((5000, 1280), (5000, 1000))

Imports torch (``import structmat`` alone does not).
"""

from structmat.features.backbones import (
    BACKBONE_SPECS, Backbone, backbone_from_module, efficientnet_lite0, load_backbone, torchvision_backbone,
)
from structmat.features.cache import CacheMismatchError, ChunkedArray, FeatureCache, FeatureCacheError
from structmat.features.datasets import (
    DATASET_SPECS, ArrayDataset, ImageFolderDataset, digits_dataset, idx_dataset, limit_dataset, load_dataset,
    mnist5k_dataset, read_idx,
)
from structmat.features.extract import FEATURE_DTYPES, cache_key, extract_features
from structmat.features.transforms import ImageTransform

__all__ = [
    "Backbone", "backbone_from_module", "efficientnet_lite0", "torchvision_backbone", "load_backbone",
    "BACKBONE_SPECS", "ArrayDataset", "ImageFolderDataset", "read_idx", "idx_dataset", "digits_dataset",
    "mnist5k_dataset", "load_dataset", "limit_dataset", "DATASET_SPECS", "ImageTransform", "FeatureCache", "ChunkedArray",
    "FeatureCacheError", "CacheMismatchError", "extract_features", "cache_key", "FEATURE_DTYPES",
]
