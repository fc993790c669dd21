"""Shared fixtures: a tiny experiment config that trains and evaluates in seconds on a CPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_SILENT", "true")  # tests only: keep W&B quiet; runs are offline anyway

TINY_OVERRIDES = [
    "name=tiny",
    "n_train=[1,4]",
    "datasets.disks.image_size=16",
    "datasets.disks.pool_size=16",
    "datasets.disks.test_size=8",
    "datasets.disks.shard_size=8",
    "model.channels=8",
    "model.blocks=1",
    "trainer.max_steps=6",
    "trainer.batch_size=4",
    "trainer.lr_halve_every=0",
    "trainer.checkpoint_every=3",
    "trainer.log_every=2",
    "trainer.accelerator=cpu",
    "sampler.max_steps=40",
    "sampler.h0=0.2",
    "eval.num_samples=4",
    "eval.batch_size=4",
    "eval.psnr_images=4",
    "eval.psnr_sigmas=[0.1,0.5]",
    "eval.grid_samples=2",
    "launch.executor=inprocess",
]


@pytest.fixture
def tiny_overrides(tmp_path) -> list[str]:
    """Overrides of the schema defaults for a tiny, fast experiment rooted in tmp_path."""
    return [*TINY_OVERRIDES, f"root={tmp_path / 'runs'}"]


@pytest.fixture
def tiny_config(tiny_overrides):
    from gdm.config import load_config

    return load_config(None, tiny_overrides)
