"""`gdm report`: the memorization → generalization picture across n, from the pairs evaluated so far.

Each pair's results.json is read into its typed record (gdm.results.PairResults), and the report reads its
fields, never a key. Every per-pair result except dataset, n and psnr is optional (older runs, Jacobian
analysis off, not a C^α dataset, every sample diverged): a missing value is "–" in the Markdown table,
empty in the CSV, a gap in a line plot, and a figure whose data is missing altogether is not drawn.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gdm import evaluate, figures, lifecycle
from gdm.analysis import evidence, transition, uncertainty, verdict
from gdm.analysis.controls import band_sigmas
from gdm.cells import (
    EvalPair,
    Files,
    config_path,
    data_dir,
    expand_pairs,
    report_dir,
    resolved_settings,
    write_resolved_config,
)
from gdm.config import ExperimentConfig, to_yaml
from gdm.io import atomic_write_json, atomic_write_text, file_sha256, read_json, stable_hash
from gdm.pair_records import Agreement, Realism, sampler_key
from gdm.results import PairResults

SPLITS = ("A", "B")
MEASURES = ("cosine", "correlation")  # the similarity figures' measures (the paper's cosine, the headline)


REPORT_PATIENCE = 600.0  # seconds a driver waits for another one making the same report


def make_report(cfg: ExperimentConfig, ownership: lifecycle.Ownership = lifecycle.FLOCK) -> Path:
    """Figures and a table (CSV + Markdown) in runs/<name>/report/ from the pairs of the current
    settings that are done; returns that folder (`ownership`: how its lease is held, see launch.owners).
    Pairs of older settings never enter it. A report whose inputs (the pairs' results files) have not
    changed is left as it is (read-only storage)."""
    out = report_dir(cfg)
    pairs = [p for p in expand_pairs(cfg) if lifecycle.is_done(p.directory(cfg))]
    verify_pairs(cfg, pairs)
    inputs = report_inputs(cfg, pairs)
    if _is_current(cfg, out, inputs):
        return out
    # One writer at a time (two drivers finish together): the second waits on the lease, then finds the
    # report made from the same inputs; without it both would log the same W&B report run at once.
    with lifecycle.Lease(out, patience=REPORT_PATIENCE, ownership=ownership):
        if _record_of(out) != inputs:
            _write_report(cfg, pairs, inputs, out)
        # Under the same lease: config.yaml may be another driver's of the same name, started since ours;
        # the run's config.yaml and report/config.yaml are then this report's, never a mix of two runs.
        write_resolved_config(cfg)
        write_resolved_config(cfg, out / "config.yaml")
    return out


def _write_report(cfg: ExperimentConfig, pairs: list[EvalPair], inputs: dict, out: Path) -> None:
    everything = [PairResults.from_json(read_json(p.directory(cfg) / Files.RESULTS)) for p in pairs]
    _training_time_figures(cfg, pairs, everything, out)
    final = [i for i, p in enumerate(pairs) if p.step is None]  # below: the final models' pairs only
    grouped: dict[tuple[str, int], list[tuple[EvalPair, PairResults]]] = {}  # (dataset, n) → its replicates
    for i in final:
        grouped.setdefault((pairs[i].dataset, pairs[i].n), []).append((pairs[i], everything[i]))
    samples = {key: [torch.load(p.directory(cfg) / Files.SAMPLES, weights_only=True) for p, _ in group]
               for key, group in grouped.items()}
    rows = {key: group[0][1] if len(group) == 1 else pooled_results(cfg, [r for _, r in group], samples[key])
            for key, group in grouped.items()}
    results, replicates = list(rows.values()), [len(group) for group in grouped.values()]
    atomic_write_text(out / "summary.csv", summary_csv(results, replicates))
    transitions = {}
    for dataset in sorted({key[0] for key in rows}):
        mine = [(grouped[key][0][0], row) for key, row in rows.items() if key[0] == dataset]
        replicas = {key[1]: samples[key] for key in rows if key[0] == dataset}
        transitions[dataset] = _dataset_figures(cfg, dataset, mine, replicas, out)
    atomic_write_text(out / "summary.md", markdown_table(results, replicates) + transition_section(transitions)
                      + warnings_section(results))
    if cfg.wandb.mode != "disabled":
        from gdm import wandb_log

        wandb_log.log_report(cfg, [summary_row(r) for r in results], sorted(out.glob("*.png")))
    atomic_write_json(out / "inputs.json", inputs)  # last: a report cut short is made again next time


def pooled_results(cfg: ExperimentConfig, replicates: list[PairResults], samples: list[dict]) -> PairResults:
    """One (dataset, n) over its training replicates (trainer.replicates), from each replicate's results and
    samples.pt: point values averaged over the replicates, the verdict's intervals by the two-level bootstrap
    (replicates, then seeds or images, one unit draw for all: every replicate sampled the same seeds and
    images), and the verdict decided from them as for one pair (docs/SCIENCE.md, Pooled replicates)."""
    splits = replicates[0].splits
    stored = [evaluate.evidence_arrays(cfg, arrays, splits) for arrays in samples]
    seeds = evidence.pooled_seeds([s for s, _ in stored])
    images = [evidence.pooled_images([i[m] for _, i in stored]) for m in range(len(splits))]
    resample = uncertainty.TwoLevel(len(samples), shared_units=True)
    found, named = evidence.interval_evidence(seeds, images, cfg.eval.memorization_threshold,
                                              np.random.default_rng(cfg.eval.seed), resample)
    decided = verdict.verdict(verdict.conditions(found))
    mean = _mean_of(replicates)
    memorized = mean.memorized_fraction if found.memorized_fraction is None else found.memorized_fraction.estimate
    return replace(mean, pair=None, memorized_fraction=memorized, verdict=decided.label,
                   verdict_decided_by=decided.decided_by, verdict_checks=decided.outcomes,
                   intervals=evidence.intervals_json(named, splits, band_sigmas(cfg.eval.psnr_sigmas)),
                   warnings=[f"replicate {r}: {w}" for r, x in enumerate(replicates) for w in x.warnings or ()] or None)


def _mean_of(values: list):
    """The replicates' mean of a results value: equal values as they are, numbers averaged, lists, mappings and
    records element by element; anything else (a label) is the first replicate's. None is left out."""
    present = [v for v in values if v is not None]
    if not present or all(v == present[0] for v in present):
        return present[0] if present else None
    first = present[0]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(present) / len(present)
    if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in present):
        return [_mean_of(list(column)) for column in zip(*present, strict=True)]
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() for v in present):
        return {k: _mean_of([v[k] for v in present]) for k in first}
    if is_dataclass(first) and all(type(v) is type(first) for v in present):
        return replace(first, **{f.name: _mean_of([getattr(v, f.name) for v in present]) for f in fields(first)})
    return first


