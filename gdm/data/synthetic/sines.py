"""2-D sine waves (the paper's low-dimensional sine family): random phase and contrast, optional random
frequency and orientation. Image x(p) = 1/2 + contrast . sin(2 pi f <u_theta, p> / size + phase)."""

from __future__ import annotations

import numpy as np

DEFAULTS = {
    "frequency": [4.0, 4.0],  # range of the frequency, cycles per image side (equal ends: fixed)
    "angle": [0.5, 0.5],  # range of the orientation theta, radians (equal ends: fixed)
    "contrast": [0.05, 0.5],  # range of the amplitude around 1/2 (<= 0.5 keeps pixels in [0, 1])
}
PARAM_NAMES = ("frequency", "angle", "phase", "contrast")


def render(params: np.ndarray, size: int) -> np.ndarray:
    """Render [N, 4] (frequency, angle, phase, contrast) to float [N, size, size] images."""
    freq, angle, phase, contrast = (np.asarray(params, dtype=np.float64)[:, i, None, None] for i in range(4))
    coords = np.arange(size) + 0.5
    along = np.cos(angle) * coords[None, None, :] + np.sin(angle) * coords[None, :, None]
    return 0.5 + contrast * np.sin(2 * np.pi * freq * along / size + phase)


def generate(rng: np.random.Generator, count: int, size: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """`count` sine images and their parameters [N, 4]."""
    drawn = np.stack(
        [
            rng.uniform(*params["frequency"], count),
            rng.uniform(*params["angle"], count),
            rng.uniform(0.0, 2 * np.pi, count),
            rng.uniform(*params["contrast"], count),
        ],
        axis=1,
    )
    return render(drawn, size), drawn.astype(np.float32)
