"""WebDataset tar shards (plain POSIX ustar tars, written with webdataset.TarWriter) of one split.

Each sample is key "%08d" (its position in the split, no dots): `img.npy` (float32 or uint8 [H, W], as the
family made it: gdm.data.pixels), `index.txt` (the same position, a self-check), `params.npy` when the
family has generating parameters. Each shard is written atomically and its sha256 recorded by the caller.
Shards are read by one reader, webdataset's tar iteration (`tar_samples`), for the cache and the stream alike.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm
from webdataset import tariterators

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


# What a damaged shard can raise inside webdataset's iteration: tarfile's errors, the file's, a short .npy or a
# non-numeric index.txt (ValueError, also group_by_keys' duplicate member), a missing member (KeyError).
SHARD_ERRORS = (tarfile.TarError, OSError, ValueError, KeyError, EOFError)


def tar_samples(path: Path | str) -> Iterator[dict]:
    """Raw samples {__key__, __url__, img.npy, index.txt[, params.npy]: bytes} of one shard, in stored order.

    The one tar reader of gdm: webdataset's own iteration (tariterators.tar_file_iterator, a streaming `r|*`
    pass holding one member at a time, then group_by_keys), over a file opened here and closed at the end,
    so both the cache build (read_split) and the training stream (gdm.data.streaming) read shards the same
    way. DataError naming the file if it cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            members = ({**member, "__url__": str(path)} for member in tariterators.tar_file_iterator(handle))
            yield from tariterators.group_by_keys(members)
    except SHARD_ERRORS as err:
        raise unreadable(path, err) from err


def unreadable(path: Path | str, err: Exception) -> DataError:
    return DataError(f"shard {path} is unreadable ({err}); delete its data folder and prepare again")


def sample_index(sample: dict) -> int:
    """The stored position of a raw sample (its index.txt); DataError naming its shard if missing or not a number
    (tarfile ends a shard cut short inside a member's header quietly, so its last sample lacks members)."""
    try:
        return int(sample["index.txt"])
    except (KeyError, ValueError) as err:
        raise unreadable(sample['__url__'], err) from err


def decode_sample(sample: dict) -> dict:
    """{key, index, image, params} of a raw sample; DataError naming its shard if a member is missing or bad,
    or if its index.txt disagrees with its key (a sample moved within or between shards)."""
    index = sample_index(sample)
    if sample_key(index) != sample["__key__"]:
        raise DataError(f"shard {sample['__url__']}: sample {sample['__key__']} claims index {index}; "
                        "the shard is corrupt")
    try:
        image = np.load(io.BytesIO(sample["img.npy"]), allow_pickle=False)
        params = np.load(io.BytesIO(sample["params.npy"]), allow_pickle=False) if "params.npy" in sample else None
    except SHARD_ERRORS as err:
        raise unreadable(sample['__url__'], err) from err
    return {"key": sample["__key__"], "index": index, "image": image, "params": params}


def read_shard(path: Path) -> Iterator[dict]:
    """Yield {key, image, params, index} per sample of one shard; DataError naming the file if malformed."""
    return map(decode_sample, tar_samples(path))


def read_split(directory: Path, records: list[dict], size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode all shards of a split into (images [N, size, size] as stored, params [N, P] or None); checks the order."""
    samples = [s for record in records for s in read_shard(Path(directory) / record["name"])]
    if [s["index"] for s in samples] != list(range(len(samples))):
        raise DataError(f"shards in {directory} do not hold positions 0..{len(samples) - 1} in order; prepare again")
    images = np.stack([s["image"] for s in samples]) if samples else np.zeros((0, size, size), np.uint8)
    params = np.stack([s["params"] for s in samples]) if samples and samples[0]["params"] is not None else None
    return images, params
