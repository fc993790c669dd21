"""Run folders named by an older identity version, recognised and renamed to today's names (never retrained).

Identity version 0 (gdm before the versioned identity) hashed a cell's whole dataset section, the source path
included, and a pair's eval section as it then was. `legacy_*` reproduce that naming exactly (from the keys of
`IDENTITY_V1`, which were the whole schema then, plus the path), so a folder of that release is found, and
`migrate_folders` renames it to its current name and rewrites its settings.json to the settings the new name
stands for. Its contents (weights, checksums in DONE, results) are untouched: the science is the same, only
the name changed. A folder whose new name already exists is left alone (the newer one wins).
"""

from __future__ import annotations

import os
from pathlib import Path

from gdm.cells import IDENTITY_V1, Cell, EvalPair, Files, Item, expand_pairs, item_settings
from gdm.config import ExperimentConfig, to_dict
from gdm.io import atomic_write_json, stable_hash


def _v0(section: str, values: object, extra: tuple[str, ...] = ()) -> dict:
    keys = IDENTITY_V1[section] + extra
    return {k: v for k, v in to_dict(values).items() if k in keys}


def legacy_cell_hash(cfg: ExperimentConfig, dataset: str) -> str:
    """The cell hash of identity version 0 (path included)."""
    settings = {"data": _v0("data", cfg.datasets[dataset], ("source",)), "model": _v0("model", cfg.model),
                "trainer": _v0("trainer", cfg.trainer)}
    return stable_hash(settings, 8)


def legacy_pair_hash(cfg: ExperimentConfig, pair: EvalPair) -> str:
    """The pair hash of identity version 0 (over its cells' version-0 hashes)."""
    cells = {c.split: legacy_cell_hash(cfg, c.dataset) for c in pair.cells}
    return stable_hash({"cells": cells, "eval": _v0("eval", cfg.eval), "sampler": _v0("sampler", cfg.sampler)}, 8)


def legacy_item(cfg: ExperimentConfig, item: Item) -> Item:
    """The same item under its version-0 name."""
    if isinstance(item, Cell):
        return Cell(item.dataset, item.n, item.split, legacy_cell_hash(cfg, item.dataset))
    cells = tuple(legacy_item(cfg, c) for c in item.cells)
    return EvalPair(item.dataset, item.n, cells, legacy_pair_hash(cfg, item))


def migrate_folders(cfg: ExperimentConfig) -> list[tuple[Path, Path]]:
    """Rename each version-0 folder of this config's grid to its current name; returns (old, new) pairs."""
    moved = []
    for pair in (p for p in expand_pairs(cfg) if p.replicate == 0):  # replicates r ≥ 1 are newer than version 0
        for item in (*pair.cells, pair):
            old, new = legacy_item(cfg, item).directory(cfg), item.directory(cfg)
            if old != new and (old / Files.SETTINGS).exists() and not new.exists():
                os.replace(old, new)  # atomic on one file system: the folder has one name at any time
                atomic_write_json(new / Files.SETTINGS, item_settings(cfg, item))
                moved.append((old, new))
    return moved
