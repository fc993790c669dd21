"""The grid and the run-folder layout: cells (dataset, n, split), eval pairs (dataset, n), their ids,
the settings each id stands for, and every path and file name under runs/<experiment>/.

A cell's folder is runs/<experiment>/<dataset>/n<n>-<split>-<hash>/, where the hash covers exactly the
settings that change its trained weights (the dataset, model and trainer sections, less pure
logging/speed knobs). A pair's folder is runs/<experiment>/<dataset>/n<n>-eval-<hash>/, where the hash
covers its two cells' hashes and the eval and sampler settings that change its numbers. So a changed
setting gives a new folder and an older result can never stand for the current settings; two configs
differing only in evaluation share their trained cells; a requeued job finds its own folder again.
Each folder holds `settings.json`, the settings its hash stands for (see `gdm.lifecycle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gdm.config import ExperimentConfig, to_dict
from gdm.io import stable_hash

# Trainer fields that do not change the weights: excluded from the cell hash.
_NEUTRAL_TRAINER_KEYS = ("log_every", "val_every", "num_workers", "checkpoint_every", "compile", "accelerator")
# Eval fields that change figures only, never a number of results.json: excluded from the pair hash.
_NEUTRAL_EVAL_KEYS = ("grid_samples",)


class Files:
    """File names inside a cell or pair folder (the one place they are spelled)."""

    SETTINGS = "settings.json"  # the settings the folder's hash stands for
    STATUS = "status.json"  # the owner's record: state, step, error, where it runs (gdm.lifecycle)
    SUBMISSION = "submission.json"  # the driver's record: the job it submitted, and whether it was lost
    DONE = "DONE"  # written last by the owner: the folder is finished (with checksums of its outputs)
    LEASE = "lease"  # flock'ed by the one process that owns the folder while it works
    LEASE_JOB = "lease.json"  # launch.ownership=job: the owner's record (job id, host, pid) while it works
    LAST_CKPT = "last.ckpt"  # Lightning checkpoint a cell resumes from
    MODEL = "model.pt"  # the trained denoiser (weights_only-loadable)
    METRICS = "metrics.jsonl"  # one record per logged training step
    RESULTS = "results.json"  # a pair's results (strict JSON)
    RESULTS_CSV = "results.csv"
    SAMPLES = "samples.pt"  # a pair's samples and per-seed arrays


@dataclass(frozen=True)
class Cell:
    """One training run: a denoiser trained on split `split` of size `n` of dataset `dataset`."""

    dataset: str
    n: int
    split: str
    settings_hash: str

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}/n{self.n:06d}-{self.split}-{self.settings_hash}"

    @property
    def item_id(self) -> str:
        return self.cell_id

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.cell_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        return stable_hash(f"{cfg.name}/{self.cell_id}/train", 16)


@dataclass(frozen=True)
class EvalPair:
    """The two models (A and B) of one (dataset, n), evaluated together under one eval setting."""

    dataset: str
    n: int
    cells: tuple[Cell, ...]
    settings_hash: str

    @property
    def pair_id(self) -> str:
        return f"{self.dataset}/n{self.n:06d}-eval-{self.settings_hash}"

    @property
    def item_id(self) -> str:
        return self.pair_id

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.pair_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        return stable_hash(f"{cfg.name}/{self.pair_id}", 16)


Item = Cell | EvalPair


def cell_settings(cfg: ExperimentConfig, dataset: str) -> dict:
    """What determines a cell's weights: its dataset, the model, the trainer less neutral keys."""
    trainer = {k: v for k, v in to_dict(cfg.trainer).items() if k not in _NEUTRAL_TRAINER_KEYS}
    return {"data": to_dict(cfg.datasets[dataset]), "model": to_dict(cfg.model), "trainer": trainer}


def settings_hash(cfg: ExperimentConfig, dataset: str) -> str:
    """Short hash of `cell_settings` (the cell folder's suffix)."""
    return stable_hash(cell_settings(cfg, dataset), 8)


def pair_settings(cfg: ExperimentConfig, cells: tuple[Cell, ...]) -> dict:
    """What determines a pair's numbers: its cells (by hash), the sampler, eval less neutral keys."""
    evaluation = {k: v for k, v in to_dict(cfg.eval).items() if k not in _NEUTRAL_EVAL_KEYS}
    return {"cells": {c.split: c.settings_hash for c in cells}, "eval": evaluation, "sampler": to_dict(cfg.sampler)}


def item_settings(cfg: ExperimentConfig, item: Item) -> dict:
    """The settings an item's hash stands for (written as its settings.json)."""
    if isinstance(item, Cell):
        return cell_settings(cfg, item.dataset)
    return pair_settings(cfg, item.cells)


def expand_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every (dataset, n, split) cell, in a fixed order: dataset, then n, then split."""
    cells = []
    for dataset in cfg.datasets:
        digest = settings_hash(cfg, dataset)
        cells += [Cell(dataset, n, split, digest) for n in sorted(cfg.n_train) for split in cfg.splits]
    return cells


def expand_pairs(cfg: ExperimentConfig) -> list[EvalPair]:
    """Every (dataset, n) pair with its cells; a pair needs all of them done before evaluation."""
    cells = expand_cells(cfg)
    keys = dict.fromkeys((c.dataset, c.n) for c in cells)
    pairs = []
    for dataset, n in keys:
        mine = tuple(c for c in cells if (c.dataset, c.n) == (dataset, n))
        pairs.append(EvalPair(dataset, n, mine, stable_hash(pair_settings(cfg, mine), 8)))
    return pairs


# --- the rest of the run folder ---------------------------------------------------------------


def config_path(cfg: ExperimentConfig) -> Path:
    """The resolved config of the latest `gdm run` (each folder's settings.json is what binds results)."""
    return cfg.run_dir / "config.yaml"


def data_dir(cfg: ExperimentConfig, dataset: str) -> Path:
    return cfg.run_dir / "data" / dataset


def report_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "report"


def jobs_dir(cfg: ExperimentConfig, kind: str) -> Path:
    """submitit's job files (pickles, logs) of one kind of job; `%j` is the job id."""
    return cfg.run_dir / "jobs" / kind / "%j"


def wandb_dir(cfg: ExperimentConfig) -> Path:
    return cfg.run_dir / "wandb_runs"


def item_folders(cfg: ExperimentConfig) -> list[Path]:
    """Every cell and pair folder on disk, current or from older settings (those holding settings.json)."""
    return sorted(p.parent for p in cfg.run_dir.glob(f"*/n*/{Files.SETTINGS}") if p.parent.parent.name != "data")
