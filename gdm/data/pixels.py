"""Pixel storage convention: images live in [0, 1]. Synthetic images and photo patches are stored as
float32 (`to_stored`), imported photos as uint8 = round(255 x) (`to_uint8`); `to_unit` reads either, and
`to_unit_into` writes the same values into a given float32 array (no temporaries: for loading a split in blocks)."""

from __future__ import annotations

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantise float images in [0, 1] (clipped) to uint8 by rounding to the nearest of 256 levels."""
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    """Inverse of `to_uint8` up to quantisation: uint8 -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def to_stored(images: np.ndarray) -> np.ndarray:
    """Float images clipped to [0, 1] as float32: stored without quantisation (no 58.9 dB PSNR ceiling)."""
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def to_unit(images: np.ndarray) -> np.ndarray:
    """Stored pixels as float32 in [0, 1]: uint8 are divided by 255, floats are taken as they are."""
    if images.dtype == np.uint8:
        return to_float(images)
    return np.asarray(images, dtype=np.float32)


def to_unit_into(stored: np.ndarray, out: np.ndarray) -> None:
    """`to_unit(stored)` written into `out` (float32, the same shape) with no array of its own: uint8 are cast in
    place and divided by float32 255, the operation `to_float` does, so the values are identical bit for bit."""
    out[...] = stored
    if stored.dtype == np.uint8:
        np.divide(out, np.float32(255.0), out=out)
