"""Seeds derived from (cell, step, rank), never from batch composition or the global RNG (docs/SCIENCE.md, Reproducibility).

Every random draw of a training step (batch indices, σ, noise) comes from a generator seeded by the
step's seed, so a run resumed from a checkpoint at step k draws exactly what an uninterrupted run
draws at steps k+1 … N.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed, a stable function of `parts` (sha256 of their repr; independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def cell_seed(base_seed: int, cell_id: str) -> int:
    """The seed of one cell: its initial weights and all of its per-step draws derive from it."""
    return derive_seed("cell", base_seed, cell_id)


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` for the draws of optimisation step `step` on process `rank`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed("step", seed, step, rank))
    return generator
