"""Families derived from another: a fixed pixel shuffle (destroys geometry) and positive rescaling (1-D)."""

from __future__ import annotations

import numpy as np


def pixel_permutation(size: int, seed: int) -> np.ndarray:
    """The one fixed permutation of size*size pixel positions used for every image of a shuffled family."""
    return np.random.default_rng(seed).permutation(size * size)


def shuffle_pixels(images: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Apply the same pixel permutation to every image of [N, H, W] (any dtype)."""
    count, height, width = images.shape
    return images.reshape(count, height * width)[:, permutation].reshape(count, height, width)


def rescale(image: np.ndarray, rng: np.random.Generator, count: int, factors: tuple[float, float]):
    """`count` copies a_i . image with a_i ~ U(factors): a 1-D manifold (a ray) of images. Returns images, a."""
    scales = rng.uniform(float(factors[0]), float(factors[1]), count)
    return np.clip(scales[:, None, None] * image[None].astype(np.float64), 0.0, 1.0), scales[:, None]
