"""Load a prepared split as a float tensor: A_n = pool[0:n], B_n = pool[-n:], or the test set.

`verify_data`, which the driver runs once before it fans jobs out, checks every shard's sha256
against the manifest and decodes each group (pool, test) into `<group>.images.npy` (and
`<group>.params.npy`), written atomically, with the caches' own sha256 in `.verified-<group>.json`.
A job's load then checks the cache by content (its sha256 against that stamp; about a second per
GB) rather than re-reading every shard, and slices it through a memmap. A cache that fails its
check, or a missing stamp, sends the load back through the shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gdm.data.errors import DataError
from gdm.data.manifest import load_manifest
from gdm.data.pixels import to_unit
from gdm.data.shards import read_split
from gdm.data.splits import split_slice
from gdm.io import atomic_write, atomic_write_json, file_sha256

__all__ = ["load_manifest", "load_split", "load_params", "cached_arrays", "verify_shards", "verify_data"]


def group_of(split: str) -> str:
    """Shards holding a split: the pool for A and B, the test shards for test."""
    return "test" if split == "test" else "pool"


def verify_shards(data_dir: Path, manifest: dict, group: str) -> None:
    """Compare every shard's sha256 with the manifest; DataError naming the first missing or changed shard."""
    for record in manifest["shards"][group]:
        path = Path(data_dir) / record["name"]
        if not path.exists():
            raise DataError(f"shard {path} is missing; delete {data_dir} and prepare again")
        if file_sha256(path) != record["sha256"]:
            raise DataError(
                f"shard {path} does not match its checksum in manifest.json (modified or corrupt); "
                f"delete {data_dir} and prepare again"
            )


def cache_paths(data_dir: Path, group: str) -> tuple[Path, Path]:
    return Path(data_dir) / f"{group}.images.npy", Path(data_dir) / f"{group}.params.npy"


def cache_digests(data_dir: Path, group: str) -> dict:
    """sha256 of the group's cache files on disk (by content, not size or modification time)."""
    return {p.name: file_sha256(p) for p in cache_paths(data_dir, group) if p.exists()}


def build_cache(data_dir: Path, manifest: dict, group: str) -> None:
    """Verify the group's shards, decode them into the .npy caches (atomically) and write the stamp."""
    verify_shards(data_dir, manifest, group)
    images, params = read_split(data_dir, manifest["shards"][group], manifest["image_size"])
    image_path, params_path = cache_paths(data_dir, group)
    atomic_write(image_path, lambda handle: np.save(handle, images, allow_pickle=False))
    if params is not None:
        atomic_write(params_path, lambda handle: np.save(handle, params, allow_pickle=False))
    stamp = {"manifest_sha256": manifest["manifest_sha256"], "sha256": cache_digests(data_dir, group)}
    atomic_write_json(Path(data_dir) / f".verified-{group}.json", stamp)


def stamp_matches(data_dir: Path, manifest: dict, group: str) -> bool:
    """Whether the caches on disk are, byte for byte, those built from this manifest's shards."""
    try:
        stamp = json.loads((Path(data_dir) / f".verified-{group}.json").read_text())
    except (OSError, ValueError):
        return False
    return stamp == {"manifest_sha256": manifest["manifest_sha256"], "sha256": cache_digests(data_dir, group)}


def verify_data(data_dir: Path) -> dict:
    """The driver's check before fan-out: shards against the manifest, caches built or verified."""
    manifest = load_manifest(data_dir)
    for group in ("test", "pool"):
        # every run, not only when a cache is rebuilt: a damaged source of truth is named while the decoded
        # cache still looks valid (about a second per GB of shards)
        verify_shards(data_dir, manifest, group)
        if not stamp_matches(data_dir, manifest, group):
            build_cache(data_dir, manifest, group)
    return manifest


def cached_arrays(data_dir: Path, group: str, manifest: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read-only memmaps (images [N, H, W] as stored: float32 or uint8; params [N, P] or None) of a verified group."""
    manifest = manifest or load_manifest(data_dir)
    if not stamp_matches(data_dir, manifest, group):
        build_cache(data_dir, manifest, group)
    image_path, params_path = cache_paths(data_dir, group)
    params = np.load(params_path, mmap_mode="r") if manifest["param_names"] else None
    return np.load(image_path, mmap_mode="r"), params


def select(data_dir: Path, split: str, n: int | None, which: int) -> np.ndarray | None:
    """The split's rows of the images (which=0) or params (which=1) cache, as an in-memory array."""
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    array = cached_arrays(data_dir, group_of(split), manifest)[which]
    return None if array is None else np.array(array[rows])


def load_split(data_dir: Path, split: str, n: int | None = None) -> torch.Tensor:
    """float32 [N, 1, H, W] in [0, 1]: A_n = pool[0:n], B_n = pool[-n:], or the first n test images.

    n None: the whole half of the pool (pool_size // 2) or the whole test set.
    """
    return torch.from_numpy(to_unit(select(data_dir, split, n, 0))).unsqueeze(1)


def load_params(data_dir: Path, split: str, n: int | None = None) -> torch.Tensor | None:
    """float32 [N, P] generating parameters of the same images as load_split (None: non-parametric family)."""
    params = select(data_dir, split, n, 1)
    return None if params is None else torch.from_numpy(params).float()
