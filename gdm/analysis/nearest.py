"""Nearest training image of every sample, over the whole training set: a float32 screen by chunked matrix
products, then a float64 re-check of the best few candidates, so fp32 rounding cannot pick the neighbour.

At n ≈ 10⁵ training images of 80 × 80 the search is K · n · D multiply-adds per split and control (≈ 10¹⁶
for a pair): in float64 that is hours on a GPU whose fp64 rate is 1/32 or 1/64 of its fp32 one.
"""

from __future__ import annotations

import torch

from gdm.analysis.similarity import SIMILARITIES, paired, ranking_features

CANDIDATES = 16  # training images per sample kept by the fp32 screen and re-checked in float64


def nearest(samples: torch.Tensor, train: torch.Tensor, similarity: str = "correlation", *, chunk: int = 8192,
            candidates: int = CANDIDATES, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(best similarity [K] float64, index [K]) of each sample's most similar image in `train`, on the CPU.

    Screen: fp32 scores of the K samples against `chunk` training images at a time (gdm.analysis.similarity.
    ranking_features), keeping each sample's `candidates` best; memory ≈ chunk · (D + K + 1) · 4 bytes
    (the chunk's features and scores; D = pixels, e.g. 8192 · (6400 + 1000) · 4 ≈ 240 MB) plus
    K · candidates · 12 for the running best. Re-check: the candidates' similarities by the float64
    definition (similarity.paired), K · D · 8 bytes at a time; the largest wins, the lowest index among
    equals (as a brute-force argmax). The result equals a float64 brute force unless more than
    `candidates` images lie within fp32 rounding of the best (≈ √D · 2⁻²⁴ in cosine); even then the value
    returned is a true float64 similarity within that rounding of the best.
    """
    if len(train) == 0:
        if similarity not in SIMILARITIES:
            raise KeyError(f"similarity {similarity!r} is not one of {', '.join(SIMILARITIES)}")
        none = torch.full((len(samples),), -float("inf"), dtype=torch.float64)
        return none, torch.zeros(len(samples), dtype=torch.long)
    index = screen(samples, train, similarity, chunk=chunk, candidates=candidates, device=device)
    return _recheck(samples.to(device), train, index, similarity)


def screen(samples: torch.Tensor, train: torch.Tensor, similarity: str, *, chunk: int = 8192,
           candidates: int = CANDIDATES, device="cpu") -> torch.Tensor:
    """Training indices [K, min(candidates, n)] of each sample's best candidates by the fp32 screen (see
    `nearest`), on `device`; the caller re-checks them in float64."""
    if similarity not in SIMILARITIES:
        raise KeyError(f"similarity {similarity!r} is not one of {', '.join(SIMILARITIES)}")
    queries = samples.to(device)
    origin = queries.flatten(1).double().mean(0)
    q = ranking_features(similarity, queries, origin, query=True)
    scores = index = None
    for start in range(0, len(train), chunk):
        t = ranking_features(similarity, train[start : start + chunk].to(device), origin, query=False)
        scores, index = _keep_best(scores, index, q @ t.T, start, candidates)
    return index


def _keep_best(scores, index, chunk_scores: torch.Tensor, start: int, k: int):
    """The k best (score, training index) of each row among the running ones and this chunk's."""
    chunk_index = torch.arange(start, start + chunk_scores.shape[1], device=chunk_scores.device)
    chunk_index = chunk_index.expand_as(chunk_scores)
    if scores is not None:
        chunk_scores, chunk_index = torch.cat([scores, chunk_scores], 1), torch.cat([index, chunk_index], 1)
    best = chunk_scores.topk(min(k, chunk_scores.shape[1]), dim=1)
    return best.values, chunk_index.gather(1, best.indices)


def _recheck(queries: torch.Tensor, train: torch.Tensor, index: torch.Tensor, similarity: str):
    """The float64 similarity of each candidate, and the best one (lowest index among equal values)."""
    index = index.sort(dim=1).values  # argmax takes the first maximum: the lowest index wins a tie
    values = torch.stack([paired(similarity, queries, train[column.to(train.device)].to(queries.device))
                          for column in index.T], dim=1)
    best = values.argmax(dim=1, keepdim=True)
    return values.gather(1, best)[:, 0].cpu(), index.gather(1, best)[:, 0].cpu()
