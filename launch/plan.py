"""`gdm run --dry-run`: what a run would do and cost, before anything is submitted.

The plan lists the cells and pairs to do and those already done, the jobs and arrays that would go
out with their resources, the compute per cell in device-hours and the disk. Compute is counted, not
guessed: FLOPs per image of the network (forward + backward, torch.utils.flop_counter) × batch × steps
for training, and forward FLOPs × sampler steps × samples for evaluation, at the sustained rate the
config states (`launch.<kind>.sustained_tflops`, which benchmarks/bench_train.py measures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from gdm import lifecycle
from gdm.cells import Cell, EvalPair, expand_cells, expand_pairs
from gdm.config import ExperimentConfig, ModelConfig, ResourcesConfig, train_memory_gb, trains_on_gpu
from gdm.models import build_model


@dataclass(frozen=True)
class NetworkCost:
    """FLOPs of one image through the network, and its parameter count."""

    forward_flops: float
    train_flops: float  # forward + backward
    parameters: int


def network_cost(model: ModelConfig, image_size: int) -> NetworkCost:
    """Counted on one image on the CPU (FLOPs do not depend on the device)."""
    net = build_model(model, image_size)
    x = torch.rand(1, 1, image_size, image_size)
    with FlopCounterMode(display=False) as forward:
        net(x)
    with FlopCounterMode(display=False) as train:
        net(x).square().mean().backward()
    return NetworkCost(float(forward.get_total_flops()), float(train.get_total_flops()),
                       sum(p.numel() for p in net.parameters()))


def sampler_steps(cfg: ExperimentConfig) -> int:
    """Iterations until σ_t < sigma_end: the effective noise shrinks by (1 − β·h) a step (Algorithm 1)."""
    s = cfg.sampler
    shrink = 1.0 - s.beta * s.h0
    steps = math.log(s.sigma_end / s.sigma_0) / math.log(shrink) if 0 < shrink < 1 else s.max_steps
    return int(min(s.max_steps, math.ceil(steps)))


def device_hours(flops: float, resources: ResourcesConfig) -> float:
    return flops / (resources.sustained_tflops * 1e12) / 3600.0


@dataclass(frozen=True)
class Plan:
    cells_todo: list[Cell]
    cells_done: list[Cell]
    pairs_todo: list[EvalPair]
    pairs_done: list[EvalPair]
    cost: dict[str, NetworkCost]  # per dataset
    train_hours_per_cell: dict[str, float]  # per dataset
    eval_hours_per_pair: dict[str, float]
    disk_bytes: dict[str, float]  # data, checkpoints, samples


def make_plan(cfg: ExperimentConfig) -> Plan:
    cells, pairs = expand_cells(cfg), expand_pairs(cfg)
    cost = {name: network_cost(cfg.model, data.image_size) for name, data in cfg.datasets.items()}
    train = {name: device_hours(c.train_flops * cfg.trainer.batch_size * cfg.trainer.max_steps, cfg.launch.train)
             for name, c in cost.items()}
    evaluation = {name: device_hours(_eval_flops(cfg, name, c), cfg.launch.eval) for name, c in cost.items()}
    done_cells = [c for c in cells if lifecycle.is_done(c.directory(cfg))]
    done_pairs = [p for p in pairs if lifecycle.is_done(p.directory(cfg))]
    return Plan([c for c in cells if c not in done_cells], done_cells, [p for p in pairs if p not in done_pairs],
                done_pairs, cost, train, evaluation, disk_bytes(cfg, cost, len(cells), len(pairs)))


def _eval_flops(cfg: ExperimentConfig, dataset: str, cost: NetworkCost) -> float:
    """Two models sampled, PSNR curves on train and test images, and the Jacobians if enabled."""
    e = cfg.eval
    sampling = 2 * e.num_samples * sampler_steps(cfg) * cost.forward_flops
    curves = 2 * 2 * e.psnr_images * len(e.psnr_sigmas) * cost.forward_flops
    pixels = cfg.datasets[dataset].image_size ** 2
    jacobians = (
        2 * e.jacobian.num_images * len(e.jacobian.sigmas) * pixels * cost.train_flops if e.jacobian.enabled else 0
    )
    return sampling + curves + jacobians


def disk_bytes(cfg: ExperimentConfig, cost: dict[str, NetworkCost], cells: int, pairs: int) -> dict[str, float]:
    """Shards + decoded cache (float32 at most) per dataset; last.ckpt (weights, Adam moments, EMA) and
    model.pt per cell; samples and per-seed arrays per pair."""
    data = sum(2 * 4.0 * (d.pool_size + d.test_size) * d.image_size ** 2 for d in cfg.datasets.values())
    copies = 3 + (1 if cfg.trainer.ema_decay > 0 else 0) + 1
    params = max(c.parameters for c in cost.values())
    pixels = max(d.image_size ** 2 for d in cfg.datasets.values())
    return {"data": data, "checkpoints": cells * copies * 4.0 * params,
            "samples": pairs * 2 * cfg.eval.num_samples * pixels * 4.0 * 1.5}


def format_plan(cfg: ExperimentConfig, plan: Plan) -> str:
    lines = [f"# gdm run {cfg.name}: plan (nothing submitted)"]
    lines.append(f"cells: {len(plan.cells_todo)} to train, {len(plan.cells_done)} done; "
                 f"pairs: {len(plan.pairs_todo)} to evaluate, {len(plan.pairs_done)} done")
    for name, c in plan.cost.items():
        lines.append(f"{name}: {cfg.model.name} {c.parameters / 1e6:.2f} M parameters, {c.train_flops / 1e9:.3f} GFLOP "
                     f"per training image (forward + backward), {c.forward_flops / 1e9:.3f} GFLOP per forward")
    lines += _jobs(cfg, plan)
    todo_train = sum(plan.train_hours_per_cell[c.dataset] for c in plan.cells_todo)
    todo_eval = sum(plan.eval_hours_per_pair[p.dataset] for p in plan.pairs_todo)
    lines.append(
        "compute (device-hours at launch.*.sustained_tflops): "
        + ", ".join(f"{name} {h:.3g} per cell" for name, h in plan.train_hours_per_cell.items())
        + f"; to do: training {todo_train:.3g}, evaluation {todo_eval:.3g}, total {todo_train + todo_eval:.3g}"
    )
    lines.append("disk: " + ", ".join(f"{k} {_size(v)}" for k, v in plan.disk_bytes.items())
                 + f", total {_size(sum(plan.disk_bytes.values()))}")
    lines += [f"  train {c.cell_id}" for c in plan.cells_todo] + [f"  eval  {p.pair_id}" for p in plan.pairs_todo]
    return "\n".join(lines)


def _jobs(cfg: ExperimentConfig, plan: Plan) -> list[str]:
    launch = cfg.launch
    lines = []
    for kind, count in (("train", len(plan.cells_todo)), ("eval", len(plan.pairs_todo))):
        r: ResourcesConfig = getattr(launch, kind)
        shape = "one array" if kind == "train" else "one job each, after its cells (afterok)"
        devices = f"{r.gpus_per_node} GPU" if r.gpus_per_node else f"{r.cpus_per_task} CPU"
        lines.append(f"{kind} jobs: {count} on executor {launch.executor} ({shape}); each {r.nodes} node × "
                     f"{r.tasks_per_node} task, {devices}/node, {r.mem_gb:g} GiB, {r.time_min} min, "
                     f"partition {r.partition or '(default)'}")
    return lines + [_train_layout(cfg)]


def _train_layout(cfg: ExperimentConfig) -> str:
    """The batch each training process (one per GPU on a GPU) draws per step, and the host memory it needs."""
    t = cfg.trainer
    ranks = t.devices * t.num_nodes
    device = "GPU" if trains_on_gpu(cfg) else "process"
    return (f"training layout: {t.num_nodes} node × {t.devices} {device}s; batch per {device} "
            f"{t.batch_size // ranks} (trainer.batch_size {t.batch_size} / {ranks}); host memory needed per node "
            f"about {train_memory_gb(cfg):.1f} GiB (launch.train.mem_gb {cfg.launch.train.mem_gb:g})")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