def verify_pairs(cfg: ExperimentConfig, pairs: list[EvalPair]) -> None:
    """Each pair's results and samples against the sha256 in its DONE: a file altered or damaged after its
    evaluation raises IntegrityError naming it (and is set aside for re-evaluation), so nothing is published
    from it."""
    for pair in pairs:
        for name in (Files.RESULTS, Files.SAMPLES):
            lifecycle.verify(pair.directory(cfg), name)


def report_inputs(cfg: ExperimentConfig, pairs: list[EvalPair]) -> dict:
    """What the report is made from: each pair's id and the sha256 of its results and samples."""
    files = {p.pair_id: {name: file_sha256(p.directory(cfg) / name) for name in (Files.RESULTS, Files.SAMPLES)}
             for p in pairs}
    return {"pairs": files, "settings": stable_hash(resolved_settings(to_yaml(cfg)))}


def _is_current(cfg: ExperimentConfig, out: Path, inputs: dict) -> bool:
    """The report was made from `inputs`, and the run's config.yaml says the settings it was made with."""
    configs = (config_path(cfg), out / "config.yaml")
    wanted = resolved_settings(to_yaml(cfg))
    return _record_of(out) == inputs and all(p.exists() and resolved_settings(p.read_text()) == wanted for p in configs)


def _record_of(out: Path) -> dict | None:
    try:
        return read_json(out / "inputs.json")
    except (OSError, ValueError):
        return None


def warnings_section(results: list[PairResults]) -> str:
    """A Markdown list of each pair's health warnings (a model that does not denoise, all samples diverged)."""
    lines = [f"- {r.dataset}, n = {r.n}: {w}" for r in results for w in r.warnings or ()]
    return "\n## Warnings\n\n" + "\n".join(lines) + "\n" if lines else ""


