"""Nearest training image of every sample, over the whole training set, by chunked matrix products."""

from __future__ import annotations

import torch

from gdm.analysis.similarity import SIMILARITIES


def nearest(samples: torch.Tensor, train: torch.Tensor, similarity: str = "correlation", *, chunk: int = 8192,
            device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(best similarity [K], index [K]) of each sample's most similar image in `train`.

    The training set is visited `chunk` images at a time so memory stays O(K · chunk) for 10^5 images.
    """
    measure = SIMILARITIES[similarity]
    best = torch.full((len(samples),), -float("inf"), dtype=torch.float64)
    index = torch.zeros(len(samples), dtype=torch.long)
    s = samples.to(device)
    for start in range(0, len(train), chunk):
        values, where = measure(s, train[start : start + chunk].to(device)).max(dim=1)
        better = values.cpu() > best
        best[better], index[better] = values.cpu()[better], where.cpu()[better] + start
    return best, index
