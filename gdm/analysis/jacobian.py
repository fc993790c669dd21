"""Full Jacobian J = ∂f/∂y of a denoiser by vectorised VJPs, and the geometry of its symmetric part.

Row i of J is e_iᵀ J, one vector–Jacobian product; `torch.func.vmap` over a chunk of basis vectors
computes `chunk` rows in one batched backward pass, so memory is bounded by the chunk (never a
per-pixel Python loop). For a bias-free denoiser f(y) = J(y) y exactly (docs/SCIENCE.md), and
f(y) = Σ_k λ_k ⟨y, e_k⟩ e_k in the eigenbasis of J's (near-)symmetric part.

The weights enter as constants (detached, through `torch.func.functional_call`): parameters that
require grad would make every batched backward also form ∂/∂θ, which doubled the time on a CPU
(benchmarks/bench_eval.py: 1.60 s against 0.77 s at 32×32). The denoiser must be in eval mode: in
training mode batch normalisation couples the rows of a batch and updates its running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def jacobian(denoiser: nn.Module, y: torch.Tensor, *, chunk: int = 32) -> torch.Tensor:
    """J [D, D] of the eval-mode `denoiser` at one image y [C, H, W] (D = C·H·W), `chunk` rows a pass."""
    if any(module.training for module in denoiser.modules()):
        raise ValueError("jacobian() needs the denoiser in eval mode (call denoiser.eval()): in training "
                         "mode batch statistics make J depend on the batch and update running estimates")
    if chunk < 1:
        raise ValueError(f"chunk is {chunk}; it must be ≥ 1 (eval.jacobian.chunk: rows per batched VJP)")
    _, vjp = torch.func.vjp(_flat_function(denoiser, y.shape), y.detach().reshape(-1))
    batched_vjp = torch.func.vmap(vjp)
    size = y.numel()
    J = torch.empty(size, size, dtype=y.dtype, device=y.device)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        J[start:stop] = batched_vjp(_basis(start, stop, y))[0]
    return J


def _basis(start: int, stop: int, y: torch.Tensor) -> torch.Tensor:
    """Rows e_start … e_{stop-1} of the D×D identity, built per chunk so memory stays O(chunk·D)."""
    basis = torch.zeros(stop - start, y.numel(), dtype=y.dtype, device=y.device)
    basis[:, start:stop].fill_diagonal_(1)
    return basis


def _flat_function(denoiser: nn.Module, shape: torch.Size):
    """v [D] ↦ f(v as one [1, *shape] image) [D], with the weights as constants (no ∂/∂θ)."""
    state = {name: p.detach() for name, p in denoiser.named_parameters()} | dict(denoiser.named_buffers())

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(denoiser, state, (v.view(1, *shape),)).reshape(-1)

    return f


@dataclass
class Geometry:
    eigenvalues: torch.Tensor  # [D] of the symmetric part, descending
    eigenvectors: torch.Tensor  # [D, k] leading eigenvectors (columns)
    trace: float  # effective dimensionality: the optimal denoiser's MSE is σ² E[tr J]
    asymmetry: float  # ‖J − Jᵀ‖_F / ‖J‖_F


def geometry(J: torch.Tensor, keep: int = 8) -> Geometry:
    """Eigendecomposition of (J + Jᵀ)/2, its trace and J's asymmetry; returned on the CPU.

    In float64 on J's device (cuSOLVER on a GPU: a 6400 × 6400 eigh takes ≈ 1.8 min on one CPU thread);
    a device without float64 (MPS) hands J to the CPU. Memory on that device ≈ 5 D² · 8 bytes on top of J
    itself (J in float64, its symmetric part, the eigenvectors, ≈ 2 D² of solver workspace): ≈ 1.6 GB at
    D = 6400. On the CPU the numbers are those of before (the same LAPACK call on the same matrix).
    """
    J = J.double() if J.device.type in ("cpu", "cuda") else J.cpu().double()
    values, vectors = torch.linalg.eigh((J + J.T) / 2)
    order = values.argsort(descending=True)
    asym = float(torch.linalg.norm(J - J.T) / torch.linalg.norm(J).clamp_min(1e-12))
    return Geometry(values[order].cpu(), vectors[:, order[:keep]].cpu(), float(torch.trace(J)), asym)
