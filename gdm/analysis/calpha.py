"""C^α images: the small-noise slope of output PSNR against input PSNR, optimal α/(α+1) (SCIENCE.md)."""

from __future__ import annotations

import numpy as np


def optimal_slope(alpha: float) -> float:
    return alpha / (alpha + 1)


def small_noise_slope(input_psnr: list[float], output_psnr: list[float], points: int = 3) -> float | None:
    """Least-squares slope over the `points` smallest noise levels (highest input PSNR); None below 2 levels."""
    if len(input_psnr) < 2:
        return None
    order = np.argsort(input_psnr)[-points:]
    x, y = np.asarray(input_psnr)[order], np.asarray(output_psnr)[order]
    return float(np.polyfit(x, y, 1)[0])
