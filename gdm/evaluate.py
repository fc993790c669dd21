"""The evaluation of one (dataset, n) pair: shared-seed samples from the A and B models, their agreement,
memorization, denoising PSNR curves and (optionally) Jacobian geometry; the controls that tell
generalization from memorization and from shared underfitting (cross-seed baseline, novelty reference,
Gaussian reference, sample realism) and the pair's verdict (gdm.analysis.controls); files, figures and
a W&B run. Every number computed from the models (samples, PSNR curves, Jacobians) is computed in true fp32,
not TF32 (gdm.precision), and results.json's "precision" records the arithmetic.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gdm import figures, lifecycle
from gdm.analysis import calpha, controls, evidence, jacobian, memorization, psnr, similarity, tangent, verdict
from gdm.analysis.blind_gaussian import BlindGaussianDenoiser
from gdm.analysis.nearest import nearest
from gdm.analysis.optimal import optimal_geometry, optimal_psnr_curves
from gdm.analysis.verdict import IntervalEvidence
from gdm.cells import EvalPair, Files, data_dir
from gdm.config import ExperimentConfig
from gdm.io import atomic_torch_save, atomic_write_json, atomic_write_text
from gdm.pair_records import Agreement, PairEvaluation, Realism, sampler_key
from gdm.precision import current_precision, true_fp32
from gdm.results import GaussianMargin, PairResults, health_warnings
from gdm.sample import SampleResult, sample

Device = torch.device | str  # where models and tensors run ("cpu", "cuda", …)
MEASURES = ("cosine", "correlation")  # always reported; cfg.eval.similarity picks the headline
SAMPLER_ARRAYS = (("samples", "images"), ("steps", "steps"), ("diverged", "diverged"))  # samples.pt ← SampleResult


@dataclass
class PairData:
    denoisers: dict  # split → eval-mode f(y)
    train: dict  # split → its training images [n, 1, H, W]
    test: torch.Tensor  # held-out images
    data_dir: Path
    family: str


def eval_pair(cfg: ExperimentConfig, pair: EvalPair, *, progress: bool = False) -> lifecycle.Finished:
    """Evaluate `pair` (both cells must be done): the work only, not the folder's life. Writes samples.pt, the
    figures and results.json/csv, and returns what the pair's DONE records (results and samples to checksum,
    status flags) with its W&B run to log once DONE is written (`launch.task.run_owned` writes both).

    Each cell's model.pt is verified against the checksum its cell recorded when it finished; a
    mismatch raises lifecycle.IntegrityError naming the file and sends that cell back to training.
    """
    directory = pair.directory(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = load_pair(cfg, pair, device)
    with true_fp32():  # the paper's numbers in IEEE fp32 whatever this process allows (TF32 would cost 1e-3)
        samples = {s: _sample(cfg, data.denoisers[s], data.test.shape[1:], device, progress) for s in data.denoisers}
        results, evaluation = summarize(cfg, pair, data, samples, device)
        jacobian = geometry_of(cfg, data, directory) if cfg.eval.jacobian.enabled else None
        results = replace(results, jacobian=jacobian, precision=current_precision(model_dtype(data)).record())
    check_cells_unchanged(cfg, pair)
    figures = write_outputs(cfg, pair, results, evaluation, samples, data)

    def publish(done: dict) -> None:  # after DONE: a W&B failure can cost nothing that was computed
        log_wandb(cfg, pair, results, evaluation, figures, samples)

    return lifecycle.Finished(outputs=(Files.RESULTS, Files.SAMPLES), flags=results.flags(),
                              after_done=publish if cfg.wandb.mode != "disabled" else None)


def check_cells_unchanged(cfg: ExperimentConfig, pair: EvalPair) -> None:
    """The pair's results stand for its cells' models as they are now: a cell deleted, reopened or retrained
    while the pair was evaluated fails the pair (IntegrityError naming the cell), and the next `gdm run`
    trains that cell again and re-evaluates the pair."""
    for cell in pair.cells:
        directory = cell.directory(cfg)
        if not lifecycle.is_done(directory):
            raise lifecycle.IntegrityError(f"cell {cell.cell_id} was deleted or reopened while pair {pair.pair_id} "
                                           "was evaluated; the next `gdm run` trains it again and re-evaluates")
        lifecycle.verify(directory, pair.model_file)


def load_pair(cfg: ExperimentConfig, pair: EvalPair, device: Device) -> PairData:
    from gdm.data.store import load_split
    from gdm.training.model_file import load_denoiser

    folder = data_dir(cfg, pair.dataset)
    denoisers = {c.split: load_denoiser(lifecycle.verify(c.directory(cfg), pair.model_file), device)
                 for c in pair.cells}
    train = {c.split: load_split(folder, c.split, pair.n) for c in pair.cells}
    test = load_split(folder, "test")
    return PairData(denoisers, train, test, folder, cfg.datasets[pair.dataset].family)


def model_dtype(data: PairData) -> torch.dtype:
    """The dtype the pair's models compute in (both are loaded alike from model.pt)."""
    return next(next(iter(data.denoisers.values())).parameters()).dtype


