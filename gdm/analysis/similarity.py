"""Similarity between images, by name: cosine (the paper's), mean-removed correlation, negative RMS distance.

For non-negative images the plain cosine is close to 1 for nearly any pair (their means dominate), so it
cannot tell memorization from agreement; the correlation removes each image's mean first (docs/SCIENCE.md).

Everything here is float64 by definition: these are the reference values every statistic reports. The
nearest-neighbour search over a whole training set screens in float32 (`ranking_features`) and re-checks
its candidates here (gdm.analysis.nearest).
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
    """Similarity of a_i with b_i (same seed in A and B, or a sample and its candidate neighbour): [K] float64.

    Row by row, vectorised: the l2 distance is taken as ‖a_i − b_i‖ itself (no expansion to cancel).
    """
    if name not in SIMILARITIES:
        raise KeyError(f"similarity {name!r} is not one of {', '.join(SIMILARITIES)}")
    if name == "l2":
        return -(a.flatten(1).double() - b.flatten(1).double()).pow(2).mean(1).sqrt()
    features = _unit if name == "cosine" else (lambda x: _unit(_centre(x)))
    return (features(a) * features(b)).sum(1)


def ranking_features(name: str, x: torch.Tensor, origin: torch.Tensor, *, query: bool) -> torch.Tensor:
    """float32 rows whose inner products ⟨q_i, t_j⟩ (queries `query=True`, training images False) order the
    training images like similarity `name` does for each query: [N, D] or, for l2, [N, D + 1].

    cosine, correlation: the (mean-removed) unit vectors, so ⟨q, t⟩ is the similarity itself. l2: about a
    common `origin` [D] (e.g. the queries' mean, which keeps the magnitudes and so the fp32 rounding small),
    q = [a, 1], t = [2b, −‖b‖²]: ⟨q, t⟩ = ‖a‖² − ‖a − b‖², a per-query constant minus the squared distance.
    Built in float64, rounded once to float32.
    """
    if name == "l2":
        x = x.flatten(1).double() - origin
        extra = torch.ones(len(x), 1, dtype=x.dtype, device=x.device) if query else -x.pow(2).sum(1, keepdim=True)
        return torch.cat([x if query else 2 * x, extra], dim=1).float()
    return (_unit(x) if name == "cosine" else _unit(_centre(x))).float()
