"""Figures as PNG files (matplotlib, Agg backend), written atomically: the paper's Figures 1–3."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gdm.io import atomic_write_bytes  # noqa: E402


def save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def image_rows(rows: Sequence[Sequence[torch.Tensor]], titles: Sequence[str], path: Path,
               row_labels: Sequence[str] = ()) -> Path:
    """A grid: one row per entry of `rows`, one column per title (images [1, H, W] in [0, 1])."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(1.6 * len(titles), 1.6 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r, c].imshow(image[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=8)
        if r < len(row_labels):
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
    return save(fig, path)


def histograms(groups: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str, path: Path) -> Path:
    """One panel per group (e.g. per n), overlaid histograms of each series (paper Figure 2)."""
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 2.6), squeeze=False)
    for ax, (title, series) in zip(axes[0], groups.items(), strict=False):
        for label, values in series.items():
            ax.hist(list(values), bins=30, range=(-1, 1), alpha=0.55, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    return save(fig, path)


def psnr_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path, title: str = "") -> Path:
    """Output PSNR against input PSNR, with the identity line (paper Figure 1)."""
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    for label, curve in curves.items():
        ax.plot(curve["input_psnr"], curve["output_psnr"], "o-", ms=3, label=label)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], "k:", lw=0.8)
    ax.set_xlabel("input PSNR (dB)")
    ax.set_ylabel("output PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def lines(x: Sequence[float], series: Mapping[str, Sequence[float]], path: Path, *, xlabel: str, ylabel: str,
          logx: bool = False) -> Path:
    """Several series against a shared x (e.g. similarities against n)."""
    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    for label, values in series.items():
        ax.plot(x, values, "o-", ms=4, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return save(fig, path)


def spectra(spectra: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Eigenvalues of the Jacobian's symmetric part, descending (paper Figure 3)."""
    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    for label, values in spectra.items():
        ax.plot(range(1, len(values) + 1), values, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ_k")
    ax.legend(fontsize=7)
    return save(fig, path)