def _sample(
    cfg: ExperimentConfig, denoiser: nn.Module, shape: Sequence[int], device: Device, progress: bool
) -> SampleResult:
    seeds = range(cfg.eval.seed, cfg.eval.seed + cfg.eval.num_samples)
    return sample(denoiser, seeds, tuple(shape), cfg.sampler, device, batch_size=cfg.eval.batch_size, progress=progress)


def summarize(
    cfg: ExperimentConfig, pair: EvalPair, data: PairData, samples: dict, device: Device
) -> tuple[PairResults, PairEvaluation]:
    """results.json's record and the per-sample records behind samples.pt; diverged samples are excluded from
    the medians and counted against agreement in the intervals. The Jacobian and the precision record are
    added by eval_pair."""
    splits = sorted(samples)
    ok = torch.stack([~samples[s].diverged for s in splits]).all(0)
    measures = (*MEASURES, *(m for m in [cfg.eval.similarity] if m not in MEASURES))
    agreements = {m: agreement(m, splits, samples, data, ok, device) for m in measures}
    headline, threshold = agreements[cfg.eval.similarity].pooled(), cfg.eval.memorization_threshold
    fields, per_image = _psnr_fields(cfg, data, device)
    results = PairResults(
        pair=pair.pair_id, dataset=pair.dataset, n=pair.n, kept_step=pair.step, num_samples=int(ok.numel()),
        num_valid=int(ok.sum()),
        headline_similarity=cfg.eval.similarity, diverged={s: int(samples[s].diverged.sum()) for s in splits},
        median_steps={s: float(samples[s].steps.float().median()) for s in splits},
        agreement={m: record.summary() for m, record in agreements.items()},
        memorized_fraction=_fraction(headline["nearest"] > threshold),
        memorized_fraction_other=_fraction(headline["nearest_other"] > threshold),
        memorized_fraction_l2=_l2_memorized(splits, samples, data, ok, device),
        reproducibility=_fraction(agreements[cfg.eval.similarity].ab > threshold), **fields)
    realism = realism_of(data, samples, ok)
    results = replace(results, contrast_test=realism.contrast("test"), realism=realism.summary())
    evidence, intervals = _interval_evidence(cfg, results, agreements[cfg.eval.similarity], samples, ok, per_image)
    results = replace(results, **_verdict(results, evidence), intervals=intervals, **_calpha(cfg, data, results),
                      warnings=health_warnings(results.psnr, results.num_valid))
    return results, PairEvaluation(ok, agreements, realism, _per_image_arrays(per_image))


def _l2_memorized(splits: list[str], samples: dict, data: PairData, ok: torch.Tensor, device: Device) -> float | None:
    """Share of valid samples (both models) memorized by the L2 ratio criterion (None below 2 training images)."""
    if pair_n(data) < 2 or not int(ok.sum()):
        return None
    ratios = torch.cat([memorization.l2_ratio(samples[s].images[ok], data.train[s], device=device) for s in splits])
    return _fraction(memorization.l2_ratio_memorized(ratios))


def pair_n(data: PairData) -> int:
    return min(len(x) for x in data.train.values())