# --- the summary table ------------------------------------------------------------------------


def summary_row(results: PairResults) -> dict:
    """One (dataset, n) as a flat record: every scalar results.json holds (gdm.results.PairResults.flat), then
    the means of its nested records (C^α slopes, Jacobian traces)."""
    row = {k: v for k, v in results.flat().items() if v is None or isinstance(v, (str, int, float))}
    optimal = [r.get("optimal") or {} for r in jacobian_records(results)]
    return row | {"calpha_slope_mean": _mean(calpha_slopes(results).values()),
                  "jacobian_trace_mean": _mean(r.get("trace") for r in jacobian_records(results)),
                  "jacobian_trace_optimal_mean": _mean(o.get("trace") for o in optimal),
                  "jacobian_optimal_relative_difference_mean": _mean(o.get("relative_difference") for o in optimal)}


def calpha_slopes(results: PairResults) -> dict:
    """split → measured small-noise slope of the test PSNR curve (C^α datasets only; may be None)."""
    return dict(results.calpha_slope or {})


def jacobian_records(results: PairResults, split: str | None = None) -> list[dict]:
    """Jacobian records (trace, eigenvalues, ...) of every image and σ, of one split or of all."""
    per_point = (results.jacobian or {}).values()
    return [record for records in per_point for s, record in records.items() if split in (None, s)]


