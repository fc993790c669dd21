"""Numerical health of a model: finite weights, buffers and optimizer state, and whether it denoises.

A checkpoint is written only from a finite state, so the last one kept is always resumable; a cell
whose final weights or validation PSNR are not finite fails instead of being marked done; a cell
whose output PSNR is below its input PSNR at every validated σ (it makes images worse) is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from gdm.results import beats_input  # the one rule: a cell's flag and a pair's warning

NOT_DENOISING = "does not denoise"  # flag of a done cell whose output PSNR < input PSNR at every σ


class NonFiniteModelError(RuntimeError):
    """Weights, buffers or optimizer state hold NaN or ±inf; nothing is saved from them."""


def non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """Names of the tensors (or floats) in a nested dict/list state that hold a NaN or ±inf."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return [] if finite else [prefix or "tensor"]
    if isinstance(state, float):
        return [] if math.isfinite(state) else [prefix or "value"]
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [
        name for key, value in items for name in non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    ]


def check_finite(state: Any, what: str) -> None:
    """NonFiniteModelError naming the first offending entries of `state`, described as `what`."""
    bad = non_finite_entries(state)
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise NonFiniteModelError(f"{what} holds NaN or infinite values ({shown}). Lower trainer.lr, use "
                                  "trainer.precision=32-true, or check the data for NaN pixels")


def input_psnr(sigma: float) -> float:
    """PSNR of y = x + σz against x for images in [0, 1]: 10·log10(1/σ²) = −20·log10 σ."""
    return -20.0 * math.log10(sigma)


def denoises(psnr_by_sigma: Mapping[float, float]) -> bool:
    """`beats_input` for a validation curve {σ: output PSNR}, against the input PSNR of each σ."""
    return beats_input([input_psnr(sigma) for sigma in psnr_by_sigma], list(psnr_by_sigma.values()))
