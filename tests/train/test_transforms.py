"""Per-example image transforms."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcpd.train import transforms


def _image(height: int, width: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_normalize_scales_then_standardises():
    image = np.full((2, 2, 3), 255, np.uint8)
    out = transforms.normalize(image, (0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [2.0, 1.0, 0.5])


def test_pad_crop_flip_is_a_shifted_window_of_the_padded_image():
    image = _image(32, 32)
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    windows = [padded[top : top + 32, left : left + 32] for top in range(9) for left in range(9)]
    rng = np.random.default_rng(1)
    crops = [transforms.pad_crop_flip(image, rng) for _ in range(20)]
    for crop in crops:
        assert crop.shape == image.shape and crop.dtype == np.uint8
        assert any(np.array_equal(crop, w) or np.array_equal(crop, w[:, ::-1]) for w in windows)
    assert len({crop.tobytes() for crop in crops}) > 10


@pytest.mark.parametrize("shape", [(10, 25), (47, 17), (375, 500), (300, 200)])
def test_imagenet_crops_have_the_requested_size(shape):
    image = _image(*shape)
    rng = np.random.default_rng(0)
    assert transforms.random_resized_crop(image, rng, size=224).shape == (224, 224, 3)
    assert transforms.resize_center_crop(image, size=224, resize=256).shape == (224, 224, 3)


def test_resize_center_crop_of_a_constant_image_is_constant():
    image = np.full((300, 400, 3), 7, np.uint8)
    np.testing.assert_array_equal(transforms.resize_center_crop(image, size=224, resize=256), 7)


def test_random_resized_crop_of_a_grayscale_image():
    out = transforms.random_resized_crop(_image(40, 30, 1), np.random.default_rng(0), size=16)
    assert out.shape == (16, 16, 1)
