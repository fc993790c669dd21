"""`gdm run --dry-run`: the plan with its counted cost, before anything is submitted."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from gdm import lifecycle
from gdm.cells import expand_cells
from gdm.cli import main
from gdm.config import ModelConfig, load_config
from launch.plan import (
    CPU_STARTUP_S,
    GPU_MFU,
    PEAKS,
    RATES,
    cpu_core_fp32,
    cpu_rate,
    eigh_flops,
    format_plan,
    make_plan,
    network_cost,
    sampler_steps,
)


def test_flops_are_counted_for_the_network():
    # a 2-layer, 1-channel BF-CNN is two bias-free 3×3 convs: 2·9 FLOPs (multiply-add) per output pixel each
    cost = network_cost(ModelConfig(name="bf_cnn", channels=1, layers=2), 8)
    conv = 2 * 9 * 8 * 8
    assert cost.parameters == 18 and cost.forward_flops == 2 * conv
    # backward: a weight gradient per conv, and the input gradient of the second only (the image needs none)
    assert cost.train_flops == 2 * conv + 2 * conv + conv
    # a Jacobian row: the input gradient through both convs, no weight gradient
    assert cost.vjp_flops == 2 * conv


def test_sampler_steps_follow_the_effective_noise_decay(tiny_config):
    s = tiny_config.sampler  # h0 0.2, β 0.1: σ shrinks by 0.98 a step from σ_0 = 1 to σ_end = 0.05
    expected = math.ceil(math.log(s.sigma_end / s.sigma_0) / math.log(1 - s.beta * s.h0))
    assert sampler_steps(tiny_config) == min(s.max_steps, expected) == 40  # capped by sampler.max_steps


def test_plan_counts_done_and_todo_and_prices_them(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "trainer.threads=2"])
    first = expand_cells(cfg)[0]
    lifecycle.finish(first.directory(cfg))
    plan = make_plan(cfg)
    assert plan.cells_done == [first] and len(plan.cells_todo) == 3 and len(plan.pairs_todo) == 2
    cost, cell = plan.cost["disks"], plan.train_breakdown["disks"]
    # on the CPU each 32-true step runs at one core's rate × trainer.threads; the start-up holds both cores
    steps = cost.train_flops * cfg.trainer.batch_size * cfg.trainer.max_steps / (2 * cpu_rate(cfg.model).flops["tf32"])
    assert cell["training steps"] == pytest.approx(2 * steps / 3600)
    assert cell["start-up"] == pytest.approx(2 * CPU_STARTUP_S / 3600)
    assert plan.train_hours_per_cell["disks"] == pytest.approx(sum(cell.values()))
    # wall: the driver's own time (data not prepared yet), then 3 cells and 2 pairs, one job at a time in process
    cells = 3 * plan.train_hours_per_cell["disks"] / 2  # device-hours of 2 cores → wall hours
    pairs = sum(plan.eval_hours_per_pair[p.pair_id] for p in plan.pairs_todo)
    overhead = 2 * CPU_STARTUP_S + (16 + 8) / 1826.0
    assert plan.wall_hours == pytest.approx(overhead / 3600 + cells + pairs)
    assert plan.disk_bytes["data"] == 2 * 4.0 * (16 + 8) * 16 * 16


def test_evaluation_prices_each_piece_at_its_precision_and_place(tiny_overrides):
    """Sampling runs on the eval job's GPU at its fp32 rate; the Jacobians' eigh on its CPU cores (gdm.evaluate
    takes J to the host); a GPU named by the job's constraint is the one priced."""
    gpu = ["launch.eval.gpus_per_node=1", "launch.eval.constraint=a100", "launch.eval.cpus_per_task=4",
           "eval.jacobian.enabled=true", "eval.jacobian.num_images=3", "eval.jacobian.sigmas=[0.1,0.2]"]
    cfg = load_config(None, [*tiny_overrides, *gpu])
    plan = make_plan(cfg)
    assert plan.eval_device.rate.name == "A100"
    pair = plan.eval_breakdown[plan.pairs_todo[0].pair_id]
    forwards = sampler_steps(cfg) + 2  # the pass that finds σ below sigma_end, and the final denoise
    sampling = 2 * cfg.eval.num_samples * forwards * plan.cost["disks"].forward_flops
    assert pair["sampling"] == pytest.approx(sampling / (GPU_MFU * PEAKS["a100"]["fp32"]) / 3600)
    eighs = 2 * 3 * 2 * 2  # splits × images × σ × (the model's J and the optimal J*)
    assert pair["Jacobian eigh"] == pytest.approx(eighs * eigh_flops(256) / (4 * RATES["cpu"].flops["eigh"]) / 3600)
    # without the references and the Jacobians, those pieces are gone and the pair costs less
    lean = make_plan(load_config(None, [*tiny_overrides, *gpu, "eval.jacobian.enabled=false",
                                        "eval.optimal_reference=false", "eval.gaussian_reference=false"]))
    lean_pair = lean.eval_breakdown[lean.pairs_todo[0].pair_id]
    assert set(pair) - set(lean_pair) == {"optimal denoiser", "Gaussian reference", "blind Gaussian reference",
                                          "Gaussian eigh", "Jacobian rows", "Jacobian eigh"}
    assert lean_pair["sampling"] == pair["sampling"]


