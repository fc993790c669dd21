"""C^alpha images: two regular backgrounds separated by a regular contour (docs/SCIENCE.md, Data).

As the authors build them (their synthetic_data_generators.py): contour C(t) = IFFT(|k|^-(alpha +
contour_offset) . FFT(c)) with c uniform white noise on [-1, 1] over the columns (gain 1 at k = 0), not
normalised, times image_size, plus the middle row, rounded to whole rows; backgrounds
B_i = IFFT2(|k|^-beta . FFT2(b_i)), one rescaled to [u, 1] and the other to [0, u'] with u, u' ~ U(0, 1)
(the bright one on a random side); hard mask M = 1{row >= C(column)} averaged by a box_blur x box_blur
box filter (authors: 2 x 2); x = M B_1 + (1 - M) B_2, kept as floats. The optimal denoiser's PSNR slope at
small noise is alpha/(alpha+1). With contour_offset = 0 (the authors' construction) the contour's power
spectrum decays as |k|^(-2 alpha); contour_offset = 0.5 makes the contour's Hoelder regularity exactly alpha.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from gdm.data.synthetic.spectral import power_law_noise

DEFAULTS = {
    "alpha": 2.0,  # regularity of the contour (spectral exponent of its Fourier amplitudes)
    "beta": None,  # regularity of the two backgrounds; None means beta = alpha
    "contour_offset": 0.0,  # added to alpha in the contour's exponent (0.5 gives Hoelder regularity alpha)
    # None: the authors' unnormalised contour; a number: its height's std, as a fraction of image_size
    "contour_std": None,
    "box_blur": 2,  # side of the box filter that averages the hard mask, pixels (authors: 2; 1 keeps the hard edge)
}


def contour_signal(rng: np.random.Generator, count: int, size: int, params: dict) -> np.ndarray:
    """[count, size] contour heights in pixels before rounding: a power-law random function around the middle row."""
    exponent = float(params["alpha"]) + float(params["contour_offset"])
    if params["contour_std"] is not None:
        return size / 2 + float(params["contour_std"]) * size * power_law_noise(rng, count, (size,), exponent)
    frequency = np.abs(np.fft.fftfreq(size) * size)
    gain = np.ones(size)
    gain[frequency > 0] = frequency[frequency > 0] ** -exponent  # |k|^-exponent, and 1 at k = 0 (authors')
    white = rng.uniform(-1.0, 1.0, (count, size))
    return size // 2 + size * np.real(np.fft.ifft(np.fft.fft(white, axis=1) * gain, axis=1))


def contours(rng: np.random.Generator, count: int, size: int, params: dict) -> np.ndarray:
    """[count, size] contour heights rounded to whole rows, within [0, size] (authors: rounded, not clipped)."""
    return np.clip(np.round(contour_signal(rng, count, size, params)), 0, size)


def edge_mask(heights: np.ndarray, size: int, box: int) -> np.ndarray:
    """Mask [N, size, size]: 1{row >= C(column)}, averaged over a box x box window (the authors' blur).

    The window of pixel i spans i - box//2 … i - box//2 + box - 1 on each axis, mirrored at the border,
    as the authors' reflect-padded convolution cropped to size.
    """
    mask = (np.arange(size)[None, :, None] >= heights[:, None, :]).astype(np.float64)
    if box <= 1:
        return mask
    return uniform_filter(mask, size=(1, box, box), mode="mirror")


def backgrounds(rng: np.random.Generator, count: int, size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Two power-law backgrounds per image: one rescaled to [u, 1], the other to [0, u'], u, u' ~ U(0, 1),
    the bright one on a random side of the contour (the authors' ranges: the two sides may overlap)."""
    fields = power_law_noise(rng, 2 * count, (size, size), beta).reshape(2, count, size, size)
    lo, hi = fields.min(axis=(2, 3), keepdims=True), fields.max(axis=(2, 3), keepdims=True)
    unit = (fields - lo) / np.maximum(hi - lo, 1e-12)
    u, u_dark = (rng.uniform(0.0, 1.0, count)[:, None, None] for _ in range(2))
    bright, dark = u + (1.0 - u) * unit[0], u_dark * unit[1]
    swap = rng.random(count) < 0.5
    return np.where(swap[:, None, None], bright, dark), np.where(swap[:, None, None], dark, bright)


def generate(rng: np.random.Generator, count: int, size: int, params: dict) -> tuple[np.ndarray, None]:
    """`count` C^alpha images (float [N, size, size] in [0, 1]); no finite parameter vector."""
    beta = params["alpha"] if params["beta"] is None else params["beta"]
    mask = edge_mask(contours(rng, count, size, params), size, int(params["box_blur"]))
    below, above = backgrounds(rng, count, size, float(beta))
    return mask * below + (1.0 - mask) * above, None
