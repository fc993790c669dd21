"""Load a prepared split as a float tensor: A_n = pool[0:n], B_n = pool[-n:], or the test set.

`verify_data`, which the driver runs once before it fans jobs out, checks every shard's sha256
against the manifest and decodes each group (pool, test) into `<group>.images.npy` (and
`<group>.params.npy`), written atomically, with the caches' own sha256 in `.verified-<group>.json`.
A job's load then checks the cache by content (its sha256 against that stamp; about a second per
GB, hashed in 1 MiB blocks) rather than re-reading every shard, and reads the split's rows of it block by
block straight into the output tensor (`load_split`: host memory beyond the output is one block). A cache that
fails its check, or a missing stamp, sends the load back through the shards.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gdm.data.errors import DataError
from gdm.data.manifest import load_manifest
from gdm.data.pixels import to_unit_into
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


def ensure_cache(data_dir: Path, manifest: dict, group: str) -> None:
    """The group's caches checked by their sha256 against the stamp (hashed in blocks); rebuilt if they fail."""
    if not stamp_matches(data_dir, manifest, group):
        build_cache(data_dir, manifest, group)


def cached_arrays(data_dir: Path, group: str, manifest: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read-only memmaps (images [N, H, W] as stored: float32 or uint8; params [N, P] or None) of a verified group."""
    manifest = manifest or load_manifest(data_dir)
    ensure_cache(data_dir, manifest, group)
    image_path, params_path = cache_paths(data_dir, group)
    params = np.load(params_path, mmap_mode="r") if manifest["param_names"] else None
    return np.load(image_path, mmap_mode="r"), params


def select(data_dir: Path, split: str, n: int | None, which: int) -> np.ndarray | None:
    """The split's rows of the images (which=0) or params (which=1) cache, as an in-memory array."""
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    array = cached_arrays(data_dir, group_of(split), manifest)[which]
    return None if array is None else np.array(array[rows])


# Bytes of stored rows read per block when a split is loaded: the host memory a load needs beyond its output
# (twice that on a GPU, with the block's float32 pixels). 1 MiB reads run at disk speed.
BLOCK_BYTES = 1 << 20


def npy_layout(handle) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the C-ordered .npy at `handle`, read from its header; leaves it at the first data byte."""
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran_order, dtype = read(handle)
    if fortran_order:  # np.save writes C order; a Fortran file is not one of gdm's caches
        raise DataError(f"{handle.name} is stored in Fortran order; delete it and the load rebuilds it")
    return shape, dtype


def stored_blocks(path: Path, rows: slice, block_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    """(offset into rows, block of stored rows) over rows [start, stop) of the .npy at `path`, read with plain
    file reads into one reused buffer of about block_bytes: no row outside `rows` and no full-size copy is read."""
    with open(path, "rb") as handle:
        shape, dtype = npy_layout(handle)
        row_bytes, data_start = dtype.itemsize * math.prod(shape[1:]), handle.tell()
        step = max(1, block_bytes // max(row_bytes, 1))
        buffer = np.empty((min(step, rows.stop - rows.start), *shape[1:]), dtype)
        for offset in range(0, rows.stop - rows.start, step):
            block = buffer[: min(step, rows.stop - rows.start - offset)]
            handle.seek(data_start + (rows.start + offset) * row_bytes)
            if handle.readinto(memoryview(block).cast("B")) != block.nbytes:
                raise DataError(f"{path} ends before row {rows.start + offset + len(block)}; delete it and load again")
            yield offset, block


def split_source(data_dir: Path, split: str, n: int | None) -> tuple[Path, slice, int]:
    """The verified image cache holding the split, the split's rows in it, and the image side."""
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    ensure_cache(data_dir, manifest, group_of(split))
    return cache_paths(data_dir, group_of(split))[0], rows, manifest["image_size"]


def load_split(data_dir: Path, split: str, n: int | None = None, device: torch.device | str | None = None
               ) -> torch.Tensor:
    """float32 [N, 1, H, W] in [0, 1]: A_n = pool[0:n], B_n = pool[-n:], or the first n test images.

    n None: the whole half of the pool (pool_size // 2) or the whole test set. device: where the tensor is
    made (None: host memory). The split's rows are read from the verified cache block by block and converted
    (gdm.data.pixels.to_unit_into) straight into the output, so the peak host memory of a load is the output
    (N·H·W·4 bytes; none on a GPU) plus one block of BLOCK_BYTES (two on a GPU: stored and float32), not the
    2.25× of reading the rows, casting and dividing in separate copies. The file's pages pass through the page
    cache, which the ranks of a node share.
    """
    path, rows, side = split_source(data_dir, split, n)
    shape = (rows.stop - rows.start, 1, side, side)
    if device is None or torch.device(device).type == "cpu":
        images = torch.from_numpy(np.empty(shape, np.float32))  # numpy's allocation: tracemalloc counts it
        for offset, block in stored_blocks(path, rows, BLOCK_BYTES):
            to_unit_into(block, images[offset : offset + len(block), 0].numpy())
        return images
    return load_to_device(path, rows, torch.empty(shape, dtype=torch.float32, device=device))


def load_to_device(path: Path, rows: slice, images: torch.Tensor) -> torch.Tensor:
    """Fill `images` (on an accelerator) with the rows, each block converted in one reused host buffer."""
    staging = None
    for offset, block in stored_blocks(path, rows, BLOCK_BYTES):
        staging = np.empty(block.shape, np.float32) if staging is None else staging  # the first block is the largest
        to_unit_into(block, staging[: len(block)])
        images[offset : offset + len(block), 0].copy_(torch.from_numpy(staging[: len(block)]))  # synchronous
    return images


def load_params(data_dir: Path, split: str, n: int | None = None) -> torch.Tensor | None:
    """float32 [N, P] generating parameters of the same images as load_split (None: non-parametric family)."""
    params = select(data_dir, split, n, 1)
    return None if params is None else torch.from_numpy(params).float()
