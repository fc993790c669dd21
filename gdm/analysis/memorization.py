"""Memorization and reproducibility as other papers measure them, so gdm's numbers compare with theirs
(docs/SCIENCE.md, Comparable memorization metrics).

1. L2 ratio criterion (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to
   memorize"; used by Gu et al. 2023, "On memorization in diffusion models"): a sample x is memorized when
   ‖x − nn₁‖₂ / ‖x − nn₂‖₂ < 1/3, nn₁ and nn₂ its nearest and second-nearest training images in L2. Unlike a
   similarity threshold it needs no scale: a copy is much closer to one training image than to any other.
2. Reproducibility score (Zhang et al. 2024, "The emergence of reproducibility and generalizability in
   diffusion models"): the share of same-seed pairs (A's and B's sample from one noise) whose similarity
   exceeds a threshold. The threshold here is a parameter; the paper's measure and value are not gdm's.
"""

from __future__ import annotations

import torch

from gdm.analysis.nearest import CANDIDATES, screen
from gdm.analysis.similarity import paired

L2_RATIO = 1 / 3  # memorized when ‖x − nn₁‖ / ‖x − nn₂‖ is below this (Yoon et al. 2023, Gu et al. 2023)


def two_nearest_l2(samples: torch.Tensor, train: torch.Tensor, *, chunk: int = 8192, candidates: int = CANDIDATES,
                   device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(distances [K, 2], indices [K, 2]) of each sample's nearest and second-nearest training image in L2.

    Distances are RMS (‖x − t‖₂ / √D, float64; their ratio is the L2 ratio). The candidates come from the
    fp32 screen of gdm.analysis.nearest and are re-measured in float64; among equal distances the lower
    index comes first (as a brute-force stable sort)."""
    if len(train) < 2:
        raise ValueError(f"the L2 ratio needs at least two training images; got {len(train)}")
    index = screen(samples, train, "l2", chunk=chunk, candidates=max(candidates, 2), device=device)
    index = index.sort(dim=1).values.cpu()  # stable sort below: the lower index wins a tie
    distance = torch.stack([-paired("l2", samples.cpu(), train[column]) for column in index.T], dim=1)
    order = distance.sort(dim=1, stable=True).indices[:, :2]
    return distance.gather(1, order), index.gather(1, order)


def l2_ratio(samples: torch.Tensor, train: torch.Tensor, **search) -> torch.Tensor:
    """‖x − nn₁‖ / ‖x − nn₂‖ per sample [K] float64; 0 when the sample equals its nearest image (0 / 0 included:
    a sample equal to two duplicate training images is a copy)."""
    distance, _ = two_nearest_l2(samples, train, **search)
    nearest, second = distance[:, 0], distance[:, 1]
    return torch.where(nearest == 0, torch.zeros_like(nearest), nearest / second)


def l2_ratio_memorized(ratios: torch.Tensor, threshold: float = L2_RATIO) -> torch.Tensor:
    """[K] bool: the L2 ratio criterion, ratio < threshold."""
    return ratios < threshold


def reproducible(a: torch.Tensor, b: torch.Tensor, measure: str, threshold: float) -> torch.Tensor:
    """[K] bool: A's and B's samples from the same seed are more similar than `threshold` (strictly)."""
    if len(a) != len(b):
        raise ValueError(f"reproducibility pairs samples by seed: A has {len(a)} samples, B {len(b)}")
    return paired(measure, a, b) > threshold


def reproducibility_score(a: torch.Tensor, b: torch.Tensor, measure: str, threshold: float) -> float:
    """The share of same-seed A/B pairs that are `reproducible` (Zhang et al. 2024's RP score for `measure`)."""
    return float(reproducible(a, b, measure, threshold).double().mean()) if len(a) else float("nan")
