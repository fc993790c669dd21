"""Pixel storage convention: images live in [0, 1] as floats and are stored as uint8 = round(255 x)."""

from __future__ import annotations

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise float images in [0, 1] (clipped) to uint8 by rounding to the nearest of 256 levels."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    """Inverse of `to_uint8` up to quantisation: uint8 -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0
