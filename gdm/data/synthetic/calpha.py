"""C^alpha images: two regular backgrounds separated by a regular contour (SCIENCE.md, Data).

Contour C(t) = IFFT(|omega|^-(alpha + contour_offset) . FFT(c)), c white noise over the columns; backgrounds
B_i = IFFT2(|omega|^-beta . FFT2(b_i)); mask M = 1{row > C(column)}; x = M B_1 + (1 - M) B_2. Each background
is mapped to its own random intensity range (one side darker than the other), and the mask edge is
anti-aliased and optionally blurred. The optimal denoiser's PSNR slope at small noise is alpha/(alpha+1).
With contour_offset = 0 (the authors' construction) the contour's power spectrum decays as |omega|^(-2 alpha);
contour_offset = 0.5 makes the contour's Hoelder regularity exactly alpha.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from gdm.data.synthetic.spectral import power_law_noise

DEFAULTS = {
    "alpha": 2.0,  # regularity of the contour (spectral exponent of its Fourier amplitudes)
    "beta": None,  # regularity of the two backgrounds; None means beta = alpha
    "contour_offset": 0.0,  # added to alpha in the contour's exponent (0.5 gives Hoelder regularity alpha)
    "contour_std": 0.1,  # standard deviation of the contour's height, as a fraction of image_size
    "blur": 0.0,  # std of a Gaussian blur across the edge, pixels (0: anti-aliased step only)
}


def contours(rng: np.random.Generator, count: int, size: int, params: dict) -> np.ndarray:
    """[count, size] contour heights in pixels: a power-law random function centred on the middle row."""
    exponent = float(params["alpha"]) + float(params["contour_offset"])
    return size / 2 + float(params["contour_std"]) * size * power_law_noise(rng, count, (size,), exponent)


def edge_mask(heights: np.ndarray, size: int, blur: float) -> np.ndarray:
    """Soft mask [N, size, size]: coverage of {row > C(column)} per pixel, blurred along columns if blur > 0."""
    rows = np.arange(size)[None, :, None] + 0.5
    mask = np.clip(rows - heights[:, None, :] + 0.5, 0.0, 1.0)
    return gaussian_filter1d(mask, blur, axis=1, mode="nearest") if blur > 0 else mask


def backgrounds(rng: np.random.Generator, count: int, size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Two power-law backgrounds per image, each mapped to a random range: one in [0, 1/2], one in [1/2, 1]."""
    fields = power_law_noise(rng, 2 * count, (size, size), beta).reshape(2, count, size, size)
    lo, hi = fields.min(axis=(2, 3), keepdims=True), fields.max(axis=(2, 3), keepdims=True)
    unit = (fields - lo) / np.maximum(hi - lo, 1e-12)
    ends = np.sort(rng.uniform(0.0, 0.5, (2, count, 2)), axis=2)  # [side, image, (low, high)]
    ends[1] += 0.5  # second side brighter ...
    ranged = ends[..., 0, None, None] + unit * (ends[..., 1] - ends[..., 0])[..., None, None]
    swap = rng.random(count) < 0.5  # ... on a random side of the contour
    return np.where(swap[:, None, None], ranged[1], ranged[0]), np.where(swap[:, None, None], ranged[0], ranged[1])


def generate(rng: np.random.Generator, count: int, size: int, params: dict) -> tuple[np.ndarray, None]:
    """`count` C^alpha images (float [N, size, size] in [0, 1]); no finite parameter vector."""
    beta = params["alpha"] if params["beta"] is None else params["beta"]
    mask = edge_mask(contours(rng, count, size, params), size, float(params["blur"]))
    below, above = backgrounds(rng, count, size, float(beta))
    return mask * below + (1.0 - mask) * above, None
