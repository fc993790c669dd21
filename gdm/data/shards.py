"""WebDataset tar shards (plain POSIX ustar tars, written with webdataset.TarWriter) of one split.

Each sample is key "%08d" (its position in the split, no dots): `img.npy` (float32 or uint8 [H, W], as the
family made it: gdm.data.pixels), `index.txt` (the same position, a self-check), `params.npy` when the
family has generating parameters. Each shard is written atomically and its sha256 recorded by the caller.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from gdm.data.errors import DataError
from gdm.io import atomic_write, file_sha256


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy encoding of `array` (no pickles)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def sample_key(position: int) -> str:
    return f"{position:08d}"


# Fixed member metadata (mtime 0, no owner names, read-only mode): reruns write byte-identical shards, so a
# shard's sha256 in the manifest is a function of its images alone (tests/test_data_prepare.py checks the bytes).
MEMBER = {"user": "", "group": "", "mode": 0o444, "mtime": 0, "format": tarfile.USTAR_FORMAT}


def write_shard(path: Path, images: np.ndarray, params: np.ndarray | None, start: int) -> None:
    """Write images (positions start, start+1, ...) and their params as one tar, atomically."""

    def write(handle) -> None:
        with wds.TarWriter(handle, encoder=False, **MEMBER) as tar:
            for offset, image in enumerate(images):
                sample = {"__key__": sample_key(start + offset), "img.npy": npy_bytes(image),
                          "index.txt": str(start + offset).encode()}
                tar.write(sample | ({"params.npy": npy_bytes(params[offset])} if params is not None else {}))

    atomic_write(path, write)


def write_split(
    directory: Path, split: str, images: np.ndarray, params: np.ndarray | None, shard_size: int, progress=False
) -> list[dict]:
    """Write a split as shards of shard_size images; returns [{name, count, sha256}] in order."""
    records = []
    starts = range(0, len(images), shard_size)
    for number, start in enumerate(tqdm(starts, desc=f"shards {split}", disable=not progress)):
        path = Path(directory) / shard_name(split, number)
        chunk = slice(start, start + shard_size)
        write_shard(path, images[chunk], None if params is None else params[chunk], start)
        records.append({"name": path.name, "count": len(images[chunk]), "sha256": file_sha256(path)})
    return records


def read_shard(path: Path) -> Iterator[dict]:
    """Yield {key, image, params, index} per sample of one shard; DataError naming the file if malformed."""
    try:
        with tarfile.open(path) as tar:
            sample: dict = {}
            for member in tar:
                key, _, field = member.name.partition(".")
                if sample and key != sample["key"]:
                    yield _finish(sample, path)
                    sample = {}
                sample.update(key=key)
                sample[field] = tar.extractfile(member).read()
            if sample:
                yield _finish(sample, path)
    except DataError:
        raise
    except (tarfile.TarError, OSError, ValueError, KeyError) as err:
        raise DataError(f"shard {path} is unreadable ({err}); delete its data folder and prepare again") from err


def _finish(sample: dict, path: Path) -> dict:
    index = int(sample["index.txt"])
    if sample_key(index) != sample["key"]:
        raise DataError(f"shard {path}: sample {sample['key']} claims index {index}; the shard is corrupt")
    params = np.load(io.BytesIO(sample["params.npy"])) if "params.npy" in sample else None
    return {"key": sample["key"], "index": index, "image": np.load(io.BytesIO(sample["img.npy"])), "params": params}


def read_split(directory: Path, records: list[dict], size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode all shards of a split into (images [N, size, size] as stored, params [N, P] or None); checks the order."""
    samples = [s for record in records for s in read_shard(Path(directory) / record["name"])]
    if [s["index"] for s in samples] != list(range(len(samples))):
        raise DataError(f"shards in {directory} do not hold positions 0..{len(samples) - 1} in order; prepare again")
    images = np.stack([s["image"] for s in samples]) if samples else np.zeros((0, size, size), np.uint8)
    params = np.stack([s["params"] for s in samples]) if samples and samples[0]["params"] is not None else None
    return images, params
