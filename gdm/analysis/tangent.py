"""Disks: the tangent space of the 5-D image manifold at a disk, from its generating parameters.

At small σ the optimal denoiser projects y − x onto the tangent space T_x (docs/SCIENCE.md: MSE ≈ 5σ²),
so a well-trained denoiser's top eigenvectors should span T_x. T_x is built by central finite
differences of the renderer with respect to (cx, cy, radius, foreground, background).
"""

from __future__ import annotations

import numpy as np
import torch

from gdm.data.synthetic.disks import render


def tangent_basis(params: np.ndarray, size: int, eps: float = 1e-3) -> torch.Tensor:
    """Orthonormal basis [D, 5] of the tangent space at the disk with parameters `params` [5]."""
    columns = []
    for k in range(len(params)):
        step = np.zeros_like(params, dtype=np.float64)
        step[k] = eps
        diff = render((params + step)[None], size) - render((params - step)[None], size)
        columns.append(torch.from_numpy(np.asarray(diff, dtype=np.float64).reshape(-1) / (2 * eps)))
    q, _ = torch.linalg.qr(torch.stack(columns, dim=1))
    return q


def subspace_overlap(vectors: torch.Tensor, basis: torch.Tensor) -> float:
    """‖Bᵀ E‖_F² / k for k orthonormal columns E: 1 when span(E) = span(B), 0 when orthogonal."""
    k = min(vectors.shape[1], basis.shape[1])
    return float((basis.T.double() @ vectors[:, :k].double()).pow(2).sum() / k)
