"""Near-duplicate removal (docs/SCIENCE.md, Data): average-pool each image to 20x20, subtract its mean,
normalise to unit norm; the |normalised correlation| of two images is then |<f_i, f_j>|. For every pair
with |corr| > threshold the LATER image (larger index) is dropped, whether or not the earlier one is
itself dropped: the rule is per pair, so the result does not depend on a processing order.

All pairs are compared in blocks of `chunk` x `chunk` correlations (memory ~ chunk^2, e.g. 64 MB at
4096), only blocks on or above the diagonal, on the torch device passed (a GPU when there is one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

POOLED = 20  # side of the average-pooled images compared


def features(images: np.ndarray, device: torch.device, pooled: int = POOLED) -> torch.Tensor:
    """[N, pooled^2] unit-norm, mean-free features of uint8/float [N, H, W] images, on `device`."""
    batch = torch.as_tensor(np.asarray(images), device=device).float()[:, None]
    pooled_images = F.adaptive_avg_pool2d(batch, pooled).flatten(1)
    centred = pooled_images - pooled_images.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def duplicate_mask(feats: torch.Tensor, threshold: float, chunk: int, progress: bool = False) -> torch.Tensor:
    """Bool [N] on feats.device: True for images with an EARLIER image of |corr| > threshold."""
    count = feats.shape[0]
    dropped = torch.zeros(count, dtype=torch.bool, device=feats.device)
    starts = range(0, count, chunk)
    for col in tqdm(starts, desc="dedup", disable=not progress):  # block of later images
        later = feats[col : col + chunk]
        for row in range(0, col + 1, chunk):  # blocks of earlier images (and the diagonal block)
            corr = (feats[row : row + chunk] @ later.T).abs() > threshold
            if row == col:  # keep only pairs (i, j) with i < j
                corr = torch.triu(corr, diagonal=1)
            dropped[col : col + chunk] |= corr.any(dim=0)
    return dropped


def deduplicate(
    images: np.ndarray,
    *,
    threshold: float = 0.95,
    device: str | torch.device = "cpu",
    chunk: int = 4096,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Indices (ascending) of the images kept, and the number removed as near-duplicates."""
    device = torch.device(device)
    feats = torch.cat([features(images[i : i + chunk], device) for i in range(0, len(images), chunk)])
    dropped = duplicate_mask(feats, threshold, chunk, progress)
    kept = torch.nonzero(~dropped).flatten().cpu().numpy()
    return kept, int(len(images) - len(kept))
