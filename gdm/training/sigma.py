"""Noise-level laws: σ per image from u ~ U(0, 1) on [σ_min, σ_max] (docs/SCIENCE.md, Training)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SigmaLaw = Callable[[torch.Tensor, float, float], torch.Tensor]


def squared_uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """σ = σ_min + (σ_max - σ_min)·u²: the authors' code (σ = u² on [0, 1]; half the draws below 0.25)."""
    return lo + (hi - lo) * u.square()


def uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """σ ~ U(σ_min, σ_max): the paper's text."""
    return lo + (hi - lo) * u


def log_uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """log σ ~ U(log σ_min, log σ_max): equal weight per octave (needs σ_min > 0)."""
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


SIGMA_LAWS: dict[str, SigmaLaw] = {"squared_uniform": squared_uniform, "uniform": uniform, "log_uniform": log_uniform}


def draw_sigma(law: str, count: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """`count` noise levels, shape [count, 1, 1, 1], on the generator's device."""
    if law not in SIGMA_LAWS:
        raise ValueError(f"trainer.sigma_law is {law!r}; allowed values: {', '.join(SIGMA_LAWS)}")
    u = torch.rand(count, 1, 1, 1, generator=generator, device=generator.device)
    return SIGMA_LAWS[law](u, lo, hi)
