"""`gdm report`: the memorization → generalization picture across n, from the pairs evaluated so far.

Every per-pair result except dataset, n and psnr is optional (older runs, Jacobian analysis off, not
a C^α dataset, every sample diverged): a missing value is "–" in the Markdown table, empty in the
CSV, a gap in a line plot, and a figure whose data is missing altogether is not drawn.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gdm import figures
from gdm.cells import DONE_FILE, EvalPair, expand_pairs
from gdm.config import ExperimentConfig
from gdm.io import atomic_write_text, read_json

SPLITS = ("A", "B")

# Stored scalars of results.json, then values derived from its nested records (see `summary_row`).
COLUMNS = ("dataset", "n", "ab_cosine_median", "nearest_cosine_median", "nearest_other_cosine_median",
           "ab_correlation_median", "nearest_correlation_median", "nearest_other_correlation_median",
           "memorized_fraction", "memorized_fraction_other", "psnr_gap", "diverged_A", "diverged_B",
           "calpha_slope_mean", "calpha_optimal_slope", "jacobian_trace_mean", "jacobian_trace_optimal_mean",
           "jacobian_optimal_relative_difference_mean")


def make_report(cfg: ExperimentConfig) -> Path:
    """Figures and a table (CSV + Markdown) in runs/<name>/report/; returns that folder."""
    out = cfg.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    pairs = [p for p in expand_pairs(cfg) if (p.directory(cfg) / DONE_FILE).exists()]
    results = [read_json(p.directory(cfg) / "results.json") for p in pairs]
    atomic_write_text(out / "summary.csv", summary_csv(results))
    atomic_write_text(out / "summary.md", markdown_table(results))
    for dataset in sorted({p.dataset for p in pairs}):
        mine = [(p, r) for p, r in zip(pairs, results, strict=False) if p.dataset == dataset]
        _dataset_figures(cfg, dataset, mine, out)
    return out


# --- the summary table ------------------------------------------------------------------------


def summary_row(results: dict) -> dict:
    """One (dataset, n) as a flat record over COLUMNS: stored scalars plus means of nested records."""
    row = {key: results.get(key) for key in COLUMNS}
    row["calpha_slope_mean"] = _mean(calpha_slopes(results).values())
    row["jacobian_trace_mean"] = _mean(r.get("trace") for r in jacobian_records(results))
    optimal = [r.get("optimal") or {} for r in jacobian_records(results)]
    row["jacobian_trace_optimal_mean"] = _mean(o.get("trace") for o in optimal)
    row["jacobian_optimal_relative_difference_mean"] = _mean(o.get("relative_difference") for o in optimal)
    return row


def calpha_slopes(results: dict) -> dict:
    """split → measured small-noise slope of the test PSNR curve (C^α datasets only; may be None)."""
    return dict(results.get("calpha_slope") or {})


def jacobian_records(results: dict, split: str | None = None) -> list[dict]:
    """Jacobian records (trace, eigenvalues, ...) of every image and σ, of one split or of all."""
    per_point = (results.get("jacobian") or {}).values()
    return [record for records in per_point for s, record in records.items() if split in (None, s)]


def _mean(values) -> float | None:
    """Mean of the finite values, None when there are none (never NaN: it would print as 'nan')."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def summary_csv(results: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(summary_row(r) for r in results)  # None → empty cell
    return buffer.getvalue()


@dataclass(frozen=True)
class _Column:
    """A Markdown column: its header and the row keys it shows, joined by '/' (e.g. diverged A/B)."""

    header: str
    keys: tuple[str, ...]
    digits: int = 3
    optional: bool = False  # dropped when no row has a value (e.g. C^α slope on a disks-only run)

    def cell(self, row: dict) -> str:
        return "/".join(_f(row[key], self.digits) for key in self.keys)

    def shown(self, rows: list[dict]) -> bool:
        return not self.optional or any(row[key] is not None for row in rows for key in self.keys)


