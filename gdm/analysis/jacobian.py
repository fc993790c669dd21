"""Full Jacobian J = ∂f/∂y of a denoiser by vectorised VJPs, and the geometry of its symmetric part.

Row i of J is e_iᵀ J, one vector–Jacobian product; `torch.func.vmap` over a chunk of basis vectors
computes `chunk` rows in one batched backward pass, so memory is bounded by the chunk (never a
per-pixel Python loop). For a bias-free denoiser f(y) = J(y) y exactly (SCIENCE.md), and
f(y) = Σ_k λ_k ⟨y, e_k⟩ e_k in the eigenbasis of J's (near-)symmetric part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def jacobian(denoiser: nn.Module, y: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """J [D, D] of `denoiser` at one image y [C, H, W] (D = C·H·W)."""
    shape = y.shape
    flat = y.detach().reshape(-1)

    def f(v: torch.Tensor) -> torch.Tensor:
        return denoiser(v.view(1, *shape)).reshape(-1)

    _, vjp = torch.func.vjp(f, flat)
    basis = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    rows = [torch.func.vmap(vjp)(basis[i : i + chunk])[0] for i in range(0, flat.numel(), chunk)]
    return torch.cat(rows).detach()


@dataclass
class Geometry:
    eigenvalues: torch.Tensor  # [D] of the symmetric part, descending
    eigenvectors: torch.Tensor  # [D, k] leading eigenvectors (columns)
    trace: float  # effective dimensionality: the optimal denoiser's MSE is σ² E[tr J]
    asymmetry: float  # ‖J − Jᵀ‖_F / ‖J‖_F


def geometry(J: torch.Tensor, keep: int = 8) -> Geometry:
    """Eigendecomposition of (J + Jᵀ)/2, its trace and J's asymmetry."""
    J = J.double()
    values, vectors = torch.linalg.eigh((J + J.T) / 2)
    order = values.argsort(descending=True)
    asym = float(torch.linalg.norm(J - J.T) / torch.linalg.norm(J).clamp_min(1e-12))
    return Geometry(values[order], vectors[:, order[:keep]], float(torch.trace(J)), asym)