def _mean(values) -> float | None:
    """Mean of the finite values, None when there are none (never NaN: it would print as 'nan')."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def summary_csv(results: list[PairResults], replicates: list[int] | None = None) -> str:
    """One row per (dataset, n); with `replicates` (training replicates pooled per row) above 1 anywhere, a
    `replicates` column after n."""
    rows = [summary_row(r) for r in results]
    if replicates and max(replicates) > 1:
        rows = [dict([*list(row.items())[:3], ("replicates", k), *list(row.items())[3:]])  # after pair, dataset, n
                for row, k in zip(rows, replicates, strict=True)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)  # None, or a value an older file lacks → empty cell
    return buffer.getvalue()


@dataclass(frozen=True)
class _Column:
    """A Markdown column: its header and the values it shows of a pair, joined by '/' (e.g. diverged A/B)."""

    header: str
    values: Callable[[PairResults], tuple]
    digits: int = 3
    optional: bool = False  # dropped when no row has a value (e.g. C^α slope on a disks-only run)

    def cell(self, results: PairResults) -> str:
        return "/".join(_f(value, self.digits) for value in self.values(results))

    def shown(self, results: list[PairResults]) -> bool:
        return not self.optional or any(v is not None for r in results for v in self.values(r))


def _per_split(value: Callable[[PairResults, str], float | None]) -> Callable[[PairResults], tuple]:
    return lambda r: tuple(value(r, s) for s in SPLITS)


# "other split": each sample's nearest image in the training set of the model it was NOT trained
# on, the control for "nearest train": at large n both should be alike (generalization).
MARKDOWN_COLUMNS = (
    _Column("A–B cosine", lambda r: (r.measure("cosine").ab_median,)),
    _Column("nearest cosine", lambda r: (r.measure("cosine").nearest_median,)),
    _Column("nearest cosine, other split", lambda r: (r.measure("cosine").nearest_other_median,)),
    _Column("A–B correlation", lambda r: (r.measure("correlation").ab_median,)),
    _Column("nearest correlation", lambda r: (r.measure("correlation").nearest_median,)),
    _Column("nearest correlation, other split", lambda r: (r.measure("correlation").nearest_other_median,)),
    _Column("memorized", lambda r: (r.memorized_fraction,), 2),
    _Column("memorized, 95 % interval", lambda r: (_ci(r.interval("memorized"), 2),), optional=True),
    _Column("A–B − nearest, 95 % interval", lambda r: (_ci(r.interval("agreement_minus_nearest"), 3),),
            optional=True),
    _Column("memorized (L2 ratio < 1/3)", lambda r: (r.memorized_fraction_l2,), 2, optional=True),
    _Column("memorized, other split", lambda r: (r.memorized_fraction_other,), 2),
    _Column("PSNR gap (dB)", lambda r: (r.psnr_gap_mean,), 2),
    _Column("C^α slope / optimal α/(α+1)", lambda r: (_mean(calpha_slopes(r).values()), r.calpha_optimal_slope),
            optional=True),
    _Column("Jacobian trace (eff. dim.)", lambda r: (_mean(j.get("trace") for j in jacobian_records(r)),), 1,
            optional=True),
    _Column("diverged A/B", _per_split(lambda r, s: r.diverged.get(s)), 0),
    # controls: A–B agreement counts above the cross-seed baseline and the nearest-training similarity; a
    # new image reaches the novelty level; test PSNR minus the Gaussian (Wiener) reference, worst σ of the band
    _Column("A–B correlation, other seeds", lambda r: (r.measure("correlation").cross_seed_median,), optional=True),
    _Column("held-out–nearest correlation (novelty)", lambda r: (r.measure("correlation").novelty_median,),
            optional=True),
    _Column("test − Gaussian ref. (dB), min A/B", _per_split(lambda r, s: r.margin(s).gaussian_margin_db_min), 2,
            optional=True),
    _Column("contrast A/B/held-out", lambda r: (r.realism_of("A").contrast, r.realism_of("B").contrast,
                                                r.contrast_test), 3, optional=True),
    _Column("spectrum dist. A/B (dB)", _per_split(lambda r, s: r.realism_of(s).spectrum_distance_db), 1,
            optional=True),
    _Column("histogram dist. A/B", _per_split(lambda r, s: r.realism_of(s).histogram_distance), 3, optional=True),
    _Column("verdict", lambda r: (r.verdict,), optional=True),
    _Column("decided by", lambda r: (r.verdict_decided_by,), optional=True),
)


def _ci(interval: dict | None, digits: int) -> str | None:
    """"estimate [low, high]" of an interval record (an open end: "–")."""
    if interval is None:
        return None
    low, estimate, high = (_f(interval[k], digits) for k in ("low", "estimate", "high"))
    return f"{estimate} [{low}, {high}]"


def markdown_table(results: list[PairResults], replicates: list[int] | None = None) -> str:
    """Per (dataset, n): median A–B and sample–nearest similarities (own and other split's training
    set), memorization, train–test PSNR gap, and where measured the C^α slope and Jacobian trace; with
    `replicates` above 1 anywhere, a column of the training replicates each row pools."""
    columns = [c for c in MARKDOWN_COLUMNS if c.shown(results)]
    pooled = bool(replicates) and max(replicates) > 1
    counts = [f" {k} |" for k in replicates] if pooled else [""] * len(results)
    head = "| dataset | n |" + (" replicates |" if pooled else "") + " "
    head += " | ".join(c.header for c in columns) + " |\n"
    rule = "|---|---|" + "---|" * (len(columns) + pooled) + "\n"
    body = [f"| {r.dataset} | {r.n} |{k} " + " | ".join(c.cell(r) for c in columns) + " |"
            for r, k in zip(results, counts, strict=True)]
    return head + rule + "\n".join(body) + "\n"


def _f(value, digits: int = 3) -> str:
    if isinstance(value, str):  # the verdict
        return value
    return "–" if value is None else f"{value:.{digits}f}"


# --- figures per dataset ----------------------------------------------------------------------


def _dataset_figures(cfg: ExperimentConfig, dataset: str, mine: list[tuple[EvalPair, PairResults]],
                     replicas: dict[int, list[dict]], out: Path) -> dict | None:
    """The dataset's figures from its rows (pooled over replicates) and, per n, each replicate's samples.pt (the
    sample figures show replicate 0's); returns its transition points (None below two evaluated sizes)."""
    if not mine:
        return None
    _similarity_figures(dataset, mine, out)
    arrays = {n: replicates[0] for n, replicates in replicas.items()}
    _histogram_figure(cfg.eval.similarity, dataset, arrays, out)
    for split in SPLITS:
        _psnr_figure(dataset, split, mine, out)
    _spectra_figure(dataset, mine, out)
    _trace_figure(dataset, mine, out)
    _calpha_figure(dataset, mine, out)
    _controls_figure(dataset, mine, out)
    _realism_figure(dataset, arrays, out)
    _grid(cfg, dataset, mine, arrays, out)
    return _transition(cfg, dataset, replicas, out)


def _training_time_figures(cfg: ExperimentConfig, pairs: list[EvalPair], results: list[PairResults],
                           out: Path) -> None:
    """The (n, training steps) plane per dataset, when models were kept (trainer.keep_models_at): memorized
    fraction and A–B agreement − nearest-training similarity (headline measure) of each pair evaluated at each
    kept step and at the end (max_steps). <dataset>_training_time.png."""
    for dataset in sorted({p.dataset for p in pairs if p.step is not None}):
        mine = [(p, r) for p, r in zip(pairs, results, strict=True) if p.dataset == dataset]
        ns = sorted({p.n for p, _ in mine})
        steps = sorted({p.step or cfg.trainer.max_steps for p, _ in mine})
        planes = {"memorized fraction": [[None] * len(ns) for _ in steps],
                  "A–B − nearest (median)": [[None] * len(ns) for _ in steps]}
        for p, r in mine:
            row, column, h = steps.index(p.step or cfg.trainer.max_steps), ns.index(p.n), r.headline()
            planes["memorized fraction"][row][column] = r.memorized_fraction
            if h.ab_median is not None and h.nearest_median is not None:
                planes["A–B − nearest (median)"][row][column] = h.ab_median - h.nearest_median
        figures.planes(ns, steps, planes, out / f"{dataset}_training_time.png",
                       title=f"{dataset}: memorization across n and training time")


def _seed_flags(cfg: ExperimentConfig, samples: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pair's valid samples in the headline measure: memorized flags (both models pooled), and per seed its
    A–B agreement and its two samples' mean nearest-training similarity (paired by seed)."""
    m = cfg.eval.similarity
    nearest = samples[Agreement.key("nearest", m)].double().numpy()
    agreement = samples[Agreement.key("ab", m)].double().numpy()
    per_seed = nearest.reshape(len(SPLITS), -1).mean(0) if len(agreement) else nearest
    return nearest > cfg.eval.memorization_threshold, agreement, per_seed


def _pooled_flags(cfg: ExperimentConfig, replicates: list[dict]) -> tuple[np.ndarray, ...]:
    """`_seed_flags` of every training replicate of one n, concatenated: the pooled seeds of that n."""
    per_replicate = [_seed_flags(cfg, arrays) for arrays in replicates]
    return tuple(np.concatenate(parts) for parts in zip(*per_replicate, strict=True))


def _transition(cfg: ExperimentConfig, dataset: str, replicas: dict[int, list[dict]], out: Path) -> dict | None:
    """The transition point: n* where the memorized fraction crosses 1/2 (logistic fit over log n) and the n
    where A–B agreement first exceeds the nearest-training similarity, each with its bootstrap interval
    (gdm.analysis.transition); <dataset>_transition.json and .png. Each n pools the seeds of its training
    replicates. Pairs without a valid sample are left out."""
    ns, flags = zip(*[(n, _pooled_flags(cfg, replicas[n])) for n in sorted(replicas)], strict=True) \
        if replicas else ((), ())
    kept = [(n, f) for n, f in zip(ns, flags, strict=True) if len(f[1])]
    if len(kept) < 2:
        return None
    rng = np.random.default_rng(cfg.eval.seed)
    grid = [n for n, _ in kept]
    memorized = transition.memorization_transition(grid, [f[0] for _, f in kept], rng)
    agreement = transition.agreement_transition(grid, [f[1] for _, f in kept], [f[2] for _, f in kept], rng)
    found = {"sizes": grid, "memorization_n_star": _js(memorized), "agreement_n_star": _js(agreement)}
    atomic_write_json(out / f"{dataset}_transition.json", found)
    fractions = [uncertainty.bootstrap(f[0].astype(np.float64), uncertainty.mean, rng) for _, f in kept]
    series = {"memorized fraction (95 % interval)": tuple(
        [getattr(i, end) for i in fractions] for end in ("estimate", "low", "high"))}
    crossings = {label: None if i is None else (i.estimate, i.low, i.high)
                 for label, i in (("n* (memorized = 1/2)", memorized), ("n (agreement > nearest)", agreement))}
    figures.transition(grid, series, crossings, out / f"{dataset}_transition.png", title=f"{dataset}: transition")
    return found


def transition_section(transitions: dict[str, dict | None]) -> str:
    """summary.md's transition points per dataset, with their 95 % intervals ("not bracketed": the grid's sizes
    do not include a crossing; `gdm run` with more sizes between the last memorizing and first generalizing n)."""
    lines = []
    for dataset, found in sorted(transitions.items()):
        if found is None:
            continue
        for label, key in (("n* (memorized fraction = 1/2)", "memorization_n_star"),
                           ("n where A–B agreement exceeds nearest", "agreement_n_star")):
            lines.append(f"- {dataset}, {label}: {_ci(found[key], 0) or 'not bracketed by the grid'}")
    return "\n## Transition (95 % intervals)\n\n" + "\n".join(lines) + "\n" if lines else ""


def _js(interval) -> dict | None:
    return None if interval is None else interval.to_json()


def _similarity_figures(dataset: str, mine, out: Path) -> None:
    """Median similarities and the train–test PSNR gap against n (the paper's transition)."""
    ns = [p.n for p, _ in mine]
    for measure in MEASURES:
        stats = [r.measure(measure) for _, r in mine]
        series = {"A–B (median)": [m.ab_median for m in stats],
                  "sample–nearest train (median)": [m.nearest_median for m in stats],
                  "sample–nearest other split (median)": [m.nearest_other_median for m in stats]}
        controls = {"A–B, different seeds (median)": [m.cross_seed_median for m in stats],
                    "held-out–nearest train (median)": [m.novelty_median for m in stats]}
        controls = {label: values for label, values in controls.items() if any(v is not None for v in values)}
        figures.lines(ns, series, out / f"{dataset}_{measure}_vs_n.png", xlabel="n", ylabel=measure, logx=True,
                      references=controls)
    figures.lines(ns, {"train − test PSNR gap": [r.psnr_gap_mean for _, r in mine]},
                  out / f"{dataset}_psnr_gap_vs_n.png", xlabel="n", ylabel="dB", logx=True)


def _histogram_figure(measure: str, dataset: str, arrays: dict, out: Path) -> None:
    """Per-seed similarities, one panel per n, with the controls samples.pt holds (other split, other
    seeds, held-out images); each series scaled to unit area, as they differ in length."""
    names = {"A–B": "ab", "nearest train": "nearest", "nearest other split": "nearest_other",
             "A–B, other seeds": "cross_seed", "held-out–nearest train": "novelty"}
    keys = {label: Agreement.key(kind, measure) for label, kind in names.items()}
    groups = {
        f"n = {n}": {label: a[key].tolist() for label, key in keys.items() if key in a} for n, a in arrays.items()
    }
    figures.histograms(groups, measure, out / f"{dataset}_similarity_hist.png", density=True)


def _psnr_figure(dataset: str, split: str, mine, out: Path) -> None:
    """Model `split`'s PSNR curves across n, with its optimal (memorizing) denoiser's dashed and the
    Gaussian (Wiener) reference's dash-dotted."""
    curves, references, linear = {}, {}, {}
    for p, r in mine:
        for kind in ("train", "test"):
            if split in r.psnr:
                curves[f"n={p.n} {kind}"] = r.psnr[split][kind]
            if split in (r.psnr_optimal or {}):
                references[f"n={p.n} {kind}"] = r.psnr_optimal[split][kind]
            if split in (r.psnr_gaussian or {}):
                linear[f"n={p.n} {kind}"] = r.psnr_gaussian[split][kind]
    if curves:
        figures.psnr_curves(curves, out / f"{dataset}_psnr_{split}.png", title=f"{dataset}, model {split}",
                            references=references, reference_label="optimal denoiser (memorizes)",
                            linear=linear, linear_label="Gaussian (Wiener) reference")


def _spectra_figure(dataset: str, mine, out: Path) -> None:
    """Model A's Jacobian spectrum at the first (image, σ) across n (paper Figure 3)."""
    keys = [key for _, r in mine for key in (r.jacobian or {})]
    if not keys:
        return
    spectra = {f"n = {p.n}": record["eigenvalues"] for p, r in mine
               if (record := (r.jacobian or {}).get(keys[0], {}).get("A"))}
    figures.spectra(spectra, out / f"{dataset}_spectra_vs_n.png", title=f"{dataset}, model A, {keys[0]}",
                    logx=False, logy=True)


def _trace_figure(dataset: str, mine, out: Path) -> None:
    """Mean Jacobian trace (effective dimensionality) against n, beside the optimal denoiser's."""
    measured = [(p, r) for p, r in mine if jacobian_records(r)]
    if not measured:
        return
    ns = [p.n for p, _ in measured]
    series = {
        f"model {s}": [_mean(j.get("trace") for j in jacobian_records(r, s)) for _, r in measured] for s in SPLITS
    }
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
    references = {"optimal α/(α+1)": [r.calpha_optimal_slope for _, r in measured]}
    figures.lines(ns, series, out / f"{dataset}_calpha_slope_vs_n.png", xlabel="n", ylabel="PSNR slope",
                  logx=True, references=references)


def _controls_figure(dataset: str, mine, out: Path) -> None:
    """Against n: test PSNR minus the Gaussian reference (mean over the σ band; 0 dashed), sample contrast
    (held-out dashed), and the spectrum and histogram distances of the samples to the held-out images."""
    if not any(r.contrast_test is not None or r.margin("A").gaussian_margin_db_mean is not None for _, r in mine):
        return
    ns = [p.n for p, _ in mine]

    def per_split(value: Callable[[PairResults, str], float | None]) -> dict:
        return {f"model {s}": [value(r, s) for _, r in mine] for s in SPLITS}

    panels = {"test − Gaussian reference (dB)": per_split(lambda r, s: r.margin(s).gaussian_margin_db_mean),
              "contrast (per-image std)": per_split(lambda r, s: r.realism_of(s).contrast),
              "spectrum distance (dB)": per_split(lambda r, s: r.realism_of(s).spectrum_distance_db),
              "pixel histogram distance": per_split(lambda r, s: r.realism_of(s).histogram_distance)}
    references = {"test − Gaussian reference (dB)": {"Gaussian reference": [0.0] * len(ns)},
                  "contrast (per-image std)": {"held-out": [r.contrast_test for _, r in mine]}}
    figures.line_panels(ns, panels, out / f"{dataset}_controls_vs_n.png", xlabel="n", logx=True, references=references)


def _realism_figure(dataset: str, arrays: dict, out: Path) -> None:
    """Model A's sample contrast, power spectrum and pixel density for every n, beside the held-out images'."""
    have = {n: a for n, a in arrays.items() if Realism.key("spectrum", "A") in a}
    if not have:
        return
    pick = {kind: {f"n = {n} A": a[Realism.key(kind, "A")].tolist() for n, a in have.items()} for kind in Realism.KINDS}
    held_out = next(iter(have.values()))
    for kind in pick:
        pick[kind]["held-out"] = held_out[Realism.key(kind, "test")].tolist()
    from gdm.analysis.controls import HISTOGRAM_RANGE

    figures.realism(pick["contrast"], pick["spectrum"], pick["histogram"], HISTOGRAM_RANGE,
                    out / f"{dataset}_realism_vs_n.png", title=f"{dataset}: samples of model A against held-out images")


def _grid(cfg: ExperimentConfig, dataset: str, mine, arrays: dict, out: Path) -> None:
    """Rows n; columns: for a few seeds, sample A | sample B | nearest training image of A (paper Figure 2)."""
    from gdm.data.store import load_split

    folder = data_dir(cfg, dataset)
    k = cfg.eval.grid_samples
    rows, labels, measure = [], [], cfg.eval.similarity
    for p, r in mine:
        a = arrays[p.n]
        valid = a["valid"]
        if int(valid.sum()) < k:
            continue
        train = load_split(folder, "A", p.n)
        index = a[Agreement.key("nearest_index", measure, "A")]
        sa, sb = (a[sampler_key("samples", s)][valid] for s in SPLITS)
        rows.append([img for i in range(k) for img in (sa[i], sb[i], train[index[i]])])
        labels.append(f"n={p.n}" + (f"\n{r.verdict}" if r.verdict else ""))
    if rows:
        titles = [t for i in range(k) for t in (f"A{i}", f"B{i}", f"near A{i}")]
        figures.image_rows(rows, titles, out / f"{dataset}_samples_vs_n.png", row_labels=labels)