# "other split": each sample's nearest image in the training set of the model it was NOT trained
# on, the control for "nearest train": at large n both should be alike (generalization).
MARKDOWN_COLUMNS = (
    _Column("A–B cosine", ("ab_cosine_median",)),
    _Column("nearest cosine", ("nearest_cosine_median",)),
    _Column("nearest cosine, other split", ("nearest_other_cosine_median",)),
    _Column("A–B correlation", ("ab_correlation_median",)),
    _Column("nearest correlation", ("nearest_correlation_median",)),
    _Column("nearest correlation, other split", ("nearest_other_correlation_median",)),
    _Column("memorized", ("memorized_fraction",), 2),
    _Column("memorized, other split", ("memorized_fraction_other",), 2),
    _Column("PSNR gap (dB)", ("psnr_gap",), 2),
    _Column("C^α slope / optimal α/(α+1)", ("calpha_slope_mean", "calpha_optimal_slope"), optional=True),
    _Column("Jacobian trace (eff. dim.)", ("jacobian_trace_mean",), 1, optional=True),
    _Column("diverged A/B", ("diverged_A", "diverged_B"), 0),
)


def markdown_table(results: list[dict]) -> str:
    """Per (dataset, n): median A–B and sample–nearest similarities (own and other split's training
    set), memorization, train–test PSNR gap, and where measured the C^α slope and Jacobian trace."""
    rows = [summary_row(r) for r in results]
    columns = [c for c in MARKDOWN_COLUMNS if c.shown(rows)]
    head = "| dataset | n | " + " | ".join(c.header for c in columns) + " |\n"
    rule = "|---|---|" + "---|" * len(columns) + "\n"
    body = [f"| {r['dataset']} | {r['n']} | " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]
    return head + rule + "\n".join(body) + "\n"


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# --- figures per dataset ----------------------------------------------------------------------


def _dataset_figures(cfg: ExperimentConfig, dataset: str, mine: list[tuple[EvalPair, dict]], out: Path) -> None:
    if not mine:
        return
    _similarity_figures(dataset, mine, out)
    arrays = {p.n: torch.load(p.directory(cfg) / "samples.pt", weights_only=True) for p, _ in mine}
    _histogram_figure(cfg.eval.similarity, dataset, arrays, out)
    for split in SPLITS:
        _psnr_figure(dataset, split, mine, out)
    _spectra_figure(dataset, mine, out)
    _trace_figure(dataset, mine, out)
    _calpha_figure(dataset, mine, out)
    _grid(cfg, dataset, mine, arrays, out)


def _similarity_figures(dataset: str, mine, out: Path) -> None:
    """Median similarities and the train–test PSNR gap against n (the paper's transition)."""
    ns = [p.n for p, _ in mine]
    for measure in ("cosine", "correlation"):
        series = {"A–B (median)": [r.get(f"ab_{measure}_median") for _, r in mine],
                  "sample–nearest train (median)": [r.get(f"nearest_{measure}_median") for _, r in mine],
                  "sample–nearest other split (median)": [r.get(f"nearest_other_{measure}_median") for _, r in mine]}
        figures.lines(ns, series, out / f"{dataset}_{measure}_vs_n.png", xlabel="n", ylabel=measure, logx=True)
    figures.lines(ns, {"train − test PSNR gap": [r.get("psnr_gap") for _, r in mine]},
                  out / f"{dataset}_psnr_gap_vs_n.png", xlabel="n", ylabel="dB", logx=True)


def _histogram_figure(measure: str, dataset: str, arrays: dict, out: Path) -> None:
    """Per-seed similarities, one panel per n; the other-split control where samples.pt has it."""
    names = {"A–B": f"ab_{measure}", "nearest train": f"nearest_{measure}",
             "nearest other split": f"nearest_other_{measure}"}
    groups = {f"n = {n}": {label: a[key].tolist() for label, key in names.items() if key in a} for n, a in arrays.items()}
    figures.histograms(groups, measure, out / f"{dataset}_similarity_hist.png")