def _seed_arrays(record: Agreement, diverged: dict[str, torch.Tensor], ok: torch.Tensor) -> evidence.SeedArrays:
    """The headline measure's per-seed values over all seeds, NaN where a sample diverged (evidence.SeedArrays);
    `diverged`: split → [K] bool."""
    splits, valid = sorted(diverged), ok.numpy()

    def spread(values: torch.Tensor) -> np.ndarray:
        out = np.full(len(valid), np.nan)
        out[valid] = values.double().numpy()
        return out

    crossed = controls.cross_seed_per_seed(record.cross_seed) if len(record.cross_seed) else torch.zeros(0)
    return evidence.SeedArrays(
        valid=valid, agreement=spread(record.ab),
        nearest=np.stack([spread(record.nearest[s]) for s in splits], axis=1),
        cross_seed=spread(crossed) if len(crossed) == int(ok.sum()) else np.full(len(valid), np.nan),
        diverged=np.stack([diverged[s].numpy() for s in splits], axis=1))


def _interval_evidence(cfg: ExperimentConfig, results: PairResults, record: Agreement, samples: dict,
                       ok: torch.Tensor, per_image: dict) -> tuple[IntervalEvidence, dict]:
    """Intervals of every verdict statistic (gdm.analysis.evidence), seeded by eval.seed: reproducible."""
    rng = np.random.default_rng(cfg.eval.seed)
    stored = _per_image_arrays(per_image)  # the arrays samples.pt keeps: the report reads the same ones back
    images = [_stored_images(cfg, stored, s) for s in results.splits]
    diverged = {s: samples[s].diverged for s in samples}
    found, named = evidence.interval_evidence(_seed_arrays(record, diverged, ok), images,
                                              cfg.eval.memorization_threshold, rng)
    return found, evidence.intervals_json(named, results.splits, controls.band_sigmas(cfg.eval.psnr_sigmas))


def evidence_arrays(cfg: ExperimentConfig, arrays: dict, splits: Sequence[str]
                    ) -> tuple[evidence.SeedArrays, list[evidence.ImageArrays]]:
    """The verdict's per-seed and per-model per-image arrays read back from a pair's samples.pt, as the
    evaluation built them (the report pools them over training replicates)."""
    ok, record = arrays["valid"], Agreement.from_arrays(arrays, cfg.eval.similarity, splits)
    seeds = _seed_arrays(record, {s: arrays[sampler_key("diverged", s)] for s in splits}, ok)
    return seeds, [_stored_images(cfg, arrays, s) for s in splits]


def _stored_images(cfg: ExperimentConfig, arrays: dict, split: str) -> evidence.ImageArrays:
    def db(source: str, kind: str) -> np.ndarray | None:
        key = per_image_key(source, split, kind)
        return arrays[key].double().numpy() if key in arrays else None

    model = {kind: db("model", kind) for kind in ("train", "test")}
    wiener = {kind: db("wiener", kind) for kind in model}  # no Wiener reference: a baseline of 0 dB
    wiener = {kind: np.zeros_like(model[kind]) if w is None else w for kind, w in wiener.items()}
    return evidence.ImageArrays(list(cfg.eval.psnr_sigmas), model["train"], model["test"], wiener["train"],
                                wiener["test"], db("blind", "test"))


def per_image_key(source: str, split: str, kind: str) -> str:
    """samples.pt's name of one per-image PSNR array [σ, image], e.g. `psnr_model_A_test`."""
    return f"psnr_{source}_{split}_{kind}"


def _per_image_arrays(per_image: dict) -> dict[str, torch.Tensor]:
    """samples.pt's per-image PSNR arrays [σ, image], e.g. `psnr_model_A_test` (input PSNR: `psnr_input_A_test`),
    so a referee can resample them."""
    def arrays(name: str, source: str, attribute: str) -> dict[str, torch.Tensor]:
        return {per_image_key(name, s, kind): getattr(p, attribute)
                for s, kinds in per_image[source].items() for kind, p in kinds.items()}
    out = arrays("input", "model", "input_psnr")
    for source in per_image:
        out.update(arrays(source, source, "output_psnr"))
    return out


