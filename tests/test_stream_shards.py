"""Streaming's shard rule (gdm.config, datasets.<name>.shard_size): a layout is refused at config time when its
smallest split spans fewer shards than ranks × workers, and every layout it accepts feeds every reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdm.config import ConfigError, DataConfig, load_config, split_shards
from gdm.data.errors import DataError
from gdm.data.prepare import prepare_dataset
from gdm.data.splits import split_slice
from gdm.data.streaming import RankShards, split_urls
from gdm.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]


def streamed(tiny_overrides, *overrides):
    return load_config(None, [*tiny_overrides, "trainer.in_memory=false", *overrides])


def test_a_layout_whose_smallest_split_spans_too_few_shards_is_refused_naming_the_key(tiny_overrides):
    """n_train [100, 1000], 2 ranks × 4 workers = 8 readers: ⌈100/14⌉ = 8 shards fit, ⌈100/15⌉ = 7 do not."""
    layout = ["n_train=[1000,100]", "datasets.disks.pool_size=2000", "trainer.devices=2", "trainer.num_workers=4"]
    assert streamed(tiny_overrides, *layout, "datasets.disks.shard_size=14").datasets["disks"].shard_size == 14
    with pytest.raises(ConfigError) as caught:
        streamed(tiny_overrides, *layout, "datasets.disks.shard_size=15")
    message = str(caught.value)
    assert "'datasets.disks.shard_size' is 15" in message and "n_train 100" in message
    assert "spans only 7 shard(s) for 8 readers" in message and "trainer.devices 2" in message
    assert "at most 14" in message and "trainer.in_memory=true" in message


def test_resident_training_takes_any_shard_size(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "trainer.devices=4", "datasets.disks.shard_size=1000"])
    assert cfg.trainer.in_memory and cfg.datasets["disks"].shard_size == 1000


def test_a_split_smaller_than_the_readers_cannot_be_streamed(tiny_overrides):
    with pytest.raises(ConfigError, match="no shard size can, since a split of 1 images cannot give 2 readers"):
        streamed(tiny_overrides, "trainer.devices=2", "datasets.disks.shard_size=1")


def test_shipped_celeba80_passes_and_streaming_it_on_eight_gpus_is_refused(tmp_path):
    (tmp_path / "faces").mkdir()
    source = f"datasets.celeba.source={tmp_path / 'faces'}"
    assert load_experiment(REPO / "configs/celeba80.yaml", [source]).trainer.in_memory  # shipped: resident
    eight = ["trainer.devices=8", "launch.train.tasks_per_node=8", "launch.train.gpus_per_node=8"]
    with pytest.raises(ConfigError, match="'datasets.celeba.shard_size' is 10000.*n_train 1\\)"):
        load_experiment(REPO / "configs/celeba80.yaml", [source, *eight, "trainer.in_memory=false"])


def feeds_every_reader(urls: list[str], world: int, workers: int) -> bool:
    """Whether each worker of each rank gets shards of its own from the stream (RankShards.own_urls)."""
    try:
        return all(RankShards(urls, rank, world, 0).own_urls(k, workers)
                   for rank in range(world) for k in range(workers))
    except DataError:
        return False


@pytest.mark.parametrize("split", ["A", "B"])
def test_every_accepted_layout_feeds_every_reader_and_a_refused_one_starves_one(tmp_path, split):
    """The config's count against the stream's own: for n and readers W × K, if ⌈n/5⌉ ≥ W·K every (rank, worker)
    of RankShards owns a shard of split_urls; for A (aligned, exactly ⌈n/5⌉ shards) a refused layout starves one."""
    manifest = prepare_dataset(DataConfig(family="disks", image_size=8, pool_size=64, test_size=4, shard_size=5),
                               tmp_path / "data")
    for n in (1, 4, 5, 9, 11, 20, 32):
        urls = split_urls(tmp_path / "data", manifest, "pool", split_slice(split, n, 64, 4))
        assert len(urls) >= split_shards(n, 5)
        for world, workers in ((1, 1), (2, 1), (1, 3), (2, 2), (3, 2), (4, 2)):
            fed = feeds_every_reader(urls, world, workers)
            if split_shards(n, 5) >= world * workers:
                assert fed, (n, world, workers)
            elif split == "A":
                assert not fed and len(urls) == split_shards(n, 5), (n, world, workers)
