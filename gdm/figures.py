"""Figures as PNG files (matplotlib, Agg backend), written atomically: the paper's Figures 1–3."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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


HISTOGRAM_BINS = 40  # bins across `histogram_range`


def histograms(groups: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str, path: Path, *,
               density: bool = False) -> Path:
    """One panel per group (e.g. per n), overlaid histograms of each series (paper Figure 2).

    All panels share one data-adaptive bin range (see `histogram_range`), so they compare at a glance.
    `density` scales each series to unit area: needed when series differ in length (the cross-seed
    control holds K (K − 1) pairs against K same-seed pairs).
    """
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(3.2 * max(1, len(groups)), 2.6), squeeze=False)
    value_range = histogram_range([v for series in groups.values() for values in series.values() for v in values])
    for ax, (title, series) in zip(axes[0], groups.items(), strict=False):
        for label, values in series.items():
            finite = _finite(values)
            ax.hist(
                finite,
                bins=HISTOGRAM_BINS,
                range=value_range,
                alpha=0.55,
                label=label,
                density=density and bool(finite),
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    if groups:
        axes[0, 0].legend(fontsize=7)
    return save(fig, path)


def histogram_range(values: Sequence[float], margin: float = 0.05) -> tuple[float, float]:
    """Bin range spanning the finite `values`, widened by `margin` of their span on each side.

    A fixed (-1, 1) range puts every plain cosine of non-negative images (≈ 0.99) in one bin; the
    differences that matter (A–B vs nearest-train) live in the third decimal. A single distinct value
    gets a small width around it, no values at all the unit interval, so plotting never fails.
    """
    finite = _finite(values)
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    pad = margin * (high - low) if high > low else max(1e-3 * abs(low), 1e-6)
    return low - pad, high + pad


def _finite(values) -> list[float]:
    """Plottable numbers: None (a diverged or missing entry, stored as JSON null) and NaN/inf dropped."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def psnr_curves(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path, title: str = "", *,
                references: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                reference_label: str = "reference",
                linear: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                linear_label: str = "Gaussian (Wiener) reference") -> Path:
    """Output PSNR against input PSNR, with the identity line (paper Figure 1).

    `references` (optional) are drawn dashed: one keyed like a curve takes that curve's colour, so a
    model and its reference (e.g. the optimal denoiser of the same training set) read as a pair; the
    legend names them once, as `reference_label`, rather than doubling every entry. `linear` (optional)
    is a second reference set, drawn dash-dotted the same way (the best linear denoiser).
    """
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    colours = {}
    for label, curve in curves.items():
        (line,) = ax.plot(curve["input_psnr"], curve["output_psnr"], "o-", ms=3, label=label)
        colours[label] = line.get_color()
    top = _psnr_top(curves)
    for style, group, name in (("--", references, reference_label), ("-.", linear, linear_label)):
        for label, curve in (group or {}).items():
            _dashed_reference(ax, curve, top, colours.get(label), style)
        if group:
            ax.plot([], [], "k" + style, lw=1, label=name)  # legend proxy for the whole group
            ax.set_ylim(top=top)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], "k:", lw=0.8)
    ax.set_xlabel("input PSNR (dB)")
    ax.set_ylabel("output PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def _psnr_top(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> float:
    """Upper y-limit: the model curves and the identity line, with room above them."""
    values = [v for c in curves.values() for v in (*c["output_psnr"], *c["input_psnr"])]
    return max(values, default=40.0) + 15.0


def _dashed_reference(ax, curve: Mapping[str, Sequence[float]], top: float, colour, style: str = "--") -> None:
    """A reference curve, its points above `top` (the memorizer recovering its own training images,
    up to PSNR's cap) drawn on the top edge and marked ▲, so the models' curves keep their scale."""
    shown = [min(v, top) for v in curve["output_psnr"]]
    ax.plot(curve["input_psnr"], shown, style, lw=1, color=colour, clip_on=False)
    above = [(x, top) for x, v in zip(curve["input_psnr"], curve["output_psnr"], strict=True) if v > top]
    if above:
        ax.plot(*zip(*above, strict=True), "^", ms=4, color=colour, clip_on=False)


def lines(x: Sequence[float], series: Mapping[str, Sequence[float]], path: Path, *, xlabel: str, ylabel: str,
          logx: bool = False, references: Mapping[str, Sequence[float]] | None = None) -> Path:
    """Several series against a shared x (e.g. similarities against n); None values leave gaps.

    `references` (optional) are drawn dashed with their own labels, e.g. a constant series for a
    theoretical value (the optimal C^α slope) or the optimal denoiser's counterpart of a measurement.
    """
    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    for label, values in series.items():
        ax.plot(x, _gaps(values), "o-", ms=4, label=label)
    for label, values in (references or {}).items():
        ax.plot(x, _gaps(values), "--", lw=1, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return save(fig, path)


def transition(x: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
               crossings: Mapping[str, tuple[float, float, float] | None], path: Path, *, title: str = "") -> Path:
    """Statistics against n with their intervals (series: label → (estimate, low, high) per n, as error bars)
    and transition points with theirs (crossings: label → (n*, low, high), a vertical line and a shaded band;
    an open end (inf) runs to the plot's edge; None: not bracketed, named in the legend)."""
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for label, (estimate, low, high) in series.items():
        mid = _gaps(estimate)
        below = [m - lo if lo is not None else 0.0 for m, lo in zip(mid, low, strict=True)]
        above = [hi - m if hi is not None else 0.0 for m, hi in zip(mid, high, strict=True)]
        ax.errorbar(x, mid, yerr=[below, above], fmt="o-", ms=4, capsize=3, label=label)
    ax.set_xscale("log")
    left, right = ax.get_xlim()
    for (label, crossing), colour in zip(crossings.items(), ("tab:red", "tab:purple", "tab:green"), strict=False):
        if crossing is None:
            ax.plot([], [], " ", label=f"{label}: not bracketed by the grid")
            continue
        at, low, high = crossing
        ax.axvspan(low if math.isfinite(low) else left, high if math.isfinite(high) else right, color=colour,
                   alpha=0.15)
        ax.axvline(at, color=colour, lw=1.2, label=f"{label} = {at:.3g} [{low:.3g}, {high:.3g}]")
    ax.set_xlim(left, right)
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("n (training images per split)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    return save(fig, path)


def planes(x: Sequence[float], y: Sequence[float], panels: Mapping[str, Sequence[Sequence[float | None]]],
           path: Path, *, title: str = "", xlabel: str = "n (training images per split)",
           ylabel: str = "training steps") -> Path:
    """One heat map per panel over the grid x × y (values[row = y][column = x]; None: not evaluated), each cell
    labelled with its value: e.g. the memorized fraction over n and training time."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels.items(), strict=True):
        grid = np.array([_gaps(row) for row in values], dtype=float)
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(x)), [f"{v:g}" for v in x], fontsize=7)
        ax.set_yticks(range(len(y)), [f"{v:g}" for v in y], fontsize=7)
        for (row, column), value in np.ndenumerate(grid):
            if math.isfinite(value):
                ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


def _gaps(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]  # matplotlib breaks the line at NaN


def spectra(spectra: Mapping[str, Sequence[float]], path: Path, *, title: str = "", logx: bool = True,
            logy: bool = False) -> Path:
    """Eigenvalues of the Jacobian's symmetric part, descending (paper Figure 3).

    With `logy`, only the positive eigenvalues are drawn (at their own ranks): the log axis is where
    the fast decay of a generalizing model's spectrum, and the rank < n cliff of a memorizing one, show.
    """
    fig, ax = plt.subplots(figsize=(4.0, 3.0))
    for label, values in spectra.items():
        ranks = [(k, v) for k, v in enumerate(values, start=1) if v > 0 or not logy]
        ax.plot([k for k, _ in ranks], [v for _, v in ranks], label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ_k")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, path)


def line_panels(x: Sequence[float], panels: Mapping[str, Mapping[str, Sequence[float | None]]], path: Path, *,
                xlabel: str, logx: bool = False,
                references: Mapping[str, Mapping[str, Sequence[float | None]]] | None = None) -> Path:
    """Side-by-side line plots sharing x, one per panel title (each with its own y unit in the title);
    `references[title]` are drawn dashed in that panel. None values leave gaps."""
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.4 * max(1, len(panels)), 2.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels.items(), strict=False):
        for label, values in series.items():
            ax.plot(x, _gaps(values), "o-", ms=4, label=label)
        for label, values in (references or {}).get(title, {}).items():
            ax.plot(x, _gaps(values), "--", lw=1, label=label)
        if logx:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    return save(fig, path)


def realism(contrast: Mapping[str, Sequence[float]], spectra: Mapping[str, Sequence[float]],
            pixel_density: Mapping[str, Sequence[float]], value_range: tuple[float, float], path: Path,
            title: str = "") -> Path:
    """Samples against held-out images: per-image contrast histograms, radially averaged power spectra
    (log-log, ring r = 1 … side/2) and pixel-value densities over `value_range` (one curve per label)."""
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 2.9))
    low, high = histogram_range([v for values in contrast.values() for v in values])
    for label, values in contrast.items():
        finite = _finite(values)
        axes[0].hist(
            finite, bins=HISTOGRAM_BINS, range=(max(low, 0.0), high), alpha=0.5, label=label, density=bool(finite)
        )
    axes[0].set_xlabel("per-image std (contrast)")
    for label, values in spectra.items():
        axes[1].loglog(range(1, len(values) + 1), [v if v > 0 else math.nan for v in values], "o-", ms=3, label=label)
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # few rings: minor labels would overlap
    axes[1].set_xlabel("radial frequency (cycles / image)")
    axes[1].set_ylabel("power")
    for label, values in pixel_density.items():
        width = (value_range[1] - value_range[0]) / max(len(values), 1)
        axes[2].plot([value_range[0] + width * (i + 0.5) for i in range(len(values))], list(values), label=label)
    axes[2].set_xlabel("pixel value")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)