def _psnr_fields(cfg: ExperimentConfig, data: PairData, device: Device) -> tuple[dict, dict]:
    """PairResults' PSNR fields (the models' curves and train − test gaps, the memorizing, Gaussian and blind
    Gaussian references if asked for) and the per-image PSNRs behind them: source → split → kind → PerImage."""
    run = _psnr_run(cfg, device)
    blind = {s: (lambda sigma, d=d: d) for s, d in data.denoisers.items()}  # the models do not take σ
    per_image = {"model": psnr.per_image_per_split(blind, data.train, data.test, cfg.eval.psnr_sigmas, **run)}
    curves = psnr.curves_of(per_image["model"])
    optimal = optimal_psnr_curves(data.train, data.test, cfg.eval.psnr_sigmas, **run) \
        if cfg.eval.optimal_reference else None
    gaps = {s: psnr.generalization_gap(c["train"], c["test"]) for s, c in sorted(curves.items())}
    if cfg.eval.gaussian_reference:
        gaussian_model, t = controls.fit_gaussian(_pool_chunks(data, device)), cfg.trainer
        per_image["wiener"] = psnr.per_image_per_split(dict.fromkeys(data.train, partial(
            controls.WienerDenoiser, gaussian_model)), data.train, data.test, cfg.eval.psnr_sigmas, **run)
        unknown = BlindGaussianDenoiser(gaussian_model, law=t.sigma_law, sigma_min=t.sigma_min, sigma_max=t.sigma_max)
        per_image["blind"] = psnr.per_image_per_split(dict.fromkeys(data.train, lambda sigma: unknown), data.train,
                                                      data.test, cfg.eval.psnr_sigmas, **run)
    gaussian = psnr.curves_of(per_image["wiener"]) if cfg.eval.gaussian_reference else None
    blind_curves = psnr.curves_of(per_image["blind"]) if cfg.eval.gaussian_reference else None
    return dict(psnr=curves, psnr_optimal=optimal, psnr_gap=gaps, psnr_gap_mean=sum(gaps.values()) / len(gaps),
                psnr_gaussian=gaussian, psnr_gaussian_blind=blind_curves), per_image


def agreement(measure: str, splits: list[str], samples: dict, data: PairData, ok: torch.Tensor,
              device: Device) -> Agreement:
    """A–B similarity per seed, each sample's nearest image in its own and in the other training set, and
    the controls: A's sample i against B's sample j ≠ i, held-out images against each training set."""
    a, b = (samples[s].images[ok] for s in splits)
    own, other, index = {}, {}, {}
    for s, o in zip(splits, reversed(splits), strict=True):
        own[s], index[s] = nearest(samples[s].images[ok], data.train[s], measure, device=device)
        other[s] = nearest(samples[s].images[ok], data.train[o], measure, device=device)[0]
    novel = torch.cat([controls.novelty(data.test, data.train[s], measure, device=device) for s in splits])
    return Agreement(
        measure, similarity.paired(measure, a, b), own, index, other, controls.cross_seed(measure, a, b), novel
    )


def _fraction(mask: torch.Tensor) -> float | None:
    return float(mask.double().mean()) if len(mask) else None


def _pool_chunks(data: PairData, device: Device, chunk: int = 4096):
    """The images the Gaussian reference is fitted on, in chunks on `device`: the prepared dataset's whole
    pool (read from its verified cache), or the union of the training sets when there is none (tests)."""
    if data.data_dir is None:
        yield from (x.to(device) for x in data.train.values())
        return
    import numpy as np

    from gdm.data.pixels import to_unit
    from gdm.data.store import cached_arrays

    images = cached_arrays(data.data_dir, "pool")[0]
    for start in range(0, len(images), chunk):
        yield torch.from_numpy(to_unit(np.array(images[start : start + chunk]))).unsqueeze(1).to(device)


def realism_of(data: PairData, samples: dict, ok: torch.Tensor) -> Realism:
    """Contrast, power spectrum and pixel histogram of each model's valid samples and of the held-out images."""
    profiles = {"test": controls.realism_profile(data.test)}
    profiles.update({s: controls.realism_profile(samples[s].images[ok]) for s in sorted(samples) if int(ok.sum())})
    return Realism(profiles, tuple(sorted(samples)))


def _verdict(results: PairResults, found: IntervalEvidence) -> dict:
    """The pair's verdict from its intervals (gdm.analysis.verdict: each condition passes, fails or is
    inconclusive; the label says which condition decided it), and the point margins to the oracle Wiener filter."""
    splits, gaussian = results.splits, results.psnr_gaussian
    margins = {s: controls.band_margins(results.psnr[s]["test"], gaussian[s]["test"]) for s in splits} \
        if gaussian is not None else {}
    decided = verdict.verdict(verdict.conditions(found))
    return dict(verdict=decided.label, verdict_decided_by=decided.decided_by, verdict_checks=decided.outcomes,
                margins={s: _margin(margins.get(s, ())) for s in splits})


