"""The grid and the run-folder layout: cells (dataset, n, split), eval pairs (dataset, n), their ids,
the settings each id stands for, and every path and file name under runs/<experiment>/.

A cell's folder is runs/<experiment>/<dataset>/n<n>-<split>-<hash>/, where the hash covers exactly the
settings that change its trained weights (the dataset, model and trainer sections, less pure
logging/speed knobs). A pair's folder is runs/<experiment>/<dataset>/n<n>-eval-<hash>/ (n<n>-eval-step<S>-<hash>/
for the models kept at step S), where the hash covers its two cells' hashes and the eval and sampler settings
that change its numbers. So a changed setting gives a new folder and an older result can never stand for the
current settings; two configs differing only in evaluation share their trained cells; a requeued job finds its
own folder again.
Each folder holds `settings.json`, the settings its hash stands for (see `gdm.lifecycle`).

Identity that survives data moves and upgrades (docs/CONTRACTS.md, "Identity"):
- The data enter by content, never by path: `datasets.<name>.source` is not hashed. A cell is named from the
  config alone (so `gdm cells`, `status`, `report`, `cancel` work before preparation and on a machine without
  the data); its content is bound by the run folder's one prepared copy, data/<name>/manifest.json, whose
  `source_listing_sha256` is checked by every preparation (a source whose listing differs is refused), so
  every cell of a run folder was trained on the content that checksum names. A moved source with the same
  files keeps every cell.
- The hashed settings are versioned: `IDENTITY_V1` names the keys of each section as of identity version 1.
  Those keys are hashed with their values; a key added by a later gdm release is hashed only when its value
  differs from its schema default. So a release adding a setting at a neutral default (the value that
  reproduces the old behaviour) keeps every hash; setting it to anything else gives new folders. A release
  that changes what an existing key means must add a new identity version with a migration.
- Training replicates (trainer.replicates = R): replicate r of a cell trains from its own base seed
  (`gdm.seeds.replicate_seed`) in n<n>-<split>-r<r>-<hash>/, its pair is n<n>-eval-r<r>-<hash>/, and r enters
  the cell's settings (so its hash) only when r ≥ 1. `trainer.replicates` itself is never hashed: replicate 0
  keeps the name, hash and seed of the cell as it was without replicates, and raising R adds folders only.
- Folders of the previous naming (identity version 0: the whole dataset section, path included) are
  recognised by `legacy_folder` and renamed in place by `gdm.migrate` (never retrained).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gdm.config import ExperimentConfig, to_dict, to_yaml
from gdm.io import atomic_write_text, stable_hash

# The keys of each hashed section as of identity version 1 (never edit: see the module docstring).
IDENTITY_V1: dict[str, tuple[str, ...]] = {
    "data": ("family", "image_size", "pool_size", "test_size", "seed", "shard_size", "params"),
    "model": ("name", "channels", "blocks", "layers"),
    "trainer": ("max_steps", "batch_size", "lr", "lr_halve_every", "sigma_law", "sigma_min", "sigma_max",
                "ema_decay", "devices", "num_nodes", "precision", "channels_last", "in_memory", "seed"),
    "eval": ("num_samples", "seed", "batch_size", "psnr_sigmas", "psnr_images", "memorization_threshold",
             "similarity", "gaussian_reference", "optimal_reference", "jacobian"),
    "sampler": ("h0", "beta", "sigma_0", "sigma_end", "mean", "schedule", "authors_loop", "max_steps",
                "final_denoise", "diverge_sigma"),
}
# Data fields that name where the data lie, not what they are: never hashed (the manifest checks the content).
_PLACE_DATA_KEYS = ("source",)
# Trainer fields that do not change the weights: excluded from the cell hash.
_NEUTRAL_TRAINER_KEYS = ("log_every", "val_every", "num_workers", "checkpoint_every", "compile", "accelerator",
                         "replicates")  # replicates: how many cells there are, not what one is (see `Cell.replicate`)
# Eval fields that change figures only, never a number of results.json: excluded from the pair hash.
_NEUTRAL_EVAL_KEYS = ("grid_samples",)
_UNHASHED = {"data": _PLACE_DATA_KEYS, "trainer": _NEUTRAL_TRAINER_KEYS, "eval": _NEUTRAL_EVAL_KEYS}


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

    @staticmethod
    def model_at(step: int) -> str:
        """The evaluated weights after `step` steps (trainer.keep_models_at), in model.pt's format."""
        return f"model_step{int(step)}.pt"


@dataclass(frozen=True)
class Cell:
    """One training run: a denoiser trained on split `split` of size `n` of dataset `dataset`."""

    dataset: str
    n: int
    split: str
    settings_hash: str
    replicate: int = 0  # training replicate r (trainer.replicates); 0: the cell as named before replicates

    @property
    def cell_id(self) -> str:
        return f"{self.dataset}/n{self.n:06d}-{self.split}{replicate_tag(self.replicate)}-{self.settings_hash}"

    @property
    def item_id(self) -> str:
        return self.cell_id

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.cell_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        return wandb_run_id(cfg, self)


@dataclass(frozen=True)
class EvalPair:
    """The two models (A and B) of one (dataset, n), evaluated together under one eval setting: their final
    models, or (step) the models they kept after that many steps (trainer.keep_models_at)."""

    dataset: str
    n: int
    cells: tuple[Cell, ...]
    settings_hash: str
    step: int | None = None  # None: the final models (model.pt)

    @property
    def replicate(self) -> int:
        """The training replicate of both of its cells (one replicate's A and B are a pair)."""
        return self.cells[0].replicate if self.cells else 0

    @property
    def pair_id(self) -> str:
        at = "" if self.step is None else f"-step{self.step:07d}"
        return f"{self.dataset}/n{self.n:06d}-eval{replicate_tag(self.replicate)}{at}-{self.settings_hash}"

    @property
    def model_file(self) -> str:
        """The file of each cell that this pair evaluates."""
        return Files.MODEL if self.step is None else Files.model_at(self.step)

    @property
    def item_id(self) -> str:
        return self.pair_id

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.pair_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        return wandb_run_id(cfg, self)


