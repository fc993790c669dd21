"""Prepare a dataset once: images -> dedup -> test/pool split -> webdataset shards -> manifest.json (last).

Idempotent: with a manifest present, the DataConfig (all fields but the source path) and, for photo
families, the source listing's checksum must match, and the manifest is returned at once; anything
else is refused so that cells never silently mix two datasets. Without a manifest (first run, or a run
that was interrupted) stale shards are removed and everything is written again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from gdm.config import DataConfig
from gdm.data import photos, shards
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES, Family, base_family
from gdm.data.manifest import FORMAT, MANIFEST, array_sha256, load_manifest, write_manifest
from gdm.data.splits import split_indices
from gdm.io import atomic_write

OWN_FILES = ("*.tar", "*.npy", "*.tmp", ".verified-*.json")  # what a stale preparation may have left behind


def config_record(data: DataConfig) -> dict:
    """The DataConfig as stored in the manifest: every field except the source path (its listing is checked)."""
    record = dataclasses.asdict(data)
    record.pop("source")
    return json.loads(json.dumps(record))


def family_of(data: DataConfig) -> Family:
    if data.family not in FAMILIES:
        raise DataError(
            f"config key 'datasets.<name>.family' is {data.family!r}; allowed: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[data.family]


def source_sha256(data: DataConfig, family: Family) -> str | None:
    """Checksum of the source listing for photo-based families, None for synthetic ones."""
    params = family.resolve_params(data)
    reader = base_family(params["base"]) if family.wraps_base else family
    if reader.source_listing is not None:  # a family with its own default source (photo patches)
        return reader.source_listing(
            data, {**reader.defaults, **{k: v for k, v in params.items() if k in reader.defaults}}
        )
    if not family.uses_source(data):
        return None
    if not data.source:
        raise DataError(f"family {data.family!r} needs datasets.<name>.source: the folder or .zip of its images")
    return photos.listing_sha256(Path(data.source), photos.list_images(Path(data.source)))


def check_unchanged(manifest: dict, data: DataConfig, family: Family, data_dir: Path) -> None:
    """Refuse a manifest made from another config or source (DataError naming what changed)."""
    stored, current = manifest["config"], config_record(data)
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if changed:
        detail = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise DataError(
            f"{data_dir / MANIFEST} was prepared with another config ({detail}); "
            f"use a new data folder or delete {data_dir} to prepare again"
        )
    listing = source_sha256(data, family)
    if listing != manifest.get("source_listing_sha256"):
        raise DataError(
            f"the source {data.source} changed since {data_dir / MANIFEST} was written (listing checksum "
            f"differs); restore it, or delete {data_dir} to prepare again"
        )


def remove_stale(data_dir: Path) -> None:
    """Delete the shards, caches and temporaries of an interrupted preparation (only gdm's own patterns)."""
    for pattern in OWN_FILES:
        for path in data_dir.glob(pattern):
            path.unlink()


def param_names(family: Family, params: dict) -> list[str]:
    """Column names of the params array: the family's own, or its base family's (shuffled disks)."""
    return list(family.param_names or (base_family(params["base"]).param_names if family.wraps_base else ()))


def save_indices(path: Path, indices: np.ndarray) -> str:
    atomic_write(path, lambda handle: np.save(handle, indices.astype("<i8"), allow_pickle=False))
    return array_sha256(indices)


def prepare_dataset(data: DataConfig, data_dir: Path, *, progress: bool = False, device=None) -> dict:
    """Write the shards of the test set and the pool, then manifest.json; return the manifest.

    device: torch device of the near-duplicate search (default: CUDA when available, else CPU).
    """
    data_dir, family = Path(data_dir), family_of(data)
    params = family.resolve_params(data)
    if (data_dir / MANIFEST).exists():
        manifest = load_manifest(data_dir)
        check_unchanged(manifest, data, family, data_dir)
        return manifest
    data_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(data_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    made = family.generate(data, data.test_size + data.pool_size, data.seed, progress=progress, device=device)
    test, pool = split_indices(len(made.images), data.test_size, data.pool_size, data.seed)
    records = {}
    for split, indices in (("test", test), ("pool", pool)):
        split_params = None if made.params is None else made.params[indices]
        records[split] = shards.write_split(
            data_dir, split, made.images[indices], split_params, data.shard_size, progress
        )
    body = {
        "format": FORMAT,
        "family": data.family,
        "config": config_record(data),
        "params": params,
        "param_names": param_names(family, params) if made.params is not None else [],
        "image_size": data.image_size,
        "pool_size": data.pool_size,
        "test_size": data.test_size,
        "seed": data.seed,
        "available": len(made.images),
        "deduplicated": made.info.get("deduplicated", 0),
        "source_images": made.info.get("source_images"),
        "source_listing_sha256": made.info.get("source_listing_sha256"),
        "source_files": made.info.get("source_files"),  # per file read: name, sha256 (photo patches)
        "pixel_dtype": str(made.images.dtype),  # float32 (synthetic, patches) or uint8 (imported photos)
        "index_sha256": {
            s: save_indices(data_dir / f"{s}_indices.npy", i) for s, i in (("test", test), ("pool", pool))
        },
        "shards": records,
    }
    return write_manifest(data_dir, body)