def _psnr_figure(dataset: str, split: str, mine, out: Path) -> None:
    """Model `split`'s PSNR curves across n, with its optimal (memorizing) denoiser's dashed."""
    curves, references = {}, {}
    for p, r in mine:
        for kind in ("train", "test"):
            if split in r["psnr"]:
                curves[f"n={p.n} {kind}"] = r["psnr"][split][kind]
            if split in (r.get("psnr_optimal") or {}):
                references[f"n={p.n} {kind}"] = r["psnr_optimal"][split][kind]
    if curves:
        figures.psnr_curves(curves, out / f"{dataset}_psnr_{split}.png", title=f"{dataset}, model {split}",
                            references=references, reference_label="optimal denoiser (memorizes)")


def _spectra_figure(dataset: str, mine, out: Path) -> None:
    """Model A's Jacobian spectrum at the first (image, σ) across n (paper Figure 3)."""
    keys = [key for _, r in mine for key in (r.get("jacobian") or {})]
    if not keys:
        return
    spectra = {f"n = {p.n}": record["eigenvalues"] for p, r in mine
               if (record := (r.get("jacobian") or {}).get(keys[0], {}).get("A"))}
    figures.spectra(spectra, out / f"{dataset}_spectra_vs_n.png", title=f"{dataset}, model A, {keys[0]}",
                    logx=False, logy=True)


def _trace_figure(dataset: str, mine, out: Path) -> None:
    """Mean Jacobian trace (effective dimensionality) against n, beside the optimal denoiser's."""
    measured = [(p, r) for p, r in mine if jacobian_records(r)]
    if not measured:
        return
    ns = [p.n for p, _ in measured]
    series = {f"model {s}": [_mean(j.get("trace") for j in jacobian_records(r, s)) for _, r in measured] for s in SPLITS}
    references = {f"optimal {s}": [_mean((j.get("optimal") or {}).get("trace") for j in jacobian_records(r, s))
                                   for _, r in measured] for s in SPLITS}
    references = {label: values for label, values in references.items() if any(v is not None for v in values)}
    figures.lines(ns, series, out / f"{dataset}_jacobian_trace_vs_n.png", xlabel="n",
                  ylabel="trace of Jacobian (eff. dim.)", logx=True, references=references)


def _calpha_figure(dataset: str, mine, out: Path) -> None:
    """Measured small-noise PSNR slope against n, with the optimal α/(α+1) as a dashed line."""
    measured = [(p, r) for p, r in mine if calpha_slopes(r)]
    if not measured:
        return
    ns = [p.n for p, _ in measured]
    series = {f"model {s}": [calpha_slopes(r).get(s) for _, r in measured] for s in SPLITS}
    references = {"optimal α/(α+1)": [r.get("calpha_optimal_slope") for _, r in measured]}
    figures.lines(ns, series, out / f"{dataset}_calpha_slope_vs_n.png", xlabel="n", ylabel="PSNR slope",
                  logx=True, references=references)


def _grid(cfg: ExperimentConfig, dataset: str, mine, arrays: dict, out: Path) -> None:
    """Rows n; columns: for a few seeds, sample A | sample B | nearest training image of A (paper Figure 2)."""
    from gdm.data.store import load_split

    data_dir = cfg.run_dir / "data" / dataset
    k = cfg.eval.grid_samples
    rows, labels, measure = [], [], cfg.eval.similarity
    for p, _ in mine:
        a = arrays[p.n]
        valid = a["valid"]
        if int(valid.sum()) < k:
            continue
        train = load_split(data_dir, "A", p.n)
        index = a[f"nearest_index_A_{measure}"]
        sa, sb = a["samples_A"][valid], a["samples_B"][valid]
        rows.append([img for i in range(k) for img in (sa[i], sb[i], train[index[i]])])
        labels.append(f"n={p.n}")
    if rows:
        titles = [t for i in range(k) for t in (f"A{i}", f"B{i}", f"near A{i}")]
        figures.image_rows(rows, titles, out / f"{dataset}_samples_vs_n.png", row_labels=labels)
