"""Streaming under a real 2-process DDP group (gloo on CPU): distinct samples, equal batch counts."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gdm.config import DataConfig
from gdm.data.errors import DataError
from gdm.data.prepare import prepare_dataset
from gdm.data.store import load_split
from gdm.data.streaming import make_stream


def prepare(tmp_path):
    data = DataConfig(family="disks", image_size=8, pool_size=64, test_size=4, shard_size=8, seed=0)
    return prepare_dataset(data, tmp_path / "data")


def rank_main(rank: int, world_size: int, tmp: str) -> None:
    """One DDP rank: stream split A (n = 32, 4 shards) and record the positions and batch count it saw."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        stream = make_stream(f"{tmp}/data", "A", 32, batch_size=4, seed=7, epoch_size=6, with_index=True)
        batches = list(stream)
        assert all(images.shape == (4, 1, 8, 8) and images.dtype == torch.float32 for images, _ in batches)
        expected = load_split(f"{tmp}/data", "A", 32)
        assert all(torch.equal(images, expected[index]) for images, index in batches)  # positions are right
        seen = sorted({int(i) for _, index in batches for i in index})
        with open(f"{tmp}/rank{rank}.json", "w") as handle:
            json.dump({"batches": len(batches), "seen": seen}, handle)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_get_distinct_samples_and_equal_batches(tmp_path):
    prepare(tmp_path)
    mp.spawn(rank_main, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0]["batches"] == results[1]["batches"] == 6
    assert not set(results[0]["seen"]) & set(results[1]["seen"])
    assert all(0 <= i < 32 for r in results for i in r["seen"])


def test_stream_without_ddp_and_with_workers(tmp_path):
    prepare(tmp_path)
    batches = list(make_stream(tmp_path / "data", "B", 16, 4, seed=0, epoch_size=3, with_index=True))
    assert len(batches) == 3 and all(48 <= int(i) < 64 for _, index in batches for i in index)
    again = list(make_stream(tmp_path / "data", "B", 16, 4, seed=0, epoch_size=3, with_index=True))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))  # reproducible given the seed
    loader = torch.utils.data.DataLoader(
        make_stream(tmp_path / "data", "A", 32, 4, seed=0, epoch_size=4, num_workers=2), batch_size=None, num_workers=2
    )
    assert len(list(loader)) == 4


def test_too_few_shards_for_ranks_is_explained(tmp_path):
    prepare(tmp_path)
    stream = make_stream(tmp_path / "data", "A", 4, 2, seed=0, epoch_size=2, rank=1, world_size=2)
    with pytest.raises(DataError, match="cannot feed 2 ranks"):
        list(stream)