def test_nearest_neighbours_grow_with_the_training_set(tiny_overrides):
    cfg = load_config(None, [*tiny_overrides, "n_train=[1,8]", "eval.psnr_images=1"])
    plan = make_plan(cfg)
    small, large = (plan.eval_breakdown[p.pair_id] for p in plan.pairs_todo)
    # 3 measures (cosine, correlation; the headline is one of them: 2) × 2 FLOP × pixels × (2·2·K·n + 2·T·n + K²)
    pixels, k, t = 16 * 16, cfg.eval.num_samples, 8
    flops = [2 * 2.0 * pixels * (2 * (2 * k * n + t * n) + k * k) for n in (1, 8)]
    rate = cpu_rate(cfg.model).flops["fp32"] * 3600
    assert (small["nearest neighbours"], large["nearest neighbours"]) == pytest.approx([f / rate for f in flops])


def test_dry_run_prints_the_plan_and_refuses_what_run_refuses(tmp_path, capsys):
    root, faces = tmp_path / "runs", tmp_path / "faces"
    faces.mkdir()
    config = "configs/celeba80.yaml"
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}"]) == 0
    out = capsys.readouterr().out
    assert "cells: 12 to train, 0 done; pairs: 6 to evaluate, 0 done" in out
    assert "device-hours" in out and "disk: data" in out and "train jobs: 12 on executor slurm" in out
    assert "compute per pair (celeba/n098325-eval-" in out and "Jacobian eigh" in out and "sampling" in out
    assert "1 node × 1 GPUs; batch per GPU 512 (trainer.batch_size 512 / 1)" in out
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}", "trainer.devices=8",
                 "launch.train.tasks_per_node=8", "launch.train.gpus_per_node=8"]) == 0
    out = capsys.readouterr().out
    assert "batch per GPU 64 (trainer.batch_size 512 / 8)" in out and "about 42.8 GiB" in out, out
    assert main(["run", config, "--dry-run", f"datasets.celeba.source={faces}", f"root={root}",
                 "trainer.devices=8", "launch.train.tasks_per_node=8"]) == 2  # 8 processes, 1 GPU: refused
    assert "launch.train.gpus_per_node" in capsys.readouterr().err
    assert not root.exists()  # nothing written
    assert main(["run", config, "--dry-run", f"root={root}"]) == 2
    assert "'datasets.celeba.source' is not set" in capsys.readouterr().err


def test_celeba80_header_and_readme_quote_the_plan(tmp_path):
    """The cost the config's comment and the configs table (docs/RESULTS.md) state is the one the plan prints."""
    faces = tmp_path / "faces"
    faces.mkdir()
    cfg = load_config("configs/celeba80.yaml", [f"datasets.celeba.source={faces}", f"root={tmp_path / 'runs'}"])
    text = format_plan(cfg, make_plan(cfg))
    cell = re.search(r"compute per cell \(celeba\): (\S+) device-hours", text).group(1)
    pairs = sorted(set(re.findall(r"compute per pair \(celeba/\S+\): (\S+) device-hours", text)), key=float)
    total = re.search(r"total (\S+) device-hours", text).group(1)
    wall = re.search(r"wall time about (\S+ \S+)", text).group(1)
    header = " ".join(" ".join(line.lstrip("#") for line in Path("configs/celeba80.yaml").read_text().splitlines()
                               if line.startswith("#")).split())
    quoted = [f"{cell} device-hours per cell", f"{pairs[0]}–{pairs[-1]} per eval pair", f"total {total} device-hours",
              f"about {wall}"]
    assert all(figure in header for figure in quoted), (quoted, header)
    (row,) = [line for line in Path("docs/RESULTS.md").read_text().splitlines() if line.startswith("| `celeba80.yaml`")]
    assert f"{cell} device-hours per cell" in row and f"total {total} device-hours" in row and wall in row


def test_a_cpu_core_runs_a_narrow_network_slower_than_a_wide_one():
    """The measured widths give their rates; between them the rate is log-interpolated, beyond them held."""
    from launch.plan import CPU_CORE_FP32_BY_CHANNELS

    for channels, rate in CPU_CORE_FP32_BY_CHANNELS:
        assert cpu_core_fp32(channels) == pytest.approx(rate)
    (narrow, slow), (wide, fast) = CPU_CORE_FP32_BY_CHANNELS[0], CPU_CORE_FP32_BY_CHANNELS[1]
    between = cpu_core_fp32(round((narrow * wide) ** 0.5))
    assert slow < between < fast
    assert cpu_core_fp32(4) == pytest.approx(slow)
    assert cpu_core_fp32(512) == pytest.approx(CPU_CORE_FP32_BY_CHANNELS[-1][1])
