"""Similarity between images, by name: cosine (the paper's), mean-removed correlation, negative RMS distance.

For non-negative images the plain cosine is close to 1 for nearly any pair (their means dominate), so it
cannot tell memorization from agreement; the correlation removes each image's mean first (docs/SCIENCE.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a_i, b_j⟩ / (‖a_i‖ ‖b_j‖) for every pair: [K, M]."""
    return _unit(a) @ _unit(b).T


def _centre(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1).double()
    return x - x.mean(dim=1, keepdim=True)


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine after subtracting each image's mean (Pearson correlation over pixels): [K, M]."""
    return cosine_matrix(_centre(a), _centre(b))


def neg_rms_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """−‖a_i − b_j‖ / √D, so that larger is more similar like the others: [K, M]."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T
    return -(sq.clamp_min(0) / a.shape[1]).sqrt()


SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cosine": cosine_matrix,
    "correlation": correlation_matrix,
    "l2": neg_rms_matrix,
}


def paired(name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Similarity of a_i with b_i (same seed in A and B): [K]."""
    return (
        torch.stack([SIMILARITIES[name](x[None], y[None])[0, 0] for x, y in zip(a, b, strict=False)])
        if len(a)
        else torch.zeros(0)
    )
