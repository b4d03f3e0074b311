"""Per-example image preprocessing in NumPy (runs in grain worker threads).

Images arrive as ``uint8`` arrays of shape ``(H, W, C)`` and leave as normalised
``float32`` arrays. Random transforms take an explicit ``numpy.random.Generator``
so that grain can derive it from the example's index, which makes every epoch of
augmentation reproducible and resumable.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def normalize(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Scales a ``uint8`` image to ``[0, 1]`` and standardises each channel.

    Args:
      image: ``(H, W, C)`` array with values in ``[0, 255]``.
      mean: per-channel mean of the ``[0, 1]``-scaled data.
      std: per-channel standard deviation of the ``[0, 1]``-scaled data.

    Returns:
      ``float32`` array of the same shape.
    """
    scaled = image.astype(np.float32) / np.float32(255.0)
    return (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def pad_crop_flip(image: np.ndarray, rng: np.random.Generator, *, pad: int = 4) -> np.ndarray:
    """CIFAR augmentation: zero-pad by ``pad``, crop back at a random offset, flip half the time.

    Args:
      image: ``(H, W, C)`` array.
      rng: source of randomness.
      pad: padding on every side, in pixels.

    Returns:
      Array of the input's shape and dtype.
    """
    height, width = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=2)
    crop = padded[top : top + height, left : left + width]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking, like torchvision's default)."""
    channels = image.shape[2]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.BILINEAR))
    return out[..., None] if channels == 1 else out


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """ImageNet training crop (torchvision's ``RandomResizedCrop``) followed by a random flip.

    Samples an area fraction from ``scale`` and a log-uniform aspect ratio from
    ``ratio``; after ten failed tries it falls back to the largest central crop
    whose aspect ratio lies in ``ratio``.

    Args:
      image: ``(H, W, C)`` ``uint8`` array.
      rng: source of randomness.
      size: side of the square output.
      scale: range of the crop's area as a fraction of the image's.
      ratio: range of the crop's width / height.

    Returns:
      ``(size, size, C)`` ``uint8`` array.
    """
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            break
    else:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            crop_w, crop_h = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            crop_h, crop_w = height, round(height * ratio[1])
        else:
            crop_w, crop_h = width, height
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    out = _resize(image[top : top + crop_h, left : left + crop_w], size, size)
    return out[:, ::-1] if rng.random() < 0.5 else out


def resize_center_crop(image: np.ndarray, *, size: int, resize: int) -> np.ndarray:
    """ImageNet evaluation crop: resize the shorter side to ``resize``, then crop the centre.

    Args:
      image: ``(H, W, C)`` ``uint8`` array.
      size: side of the square output (224 for the standard protocol).
      resize: length of the shorter side after resizing (256 for the standard protocol).

    Returns:
      ``(size, size, C)`` ``uint8`` array.
    """
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = resize, max(resize, round(width * resize / height))
    else:
        new_h, new_w = max(resize, round(height * resize / width)), resize
    resized = _resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]
