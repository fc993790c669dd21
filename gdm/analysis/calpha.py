"""C^α images: the small-noise slope of output PSNR against input PSNR, optimal α/(α+1) (docs/SCIENCE.md).

The optimal denoiser's MSE falls as σ^(2α/(α+1)) in the small-noise regime, so output PSNR is affine in
input PSNR with slope α/(α+1) there. That regime is bounded on both sides: at large σ every denoiser
saturates (slope → 0), and at very small σ a finite image (its finest frequencies), a finite training
set or the storage precision take over (slope → 1, or a ceiling: 8-bit pixels cap output PSNR at
58.9 dB). The fit therefore uses the noise levels whose input PSNR lies in FIT_WINDOW_DB, well inside
the attainable range, instead of the smallest σ evaluated.
"""

from __future__ import annotations

import numpy as np

FIT_WINDOW_DB = (20.0, 40.0)  # input PSNR range of the slope fit, dB (σ from 0.1 down to 0.01 for images in [0, 1])


def optimal_slope(alpha: float) -> float:
    return alpha / (alpha + 1)


def small_noise_slope(input_psnr: list[float], output_psnr: list[float],
                      window: tuple[float, float] = FIT_WINDOW_DB) -> float | None:
    """Least-squares slope over the noise levels whose input PSNR lies in `window` (dB, inclusive);
    None with fewer than two such levels."""
    x, y = np.asarray(input_psnr, dtype=float), np.asarray(output_psnr, dtype=float)
    inside = (x >= window[0]) & (x <= window[1]) & np.isfinite(y)
    if inside.sum() < 2:
        return None
    return float(np.polyfit(x[inside], y[inside], 1)[0])
