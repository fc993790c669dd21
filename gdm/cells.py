"""Grid expansion: a config → training cells (dataset, n, split) and eval pairs (dataset, n).

A cell's directory is deterministic: runs/<experiment>/<dataset>/n<n>-<split>-<hash>/, where the
hash covers exactly the settings that change the trained weights (the dataset, model and trainer
sections, less pure logging/speed knobs). Two configs differing only in evaluation settings share
their trained cells; a requeued job finds its own directory, checkpoint and W&B run id again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from gdm.config import ExperimentConfig, to_dict
from gdm.io import atomic_write_json, read_json

# Trainer fields that do not change the result: excluded from the cell hash.
_NEUTRAL_TRAINER_KEYS = ("log_every", "val_every", "num_workers", "checkpoint_every", "compile", "accelerator")


class CellState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


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

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.cell_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        return _short_hash(f"{cfg.name}/{self.cell_id}/train", 16)


@dataclass(frozen=True)
class EvalPair:
    """The two models (A and B) of one (dataset, n), evaluated together."""

    dataset: str
    n: int
    cells: tuple[Cell, ...]

    @property
    def pair_id(self) -> str:
        return f"{self.dataset}/n{self.n:06d}-eval"

    def directory(self, cfg: ExperimentConfig) -> Path:
        return cfg.run_dir / self.pair_id

    def wandb_id(self, cfg: ExperimentConfig) -> str:
        hashes = "-".join(c.settings_hash for c in self.cells)
        return _short_hash(f"{cfg.name}/{self.pair_id}/{hashes}", 16)


def settings_hash(cfg: ExperimentConfig, dataset: str) -> str:
    """Short hash of what determines a cell's weights (data, model, trainer less neutral keys)."""
    trainer = {k: v for k, v in to_dict(cfg.trainer).items() if k not in _NEUTRAL_TRAINER_KEYS}
    payload = {"data": to_dict(cfg.datasets[dataset]), "model": to_dict(cfg.model), "trainer": trainer}
    return _short_hash(json.dumps(payload, sort_keys=True), 8)


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
    return [EvalPair(d, n, tuple(c for c in cells if (c.dataset, c.n) == (d, n))) for d, n in keys]


def _short_hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# --- state of a cell (or pair) on disk --------------------------------------------------------
# DONE marks a finished directory; status.json holds the latest state, job id, step and error.

DONE_FILE = "DONE"
STATUS_FILE = "status.json"


def read_status(directory: Path) -> dict:
    """The status record of a cell or pair directory, with `state` always present."""
    if (directory / DONE_FILE).exists():
        record = _read_record(directory)
        return {**record, "state": CellState.DONE.value}
    record = _read_record(directory)
    record.setdefault("state", CellState.PENDING.value)
    return record


def write_status(directory: Path, **fields) -> dict:
    """Merge `fields` into the directory's status.json (atomically) and return the record."""
    record = {**_read_record(directory), **fields}
    atomic_write_json(directory / STATUS_FILE, record)
    return record


def mark_done(directory: Path, **fields) -> None:
    write_status(directory, state=CellState.DONE.value, error=None, **fields)
    atomic_write_json(directory / DONE_FILE, {"done": True})


def _read_record(directory: Path) -> dict:
    path = directory / STATUS_FILE
    if not path.exists():
        return {}
    try:
        return dict(read_json(path))
    except (ValueError, OSError):
        return {}