def _margin(band: tuple[float, ...]) -> GaussianMargin:
    """Test PSNR − Gaussian reference over the σ band: its worst value and its mean (None without a reference)."""
    if not band:
        return GaussianMargin()
    return GaussianMargin(gaussian_margin_db_min=min(band), gaussian_margin_db_mean=sum(band) / len(band))


def _calpha(cfg: ExperimentConfig, data: PairData, results: PairResults) -> dict:
    """C^α datasets: each model's small-noise PSNR slope and the optimal α/(α+1) (gdm.analysis.calpha)."""
    if data.family != "calpha":
        return {}
    alpha = float(cfg.datasets[results.dataset].params.get("alpha", 2.0))
    return dict(calpha_slope={s: calpha.small_noise_slope(**_io(results.psnr[s]["test"])) for s in results.splits},
                calpha_optimal_slope=calpha.optimal_slope(alpha))


def _psnr_run(cfg: ExperimentConfig, device: Device) -> dict:
    """What every PSNR curve of a pair shares (images, noise seed, batch, device): the models, the memorizing
    optimum and the Gaussian reference see the same noisy images, so their curves compare σ by σ."""
    return {"images": cfg.eval.psnr_images, "seed": cfg.eval.seed, "batch_size": cfg.eval.batch_size, "device": device}


def geometry_of(cfg: ExperimentConfig, data: PairData, directory: Path) -> dict:
    """Jacobian spectra at a few test images and σ (paper Figure 3), with the disk tangent-space check."""
    jc = cfg.eval.jacobian
    generator = torch.Generator().manual_seed(cfg.eval.seed)
    out: dict = {}
    for i in range(min(jc.num_images, len(data.test))):
        for sigma in jc.sigmas:
            y = data.test[i] + sigma * torch.randn(data.test[i].shape, generator=generator)
            out[f"image{i}_sigma{sigma:g}"] = {s: _geometry(cfg, s, y, sigma, data, i) for s in data.denoisers}
    _geometry_figures(out, directory, data.test.shape[-1])
    return out


def _geometry(cfg: ExperimentConfig, split: str, y: torch.Tensor, sigma: float, data: PairData, index: int) -> dict:
    denoiser, jc = data.denoisers[split], cfg.eval.jacobian
    device = next(denoiser.parameters()).device
    J = jacobian.jacobian(denoiser, y.to(device), chunk=jc.chunk)
    g = jacobian.geometry(J, keep=jc.num_eigenvectors)  # eigh on J's device
    J = J.cpu()
    with torch.no_grad():
        fy = denoiser(y[None].to(device))[0].cpu().reshape(-1)
    record = {"trace": g.trace, "asymmetry": g.asymmetry, "eigenvalues": g.eigenvalues.tolist(),
              "homogeneity_error": float((J.double() @ y.reshape(-1).double() - fy).norm() / fy.norm()),
              "eigenvectors": g.eigenvectors.T.float().tolist()}
    if cfg.eval.optimal_reference:  # the memorizing reference at the same y and σ
        record["optimal"] = optimal_geometry(data.train[split], y, sigma, J)
    if data.family == "disks":
        from gdm.data.store import load_params

        params = load_params(data.data_dir, "test")[index].double().numpy()
        record["tangent_overlap"] = tangent.subspace_overlap(
            g.eigenvectors[:, :5], tangent.tangent_basis(params, y.shape[-1])
        )
    return record


def _geometry_figures(out: dict, directory: Path, size: int) -> None:
    spectra = {f"{key} {s}": rec["eigenvalues"] for key, recs in out.items() for s, rec in recs.items()}
    figures.spectra(spectra, directory / "eigen_spectra.png")
    rows = [
        [torch.tensor(v).view(1, size, size) for v in rec["eigenvectors"]]
        for recs in out.values()
        for rec in recs.values()
    ]
    rows = [[(v - v.min()) / (v.max() - v.min() + 1e-12) for v in row] for row in rows]
    titles = [f"e{k + 1}" for k in range(len(rows[0]))]
    figures.image_rows(rows, titles, directory / "eigenvectors.png", row_labels=list(spectra))
    for recs in out.values():
        for rec in recs.values():
            rec.pop("eigenvectors")


