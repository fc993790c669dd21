"""Stationary Gaussian random fields with power spectrum ~ 1/|omega|^gamma, mapped to [0, 1] by a fixed
affine map (mean + std . z) and clipping. Gaussian fields are the case where the optimal denoiser is
linear (Wiener filter), a useful reference point for the learned ones."""

from __future__ import annotations

import numpy as np

from gdm.data.synthetic.spectral import power_law_noise

DEFAULTS = {
    "gamma": 2.0,  # exponent of the power spectrum 1/|omega|^gamma (amplitudes |omega|^(-gamma/2))
    "mean": 0.5,  # pixel mean after the affine map
    "std": 0.15,  # pixel standard deviation after the affine map (before clipping to [0, 1])
}


def generate(rng: np.random.Generator, count: int, size: int, params: dict) -> tuple[np.ndarray, None]:
    """`count` fields (float [N, size, size] in [0, 1]); no generating parameters."""
    field = power_law_noise(rng, count, (size, size), float(params["gamma"]) / 2)
    return np.clip(float(params["mean"]) + float(params["std"]) * field, 0.0, 1.0), None