Item = Cell | EvalPair


def replicate_tag(replicate: int) -> str:
    """The folder-name part of a training replicate: none for replicate 0 (today's names), `-r<r>` otherwise."""
    return f"-r{replicate}" if replicate else ""


def wandb_run_id(cfg: ExperimentConfig, item: Item | None) -> str:
    """The W&B run id of a cell's training, a pair's evaluation or (item None) the report: a hash of the
    experiment and the item, so a requeued job resumes its own run. The one place run ids are made."""
    what = "report" if item is None else f"{item.cell_id}/train" if isinstance(item, Cell) else item.pair_id
    return stable_hash(f"{cfg.name}/{what}", 16)


def identity(section: str, values: object) -> dict:
    """The hashed part of one config section: its `IDENTITY_V1` keys, plus any later key off its default."""
    current, defaults = to_dict(values), to_dict(type(values)())
    known, never = IDENTITY_V1[section], _UNHASHED.get(section, ())
    return {k: v for k, v in current.items() if k in known or (k not in never and v != defaults[k])}


def cell_outputs(cfg: ExperimentConfig) -> tuple[str, ...]:
    """The files a finished cell holds, each checksummed in its DONE: model.pt, then one model per kept step."""
    return (Files.MODEL, *(Files.model_at(step) for step in cfg.trainer.keep_models_at))


def cell_settings(cfg: ExperimentConfig, dataset: str, replicate: int = 0) -> dict:
    """What determines a cell's weights: its dataset (not its path), the model, the trainer less neutral keys,
    and its training replicate when not 0 (replicate 0's settings are those of a cell without replicates)."""
    settings = {"data": identity("data", cfg.datasets[dataset]), "model": identity("model", cfg.model),
                "trainer": identity("trainer", cfg.trainer)}
    return settings | ({"replicate": replicate} if replicate else {})


def settings_hash(cfg: ExperimentConfig, dataset: str, replicate: int = 0) -> str:
    """Short hash of `cell_settings` (the cell folder's suffix)."""
    return stable_hash(cell_settings(cfg, dataset, replicate), 8)


def pair_settings(cfg: ExperimentConfig, cells: tuple[Cell, ...], step: int | None = None) -> dict:
    """What determines a pair's numbers: its cells (by hash), the sampler, eval less neutral keys, and the
    training step of the models it evaluates when they are kept ones (absent for the final models)."""
    at = {} if step is None else {"models_at_step": step}
    return {"cells": {c.split: c.settings_hash for c in cells}, "eval": identity("eval", cfg.eval),
            "sampler": identity("sampler", cfg.sampler), **at}


def item_settings(cfg: ExperimentConfig, item: Item) -> dict:
    """The settings an item's hash stands for (written as its settings.json)."""
    if isinstance(item, Cell):
        return cell_settings(cfg, item.dataset, item.replicate)
    return pair_settings(cfg, item.cells, item.step)


def expand_cells(cfg: ExperimentConfig) -> list[Cell]:
    """Every (dataset, n, split) cell of every training replicate, in a fixed order: replicate, then dataset, then n,
    then split (replicate 0 first, so a grid without replicates keeps its order and array indices)."""
    cells = []
    for replicate in range(cfg.trainer.replicates):
        for dataset in cfg.datasets:
            digest = settings_hash(cfg, dataset, replicate)
            cells += [Cell(dataset, n, split, digest, replicate) for n in sorted(cfg.n_train) for split in cfg.splits]
    return cells


def expand_pairs(cfg: ExperimentConfig) -> list[EvalPair]:
    """Every (dataset, n, replicate) pair with its cells (their final models), then the same pairs at each kept step
    before the last (trainer.keep_models_at: the training-time axis); a pair needs its cells done before evaluation.
    The kept steps' pairs come last, so the final pairs keep their array indices."""
    cells = expand_cells(cfg)
    keys = dict.fromkeys((c.replicate, c.dataset, c.n) for c in cells)
    steps = [None, *(s for s in cfg.trainer.keep_models_at if s < cfg.trainer.max_steps)]
    pairs = []
    for step in steps:
        for key in keys:
            mine = tuple(c for c in cells if (c.replicate, c.dataset, c.n) == key)
            pairs.append(EvalPair(key[1], key[2], mine, stable_hash(pair_settings(cfg, mine, step), 8), step))
    return pairs


# --- the rest of the run folder ---------------------------------------------------------------


def config_path(cfg: ExperimentConfig) -> Path:
    """The resolved config of the latest `gdm run` or report (each folder's settings.json is what binds
    results); the report writes it again with report/config.yaml, so the two always agree."""
    return cfg.run_dir / "config.yaml"


def write_resolved_config(cfg: ExperimentConfig, path: Path | None = None) -> None:
    """The config as YAML at `path` (the run's config.yaml by default); left alone when unchanged but for
    where the run folder is mounted (`root`), so a finished run re-runs on read-only storage."""
    path = path or config_path(cfg)
    if not path.exists() or resolved_settings(path.read_text(encoding="utf-8")) != resolved_settings(to_yaml(cfg)):
        atomic_write_text(path, to_yaml(cfg))


def resolved_settings(config_yaml: str) -> str:
    """A resolved config's text less its `root` line: what it says wherever the run folder is mounted."""
    return "\n".join(line for line in config_yaml.splitlines() if not line.startswith("root:"))


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
