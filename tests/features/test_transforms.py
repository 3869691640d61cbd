import pytest
import torch

from structmat.features import ImageTransform


def test_resize_repeat_and_normalise():
    transform = ImageTransform(8, channels=3, mean=127.0, std=128.0)
    grey = torch.full((2, 1, 4, 4), 255.0)
    out = transform(grey)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, 1.0))  # (255 - 127) / 128
    colour = ImageTransform(4, channels=1)(torch.stack([torch.zeros(3, 16, 16), torch.full((3, 16, 16), 90.0)]))
    assert colour.shape == (2, 1, 4, 4) and torch.allclose(colour[1], torch.full((1, 4, 4), 90.0))


def test_per_channel_statistics_and_rgba():
    transform = ImageTransform(2, mean=(10.0, 20.0, 30.0), std=(1.0, 2.0, 5.0))
    rgba = torch.full((1, 4, 2, 2), 40.0)
    out = transform(rgba)
    assert out[0, :, 0, 0].tolist() == [30.0, 10.0, 2.0]


def test_collate_mixed_sizes_and_channels():
    transform = ImageTransform(6, channels=3)
    items = [(torch.zeros(1, 4, 4), 1), (torch.ones(3, 10, 7), 2)]
    images, labels = transform.collate(items)
    assert images.shape == (2, 3, 6, 6) and labels.tolist() == [1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, "image_size"), ({"image_size": 8, "channels": 2}, "channels"),
    ({"image_size": 8, "mean": (1.0, 2.0)}, "mean must hold 1 or 3"), ({"image_size": 8, "std": 0.0}, "positive"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageTransform(**kwargs)


def test_bad_batch():
    with pytest.raises(ValueError, match="batch tensor"):
        ImageTransform(8)(torch.zeros(3, 8, 8))
