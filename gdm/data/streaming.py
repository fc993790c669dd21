"""Stream a split from its shards, for pools larger than memory; correct under DDP.

Shards are split explicitly: rank r of W takes shards r, r+W, ... (the node splitter), and dataloader
worker k of K takes every K-th of those, so every (rank, worker) reads its own shards and no image is
seen twice in the same step; so a split must span at least ranks × workers shards (gdm.config refuses a
layout whose smallest split spans fewer: `gdm.config.split_shards`, docs/CONTRACTS.md). Each (rank, worker)
draws its shards with replacement (resampling, as wds.ResampledShards) from a generator seeded by (seed,
rank, worker, epoch), shuffles samples in a buffer, and `.with_epoch` cuts the infinite stream to
`epoch_size` batches per rank, so all ranks take the same number of steps (DDP would hang otherwise).
Samples outside the split (A_n = pool[0:n], B_n = pool[-n:]) are dropped by their stored position. Shards
are read and samples decoded by gdm.data.shards' reader (`tar_samples`, `decode_sample`), the cache build's own.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from gdm.data.errors import DataError
from gdm.data.manifest import load_manifest
from gdm.data.pixels import to_unit
from gdm.data.shards import decode_sample, sample_index, tar_samples
from gdm.data.splits import split_slice
from gdm.data.store import group_of, verify_shards
from gdm.seeds import shuffle_rng, stream_rng


def rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed's when initialised, else (0, 1)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def worker_and_count() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class RankShards(IterableDataset):
    """Endless {"url": shard} drawn with replacement from this rank's and this worker's own shards."""

    def __init__(self, urls: list[str], rank: int, world_size: int, seed: int):
        self.urls, self.rank, self.world_size, self.seed = urls, rank, world_size, seed
        self.epoch = 0  # advanced at every new iteration so epochs draw different shard sequences

    def own_urls(self, worker: int, workers: int) -> list[str]:
        mine = self.urls[self.rank :: self.world_size][worker::workers]
        if not mine:
            raise DataError(
                f"{len(self.urls)} shards cannot feed {self.world_size} ranks x {workers} workers with distinct "
                f"shards (each reads its own: {self.world_size * workers} needed); use a smaller "
                f"datasets.<name>.shard_size (gdm.config checks it), fewer workers, or trainer.in_memory=true"
            )
        return mine

    def __iter__(self):
        worker, workers = worker_and_count()
        mine = self.own_urls(worker, workers)
        rng = stream_rng(self.seed, self.rank, worker, self.epoch)
        self.epoch += 1
        while True:
            yield {"url": mine[int(rng.integers(len(mine)))]}


class SeededShuffle:
    """Buffer shuffle whose generator is seeded by (seed, rank, worker, call count): reproducible per rank."""

    def __init__(self, bufsize: int, seed: int, rank: int):
        self.bufsize, self.seed, self.rank, self.calls = bufsize, seed, rank, 0

    def __call__(self, source):
        rng = shuffle_rng(self.seed, self.rank, worker_and_count()[0], self.calls)
        self.calls += 1
        return wds.shuffle(self.bufsize, min(self.bufsize, 100), rng=rng)(source)


def in_rows(start: int, stop: int, sample: dict) -> bool:
    """Whether a raw sample's stored position lies in the split's rows [start, stop)."""
    return start <= sample_index(sample) < stop


def shard_samples(sources):
    """Pipeline stage: the raw samples of each {"url": shard} drawn, read by gdm.data.shards' one tar reader."""
    for source in sources:
        yield from tar_samples(source["url"])


def decode(sample: dict) -> tuple[np.ndarray, int]:
    """(stored image, position) of a raw sample, decoded and checked as the cache build does (decode_sample)."""
    decoded = decode_sample(sample)
    return decoded["image"], decoded["index"]


def collate(samples: list[tuple[np.ndarray, int]], with_index: bool):
    """Stack to float32 [B, 1, H, W] in [0, 1] (and int64 positions if with_index)."""
    images = torch.from_numpy(to_unit(np.stack([s[0] for s in samples]))).unsqueeze(1)
    return (images, torch.tensor([s[1] for s in samples])) if with_index else images


def split_urls(data_dir: Path, manifest: dict, group: str, rows: slice) -> list[str]:
    """Paths of the shards of `group` that hold at least one position in rows."""
    urls, start = [], 0
    for record in manifest["shards"][group]:
        if start < rows.stop and start + record["count"] > rows.start:
            urls.append(str(Path(data_dir) / record["name"]))
        start += record["count"]
    return urls


def make_stream(
    data_dir: Path,
    split: str,
    n: int | None,
    batch_size: int,
    seed: int,
    epoch_size: int,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    num_workers: int = 0,
    shuffle_buffer: int = 2000,
    with_index: bool = False,
    verify: bool = True,
) -> wds.DataPipeline:
    """An IterableDataset of float [B, 1, H, W] batches of a split: epoch_size batches per rank per epoch.

    Use it with `torch.utils.data.DataLoader(stream, batch_size=None, num_workers=num_workers)`; the
    epoch is divided among the workers, so epoch_size must be a multiple of max(num_workers, 1).
    rank / world_size default to torch.distributed's. verify: check the shards' sha256 first.
    """
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    rank, world_size = rank_and_world(rank, world_size)
    workers = max(num_workers, 1)
    if epoch_size % workers:
        raise DataError(
            f"epoch_size {epoch_size} is not a multiple of num_workers {workers}; each worker yields a share"
        )
    if verify:
        verify_shards(data_dir, manifest, group_of(split))
    urls = split_urls(data_dir, manifest, group_of(split), rows)
    return wds.DataPipeline(
        RankShards(urls, rank, world_size, seed),
        shard_samples,
        wds.select(functools.partial(in_rows, rows.start, rows.stop)),
        SeededShuffle(shuffle_buffer, seed, rank),
        wds.map(decode),
        wds.batched(batch_size, collation_fn=functools.partial(collate, with_index=with_index), partial=False),
    ).with_epoch(epoch_size // workers)
