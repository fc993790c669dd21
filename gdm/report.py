"""`gdm report`: the memorization → generalization picture across n, from the pairs evaluated so far."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from gdm import figures
from gdm.cells import DONE_FILE, EvalPair, expand_pairs
from gdm.config import ExperimentConfig
from gdm.io import atomic_write_text, read_json

COLUMNS = ("dataset", "n", "ab_cosine_median", "nearest_cosine_median", "ab_correlation_median",
           "nearest_correlation_median", "memorized_fraction", "psnr_gap", "diverged_A", "diverged_B")


def make_report(cfg: ExperimentConfig) -> Path:
    """Figures and a table (CSV + Markdown) in runs/<name>/report/; returns that folder."""
    out = cfg.run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    pairs = [p for p in expand_pairs(cfg) if (p.directory(cfg) / DONE_FILE).exists()]
    results = [read_json(p.directory(cfg) / "results.json") for p in pairs]
    atomic_write_text(out / "summary.csv", _csv(results))
    atomic_write_text(out / "summary.md", markdown_table(results))
    for dataset in sorted({p.dataset for p in pairs}):
        mine = [(p, r) for p, r in zip(pairs, results, strict=False) if p.dataset == dataset]
        _dataset_figures(cfg, dataset, mine, out)
    return out


def _csv(results: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return buffer.getvalue()


def markdown_table(results: list[dict]) -> str:
    """Per (dataset, n): median A–B and sample–nearest similarities, memorization, train–test PSNR gap."""
    head = ("| dataset | n | A–B cosine | nearest cosine | A–B correlation | nearest correlation | memorized | "
            "PSNR gap (dB) | diverged A/B |\n|---|---|---|---|---|---|---|---|---|\n")
    rows = [f"| {r['dataset']} | {r['n']} | {_f(r['ab_cosine_median'])} | {_f(r['nearest_cosine_median'])} | "
            f"{_f(r['ab_correlation_median'])} | {_f(r['nearest_correlation_median'])} | {_f(r['memorized_fraction'], 2)} | "
            f"{_f(r['psnr_gap'], 2)} | {r['diverged_A']}/{r['diverged_B']} |" for r in results]
    return head + "\n".join(rows) + "\n"


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _dataset_figures(cfg: ExperimentConfig, dataset: str, mine: list[tuple[EvalPair, dict]], out: Path) -> None:
    if not mine:
        return
    ns = [p.n for p, _ in mine]
    for measure in ("cosine", "correlation"):
        series = {"A–B (median)": [r[f"ab_{measure}_median"] for _, r in mine],
                  "sample–nearest train (median)": [r[f"nearest_{measure}_median"] for _, r in mine]}
        figures.lines(ns, series, out / f"{dataset}_{measure}_vs_n.png", xlabel="n", ylabel=measure, logx=True)
    figures.lines(ns, {"train − test PSNR gap": [r["psnr_gap"] for _, r in mine]}, out / f"{dataset}_psnr_gap_vs_n.png",
                  xlabel="n", ylabel="dB", logx=True)
    arrays = {p.n: torch.load(p.directory(cfg) / "samples.pt", weights_only=True) for p, _ in mine}
    measure = cfg.eval.similarity
    groups = {f"n = {n}": {"A–B": a[f"ab_{measure}"].tolist(), "nearest train": a[f"nearest_{measure}"].tolist()}
              for n, a in arrays.items()}
    figures.histograms(groups, measure, out / f"{dataset}_similarity_hist.png")
    for split in ("A", "B"):
        curves = {f"n={p.n} {kind}": r["psnr"][split][kind] for p, r in mine for kind in ("train", "test") if split in r["psnr"]}
        if curves:
            figures.psnr_curves(curves, out / f"{dataset}_psnr_{split}.png", title=f"{dataset}, model {split}")
    _grid(cfg, dataset, mine, arrays, out)


def _grid(cfg: ExperimentConfig, dataset: str, mine, arrays: dict, out: Path) -> None:
    """Rows n; columns: for a few seeds, sample A | sample B | nearest training image of A (paper Figure 2)."""
    from gdm.data.store import load_split

    data_dir = cfg.run_dir / "data" / dataset
    k = cfg.eval.grid_samples
    rows, measure = [], cfg.eval.similarity
    for p, _ in mine:
        a = arrays[p.n]
        valid = a["valid"]
        if int(valid.sum()) < k:
            continue
        train = load_split(data_dir, "A", p.n)
        index = a[f"nearest_index_A_{measure}"]
        sa, sb = a["samples_A"][valid], a["samples_B"][valid]
        rows.append([img for i in range(k) for img in (sa[i], sb[i], train[index[i]])])
    if rows:
        titles = [t for i in range(k) for t in (f"A{i}", f"B{i}", f"near A{i}")]
        figures.image_rows(rows, titles, out / f"{dataset}_samples_vs_n.png", row_labels=[f"n={p.n}" for p, _ in mine])
