"""Disks: one anti-aliased disk on a flat background, a 5-dimensional image manifold (docs/SCIENCE.md, Data).

Parameters per image (cx, cy, r, foreground, background): centre and radius in pixels (pixel i covers
[i, i+1), so its centre is i + 0.5), intensities in [0, 1]. The optimal small-noise denoiser projects
onto the 5-dimensional tangent space of this manifold, so its MSE is about 5 sigma^2.
"""

from __future__ import annotations

import numpy as np

DEFAULTS = {
    # range of the radius, as a fraction of image_size (uniform); the authors' 3–38 px at 80 px
    "radius": [0.0375, 0.475],
    "intensity": [0.0, 1.0],  # range of foreground and background intensities (independent, uniform)
}
PARAM_NAMES = ("cx", "cy", "radius", "foreground", "background")


def sample_params(rng: np.random.Generator, count: int, size: int, params: dict) -> np.ndarray:
    """Draw [count, 5] disk parameters; the centre keeps the whole disk inside the image."""
    r_lo, r_hi = (float(v) * size for v in params["radius"])
    radius = rng.uniform(r_lo, r_hi, count)
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    fg, bg = rng.uniform(*params["intensity"], size=(2, count))
    return np.stack([cx, cy, radius, fg, bg], axis=1).astype(np.float64)


def render(params: np.ndarray, size: int) -> np.ndarray:
    """Render [N, 5] disk parameters to float [N, size, size] images in [0, 1].

    Anti-aliasing by distance: a pixel's disk coverage is clip(r - d + 1/2, 0, 1), d the distance from
    its centre to the disk centre (exact for an edge that is locally straight and axis-aligned).
    """
    params = np.asarray(params, dtype=np.float64).reshape(-1, 5)
    centres = np.arange(size) + 0.5
    cx, cy, radius, fg, bg = (params[:, i, None, None] for i in range(5))
    dist = np.sqrt((centres[None, None, :] - cx) ** 2 + (centres[None, :, None] - cy) ** 2)
    coverage = np.clip(radius - dist + 0.5, 0.0, 1.0)
    return bg + (fg - bg) * coverage


def generate(rng: np.random.Generator, count: int, size: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """`count` disk images (float [N, size, size]) and their generating parameters [N, 5]."""
    disk_params = sample_params(rng, count, size, params)
    return render(disk_params, size), disk_params.astype(np.float32)