def write_outputs(
    cfg: ExperimentConfig, pair: EvalPair, results: PairResults, evaluation: PairEvaluation, samples: dict,
    data: PairData
) -> dict[str, Path]:
    """samples.pt, the figures, results.json and results.csv of the pair; returns the figures' paths."""
    directory = pair.directory(cfg)
    tensors = {sampler_key(kind, s): getattr(r, field) for kind, field in SAMPLER_ARRAYS for s, r in samples.items()}
    atomic_torch_save(directory / Files.SAMPLES, {**tensors, **evaluation.arrays()})
    paths = pair_figures(cfg, pair, results, evaluation, samples, data)
    atomic_write_json(directory / Files.RESULTS, results.to_json())
    atomic_write_text(directory / Files.RESULTS_CSV, _csv_row(results))
    return paths


def _io(curve: dict) -> dict:
    return {"input_psnr": curve["input_psnr"], "output_psnr": curve["output_psnr"]}


def _csv_row(results: PairResults) -> str:
    """results.csv: one row of the record's values that are not mappings."""
    row = results.flat()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    return buffer.getvalue()


def pair_figures(cfg: ExperimentConfig, pair: EvalPair, results: PairResults, evaluation: PairEvaluation,
                 samples: dict, data: PairData) -> dict:
    directory = pair.directory(cfg)
    splits, ok, measure = sorted(samples), evaluation.valid, cfg.eval.similarity
    count = min(cfg.eval.grid_samples, int(ok.sum()))
    nearest_index = evaluation.agreements[measure].nearest_index
    rows = [[samples[s].images[ok][i] for s in splits] + [data.train[s][nearest_index[s][i]] for s in splits]
            for i in range(count)]
    titles = [f"sample {s}" for s in splits] + [f"nearest train {s}" for s in splits]
    paths = {}
    if rows:
        paths["samples"] = figures.image_rows(rows, titles, directory / "samples.png")
    for m, record in sorted(evaluation.agreements.items()):  # the headline, and the paper's cosine (Figure 2)
        name = "similarity_hist" if m == measure else f"similarity_hist_{m}"
        paths[name] = figures.histograms({f"n = {pair.n}": record.series()}, m, directory / f"{name}.png", density=True)
    curves = {f"{s} {kind}": results.psnr[s][kind] for s in splits for kind in ("train", "test")}
    optimal = {f"{s} {kind}": results.psnr_optimal[s][kind] for s in splits for kind in ("train", "test")
               if s in (results.psnr_optimal or {})}
    gaussian = {f"{s} {kind}": results.psnr_gaussian[s][kind] for s in splits for kind in ("train", "test")
                if s in (results.psnr_gaussian or {})}
    paths["psnr"] = figures.psnr_curves(curves, directory / "psnr.png", title=f"{pair.dataset}, n = {pair.n}",
                                        references=optimal, reference_label="optimal (memorizing) denoiser",
                                        linear=gaussian, linear_label="Gaussian (Wiener) reference of the pool")
    curves = evaluation.realism.curves(["test", *splits])
    paths["realism"] = figures.realism(
        curves["contrast"],
        curves["spectrum"],
        curves["histogram"],
        controls.HISTOGRAM_RANGE,
        directory / "realism.png",
        f"{pair.dataset}, n = {pair.n}",
    )
    for name in ("eigen_spectra", "eigenvectors"):
        if (directory / f"{name}.png").exists():
            paths[name] = directory / f"{name}.png"
    return paths


def log_wandb(
    cfg: ExperimentConfig, pair: EvalPair, results: PairResults, evaluation: PairEvaluation, paths: dict,
    samples: dict
) -> None:
    """The pair's W&B run (job_type=eval): summary scalars and verdict, the per-σ PSNR table and plot of the
    models and references, the per-seed table, samples and figures (gdm.wandb_log)."""
    from gdm import wandb_log

    wandb_log.log_eval(cfg, pair, results.summary(), results.psnr_curves(),
                       evaluation.per_seed_columns(cfg.eval.seed), paths,
                       {s: r.images[evaluation.valid] for s, r in samples.items()})
