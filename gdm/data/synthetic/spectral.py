"""Power-law random signals: white noise filtered by |omega|^-a in Fourier space (1-D contours, 2-D fields)."""

from __future__ import annotations

import numpy as np


def radial_frequency(shape: tuple[int, ...]) -> np.ndarray:
    """|omega| on the FFT grid of `shape`, in cycles per signal length (integers for a periodic signal)."""
    grids = np.meshgrid(*[np.fft.fftfreq(n) * n for n in shape], indexing="ij")
    return np.sqrt(sum(g**2 for g in grids))


def power_law_noise(rng: np.random.Generator, count: int, shape: tuple[int, ...], exponent: float) -> np.ndarray:
    """`count` periodic signals IFFT(|omega|^-exponent . FFT(white noise)), mean 0, unit std each.

    Amplitudes ~ |omega|^-exponent, so the power spectrum falls as |omega|^(-2 exponent). The DC term is
    zeroed (the mean is set by the caller's affine map).
    """
    white = rng.standard_normal((count, *shape))
    axes = tuple(range(1, len(shape) + 1))
    freq = radial_frequency(shape)
    gain = np.zeros_like(freq)
    gain[freq > 0] = freq[freq > 0] ** (-float(exponent))
    signal = np.real(np.fft.ifftn(np.fft.fftn(white, axes=axes) * gain, axes=axes))
    signal -= signal.mean(axis=axes, keepdims=True)
    return signal / np.maximum(signal.std(axis=axes, keepdims=True), 1e-12)
