"""`gdm run --dry-run`: the plan with its counted cost, before anything is submitted."""

from __future__ import annotations

import math

import pytest

from gdm import lifecycle
from gdm.cells import expand_cells
from gdm.cli import main
from gdm.config import ModelConfig, load_config
from launch.plan import make_plan, network_cost, sampler_steps


def test_flops_are_counted_for_the_network():
    # a 2-layer, 1-channel BF-CNN is two bias-free 3×3 convs: 2·9 FLOPs (multiply-add) per output pixel each
    cost = network_cost(ModelConfig(name="bf_cnn", channels=1, layers=2), 8)
    conv = 2 * 9 * 8 * 8
    assert cost.parameters == 18 and cost.forward_flops == 2 * conv
    # backward: a weight gradient per conv, and the input gradient of the second only (the image needs none)
    assert cost.train_flops == 2 * conv + 2 * conv + conv


def test_sampler_steps_follow_the_effective_noise_decay(tiny_config):
    s = tiny_config.sampler  # h0 0.2, β 0.1: σ shrinks by 0.98 a step from σ_0 = 1 to σ_end = 0.05
    expected = math.ceil(math.log(s.sigma_end / s.sigma_0) / math.log(1 - s.beta * s.h0))
    assert sampler_steps(tiny_config) == min(s.max_steps, expected) == 40  # capped by sampler.max_steps


def test_plan_counts_done_and_todo_and_prices_them(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "launch.train.sustained_tflops=0.001"])
    first = expand_cells(cfg)[0]
    lifecycle.finish(first.directory(cfg))
    plan = make_plan(cfg)
    assert plan.cells_done == [first] and len(plan.cells_todo) == 3 and len(plan.pairs_todo) == 2
    cost = plan.cost["disks"]
    hours = cost.train_flops * cfg.trainer.batch_size * cfg.trainer.max_steps / 1e9 / 3600
    assert plan.train_hours_per_cell["disks"] == pytest.approx(hours)
    assert plan.disk_bytes["data"] == 2 * 4.0 * (16 + 8) * 16 * 16


def test_dry_run_prints_the_plan_and_refuses_what_run_refuses(tmp_path, capsys):
    root, faces = tmp_path / "runs", tmp_path / "faces"
    faces.mkdir()
    config = "configs/celeba80.yaml"
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}"]) == 0
    out = capsys.readouterr().out
    assert "cells: 12 to train, 0 done; pairs: 6 to evaluate, 0 done" in out
    assert "device-hours" in out and "disk: data" in out and "train jobs: 12 on executor slurm" in out
    assert "1 node × 1 GPUs; batch per GPU 512 (trainer.batch_size 512 / 1)" in out
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}", "trainer.devices=8",
                 "launch.train.tasks_per_node=8", "launch.train.gpus_per_node=8"]) == 0
    out = capsys.readouterr().out
    assert "batch per GPU 64 (trainer.batch_size 512 / 8)" in out and "about 61.5 GiB" in out, out
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}",
                 "trainer.devices=8", "launch.train.tasks_per_node=8"]) == 2  # 8 processes, 1 GPU: refused
    assert "launch.train.gpus_per_node" in capsys.readouterr().err
    assert not root.exists()  # nothing written
    assert main(["run", config, "--dry-run", f"root={root}"]) == 2
    assert "'datasets.celeba.source' is not set" in capsys.readouterr().err
