"""`gdm run --dry-run`: what a run would do and cost, before anything is submitted.

The plan lists the cells and pairs to do and those already done, the jobs and arrays that would go
out with their resources, the compute per cell and per pair in device-hours, the wall time and the disk.
Compute is counted, not guessed: FLOPs of the network per image (torch.utils.flop_counter) times the
images of every piece of work (training steps, sampler steps, PSNR curves, Jacobian rows), and the
matrix work of evaluation (nearest neighbours, the optimal and Gaussian references, eigh) by its
closed-form count. Each piece runs at the rate its precision sustains on the job's device (RATES: one
table of stated figures, each with where it comes from), plus a fixed start-up per job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gdm import lifecycle
from gdm.analysis.blind_gaussian import node_count
from gdm.cells import Cell, EvalPair, data_dir, expand_cells, expand_pairs
from gdm.config import ExperimentConfig, ModelConfig, ResourcesConfig, largest_n, train_memory_gb, trains_on_gpu
from gdm.data.manifest import MANIFEST
from gdm.models import build_model

# --- what a device sustains ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceRate:
    """Sustained FLOP/s of one device by kind of work, and the seconds a job spends before its work starts."""

    name: str
    flops: dict[str, float]  # "bf16", "tf32", "fp32", "fp64": FLOP/s of network and matrix work; "eigh": fp64 eigh
    startup_s: float  # interpreter, imports, data load, Trainer/CUDA set-up, checkpoint and model writes, s


# GPU work runs at this fraction of the data-sheet peak (dense, no sparsity). Assumed, not yet measured: it is
# what benchmarks/bench_train.py's target asks of the 80×80 BF-UNet on an H100 (10 000 images/s × 20.09 GFLOP per
# training image = 201 TFLOP/s = 20 % of 989), at 512 images per GPU: a smaller batch per GPU (trainer.batch_size
# / ranks, printed in the training layout) runs below it. benchmarks/device_check.sh measures it; put it here.
GPU_MFU = 0.2
# eigh (cuSOLVER syevd, fp64) is latency-bound at n = 6 400: assumed 5 % of the fp64 vector peak (1.4 s at 80×80
# on an H100; the README's target is ≤ 3 s for Jacobian + eigh). device_check.sh measures it.
GPU_EIGH_EFFICIENCY = 0.05
# A GPU job's start-up: CUDA context, imports, the split onto the GPU (stated, not measured); torch.compile adds
# GPU_COMPILE_S to a training job.
GPU_STARTUP_S, GPU_COMPILE_S = 60.0, 60.0

# One core of the 2-core AMD EPYC VM this project is developed on (every local job runs 1 thread), measured by
# `python benchmarks/bench_plan.py --rates-only` (2026-12-06, idle; benchmarks/results/bench_plan.json):
# fp32: training FLOP/s (forward + backward + Adam, FLOPs as network_cost counts them) of the 2-block BF-UNet at
#   1 thread by its base width: narrow convolutions vectorise worse, so the rate grows with `model.channels`
#   (log-interpolated between the widths measured, held at the ends). The same VM ran 1.75× faster on
#   2026-11-25 (bench_train's 2-thread rate of the 16-channel net: 0.0563 TFLOP/s then, 0.032 now): a plan made
#   with these rates on a faster day overestimates. bf16-mixed on a CPU without AMX is not faster than fp32: the
#   same figure; fp64 matrix work: half of it (half the lanes per FMA).
# eigh: 1 thread, fp64, n = 768, 9 n³ FLOP.
# start-up: a local job's fixed time beside its counted work, from the quickstart's job timeline (status.json's
#   start − submission.json's submit: 5–8 s for a fresh interpreter importing torch, Lightning and gdm; DONE's
#   finish − start less the counted work: 7–8 s for the data load, Trainer, checkpoints, model.pt and offline W&B).
CPU_CORE_FP32_BY_CHANNELS = ((16, 0.0194e12), (32, 0.0250e12), (64, 0.0292e12))
CPU_CORE_EIGH = 0.0195e12
CPU_STARTUP_S = 15.0


def cpu_core_fp32(channels: int) -> float:
    """fp32 FLOP/s of one core for a network of base width `channels` (CPU_CORE_FP32_BY_CHANNELS)."""
    widths, rates = zip(*CPU_CORE_FP32_BY_CHANNELS, strict=True)
    return float(math.exp(np.interp(math.log(channels), np.log(widths), np.log(rates))))


def cpu_rate(model: ModelConfig) -> DeviceRate:
    """One CPU core's rates for `model`: network work at its width's fp32 rate, eigh at CPU_CORE_EIGH."""
    fp32 = cpu_core_fp32(model.channels)
    return DeviceRate("CPU core", {"bf16": fp32, "tf32": fp32, "fp32": fp32, "fp64": fp32 / 2, "eigh": CPU_CORE_EIGH},
                      CPU_STARTUP_S)


# Data-sheet peaks, FLOP/s, dense (no sparsity): H100 SXM 989 T bf16, 495 T TF32, 67 T fp32 without tensor cores,
# 34 T fp64 vector, 67 T fp64 tensor; the H200 has the H100's compute; A100 SXM 312 T bf16, 156 T TF32, 19.5 T
# fp32, 9.7 T fp64 vector, 19.5 T fp64 tensor. Matrix products in fp64 run on the tensor cores; eigh does not.
PEAKS: dict[str, dict[str, float]] = {
    "h100": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12, "fp64": 67e12, "fp64_vector": 34e12},
    "h200": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12, "fp64": 67e12, "fp64_vector": 34e12},
    "a100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12, "fp64": 19.5e12, "fp64_vector": 9.7e12},
}


def _gpu(kind: str) -> DeviceRate:
    peak = PEAKS[kind]
    sustained = {precision: GPU_MFU * peak[precision] for precision in ("bf16", "tf32", "fp32", "fp64")}
    return DeviceRate(kind.upper(), sustained | {"eigh": GPU_EIGH_EFFICIENCY * peak["fp64_vector"]}, GPU_STARTUP_S)


RATES: dict[str, DeviceRate] = {
    "cpu": cpu_rate(ModelConfig(channels=32)),  # host work (eigh) and a mid-width network; jobs use cpu_rate(model)
    **{kind: _gpu(kind) for kind in PEAKS},
}
DEFAULT_GPU = "h100"  # priced when a GPU job's partition and constraint name none of RATES' GPUs
# trainer.precision → the rate its steps run at. 32-true trains in TF32: cuDNN takes fp32 convolutions in TF32
# unless told not to (torch's default). Evaluation is priced in true fp32 ("fp32": the GPU's non-tensor rate):
# TF32 is turned off for the numbers it reports (the evaluation-precision change made beside this one).
PRECISION = {"32-true": "tf32", "bf16-mixed": "bf16"}
# Data preparation, images/s: benchmarks/results/bench_data.json (synthetic 80×80 disks: generate, shard, manifest)
PREPARE_IMAGES_PER_S = 1826.0


@dataclass(frozen=True)
class Device:
    """Where a job runs: a rate, how many of them (GPUs, or CPU cores) the job uses at once, and the CPU cores
    beside them that run its host work (launch.<kind>.cpus_per_task)."""

    rate: DeviceRate
    count: int
    host_cores: int

    @property
    def label(self) -> str:
        return f"{self.count} {self.rate.name}{'s' if self.count > 1 else ''}"


def gpu_kind(text: str) -> str:
    """The GPU of PEAKS that `text` names (a partition, a constraint, a device name), else DEFAULT_GPU."""
    return next((kind for kind in PEAKS if kind in text.lower()), DEFAULT_GPU)


def resources_gpu(resources: ResourcesConfig) -> str:
    """The GPU a job's partition or constraint names (e.g. launch.train.constraint=a100), else DEFAULT_GPU."""
    return gpu_kind(f"{resources.partition or ''} {resources.constraint or ''}")


def train_device(cfg: ExperimentConfig) -> Device:
    """One GPU per rank on a GPU; on a CPU the trainer.threads cores of its one process."""
    t = cfg.trainer
    cores = cfg.launch.train.cpus_per_task
    if trains_on_gpu(cfg):
        return Device(RATES[resources_gpu(cfg.launch.train)], t.devices * t.num_nodes, cores)
    return Device(cpu_rate(cfg.model), t.threads * t.devices * t.num_nodes, cores)


def eval_device(cfg: ExperimentConfig) -> Device:
    """Evaluation takes the GPU when its job has one (gdm.evaluate), else launch.eval.cpus_per_task cores."""
    r = cfg.launch.eval
    if r.gpus_per_node > 0:
        return Device(RATES[resources_gpu(r)], 1, r.cpus_per_task)
    return Device(cpu_rate(cfg.model), r.cpus_per_task, r.cpus_per_task)


# --- what a run computes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCost:
    """FLOPs of one image through the network, and its parameter count."""

    forward_flops: float
    train_flops: float  # forward + backward (input and weight gradients)
    parameters: int
    vjp_flops: float = 0.0  # one vector–Jacobian product w.r.t. the input, weights constant (a Jacobian row)


def network_cost(model: ModelConfig, image_size: int) -> NetworkCost:
    """Counted on one image on the CPU (FLOPs do not depend on the device)."""
    net = build_model(model, image_size)
    x = torch.rand(1, 1, image_size, image_size)
    with FlopCounterMode(display=False) as forward:
        net(x)
    with FlopCounterMode(display=False) as train:
        net(x).square().mean().backward()
    net.requires_grad_(False)
    out = net(x.requires_grad_())
    with FlopCounterMode(display=False) as vjp:
        out.backward(torch.ones_like(out))
    return NetworkCost(float(forward.get_total_flops()), float(train.get_total_flops()),
                       sum(p.numel() for p in net.parameters()), float(vjp.get_total_flops()))


def sampler_steps(cfg: ExperimentConfig) -> int:
    """Iterations until σ_t < sigma_end: the effective noise shrinks by (1 − β·h) a step (Algorithm 1)."""
    s = cfg.sampler
    shrink = 1.0 - s.beta * s.h0
    steps = math.log(s.sigma_end / s.sigma_0) / math.log(shrink) if 0 < shrink < 1 else s.max_steps
    return int(min(s.max_steps, math.ceil(steps)))


def sampler_forwards(cfg: ExperimentConfig) -> int:
    """Network passes per sample: one per update, the pass that finds σ_t below sigma_end, the final denoise."""
    return sampler_steps(cfg) + 1 + int(cfg.sampler.final_denoise)


@dataclass(frozen=True)
class Work:
    """One counted piece of a job's work: its FLOPs and the rate (RATES key) they run at."""

    what: str
    flops: float
    precision: str  # "bf16", "tf32", "fp32", "fp64" or "eigh"
    host: bool = False  # runs on the job's CPU cores even beside a GPU (the Jacobians' eigh: gdm.evaluate moves J off)


def eigh_flops(n: int) -> float:
    """torch.linalg.eigh of an n×n symmetric matrix with its eigenvectors: ≈ 9 n³ FLOP (Golub & Van Loan)."""
    return 9.0 * n**3


def curve_images(cfg: ExperimentConfig, n: int) -> int:
    """Images of one PSNR curve pair: the first psnr_images of the n training images, and as many test images."""
    return min(cfg.eval.psnr_images, n) + cfg.eval.psnr_images


def train_work(cfg: ExperimentConfig, cost: NetworkCost, n: int) -> list[Work]:
    """A cell: every step's batch forward and backward at the trainer's precision; validation PSNR in fp32
    every trainer.val_every steps and at the end."""
    t = cfg.trainer
    validations = (t.max_steps // t.val_every if t.val_every else 0) + 1
    val = validations * curve_images(cfg, n) * len(cfg.eval.psnr_sigmas) * cost.forward_flops
    return [Work("training steps", cost.train_flops * t.batch_size * t.max_steps, PRECISION[t.precision]),
            Work("validation", val, "fp32")]


def eval_work(cfg: ExperimentConfig, dataset: str, n: int, cost: NetworkCost) -> list[Work]:
    """A pair (gdm.evaluate.eval_pair): both models sampled; the models' PSNR curves; nearest training images;
    the optimal and Gaussian references; Jacobians and their eigendecompositions. Network work in fp32."""
    e, d = cfg.eval, cfg.datasets[dataset]
    pixels, curves = d.image_size**2, 2 * curve_images(cfg, n) * len(e.psnr_sigmas)  # 2 splits
    work = [Work("sampling", 2 * e.num_samples * sampler_forwards(cfg) * cost.forward_flops, "fp32"),
            Work("PSNR curves", curves * cost.forward_flops, "fp32"),
            Work("nearest neighbours", nearest_flops(cfg, dataset, n), "fp32")]
    if e.optimal_reference:  # logits 2nD and the weighted mean 2nD per noisy image (gdm.analysis.optimal), fp64
        work.append(Work("optimal denoiser", curves * 4.0 * n * pixels, "fp64"))
    if n >= 2:  # the L2 ratio's search: every valid sample against its own training set (gdm.analysis.memorization)
        work.append(Work("L2 ratio", 2.0 * 2 * e.num_samples * n * pixels, "fp32"))
    if e.gaussian_reference:  # XᵀX over the pool, its eigh, then project and reconstruct (2 × 2D²) per image for the
        # Wiener filter and again for the blind reference, whose posterior over σ adds 3 FLOP per node and pixel
        nodes = node_count(cfg.trainer.sigma_min, cfg.trainer.sigma_max, pixels)
        blind = curves * (4.0 * pixels**2 + 3.0 * nodes * pixels)
        work += [Work("Gaussian reference", 2.0 * d.pool_size * pixels**2 + curves * 4.0 * pixels**2, "fp64"),
                 Work("blind Gaussian reference", blind, "fp64"),
                 Work("Gaussian eigh", eigh_flops(pixels), "eigh")]
    if e.jacobian.enabled:
        work += jacobian_work(cfg, dataset, cost)
    return work


def nearest_flops(cfg: ExperimentConfig, dataset: str, n: int) -> float:
    """Similarity matrices (2 FLOP per pixel per pair of images) for each measure reported: every valid
    sample against its own and the other training set, the held-out images against each (novelty), and
    A's samples against B's (cross-seed)."""
    e, d = cfg.eval, cfg.datasets[dataset]
    measures = len({"cosine", "correlation", e.similarity})
    pairs = 2 * (2 * e.num_samples * n + d.test_size * n) + e.num_samples**2
    return measures * 2.0 * pairs * d.image_size**2


def jacobian_work(cfg: ExperimentConfig, dataset: str, cost: NetworkCost) -> list[Work]:
    """Per analysed image, σ and split: D rows of vector–Jacobian products, the eigh of J's symmetric part and,
    with the optimal reference, the eigh of J* = Cov[x|y]/σ² (gdm.analysis.jacobian, gdm.analysis.optimal). Both
    eigh run on the host: gdm.evaluate takes J and the noisy image y to the CPU first."""
    jc, d = cfg.eval.jacobian, cfg.datasets[dataset]
    pixels = d.image_size**2
    points = 2 * min(jc.num_images, d.test_size) * len(jc.sigmas)
    eighs = points * (2 if cfg.eval.optimal_reference else 1)
    return [Work("Jacobian rows", points * (pixels * cost.vjp_flops + cost.forward_flops), "fp32"),
            Work("Jacobian eigh", eighs * eigh_flops(pixels), "eigh", host=True)]


def piece_seconds(work: Work, device: Device) -> float:
    """Wall seconds of one piece: device work shared by the job's devices, host work by its CPU cores (each at
    its precision's rate; threads assumed to scale linearly)."""
    if work.host:
        return work.flops / (RATES["cpu"].flops[work.precision] * device.host_cores)
    return work.flops / (device.rate.flops[work.precision] * device.count)


def train_startup_s(cfg: ExperimentConfig, device: Device) -> float:
    """A training job's start-up: the device's, and torch.compile's on a GPU (trainer.compile)."""
    return device.rate.startup_s + (GPU_COMPILE_S if cfg.trainer.compile and trains_on_gpu(cfg) else 0)


def work_hours(work: list[Work], device: Device, startup_s: float) -> dict[str, float]:
    """Device-hours of each piece of a job's work and of its start-up: its wall seconds × the job's devices (all of
    them wait through the start-up and the host work)."""
    hours = {w.what: piece_seconds(w, device) * device.count / 3600 for w in work}
    return hours | {"start-up": startup_s * device.count / 3600}


@dataclass(frozen=True)
class Plan:
    cells_todo: list[Cell]
    cells_done: list[Cell]
    pairs_todo: list[EvalPair]
    pairs_done: list[EvalPair]
    cost: dict[str, NetworkCost]  # per dataset
    train_device: Device
    eval_device: Device
    train_breakdown: dict[str, dict[str, float]]  # dataset → piece of work → device-hours of one cell (largest n)
    eval_breakdown: dict[str, dict[str, float]]  # pair id → piece of work → device-hours
    wall_hours: float  # what is to do, end to end: data preparation, then cells and pairs launch.max_parallel at once
    disk_bytes: dict[str, float]  # data, checkpoints, samples

    @property
    def train_hours_per_cell(self) -> dict[str, float]:  # device-hours per dataset
        return {name: sum(hours.values()) for name, hours in self.train_breakdown.items()}

    @property
    def eval_hours_per_pair(self) -> dict[str, float]:  # device-hours per pair id
        return {pair: sum(hours.values()) for pair, hours in self.eval_breakdown.items()}


def make_plan(cfg: ExperimentConfig) -> Plan:
    cells, pairs = expand_cells(cfg), expand_pairs(cfg)
    cost = {name: network_cost(cfg.model, data.image_size) for name, data in cfg.datasets.items()}
    train_at, eval_at = train_device(cfg), eval_device(cfg)
    train = {name: work_hours(train_work(cfg, c, largest_n(cfg)), train_at, train_startup_s(cfg, train_at))
             for name, c in cost.items()}
    evaluation = {p.pair_id: work_hours(eval_work(cfg, p.dataset, p.n, cost[p.dataset]), eval_at,
                                        eval_at.rate.startup_s) for p in pairs}
    done_cells = [c for c in cells if lifecycle.is_done(c.directory(cfg))]
    done_pairs = [p for p in pairs if lifecycle.is_done(p.directory(cfg))]
    todo_cells, todo_pairs = [c for c in cells if c not in done_cells], [p for p in pairs if p not in done_pairs]
    cell_s = [_job_wall_s(train[c.dataset], train_at) for c in todo_cells]
    pair_s = [_job_wall_s(evaluation[p.pair_id], eval_at) for p in todo_pairs]
    wall = overhead_s(cfg, todo_cells) + _spread(cell_s, cfg) + _spread(pair_s, cfg)
    return Plan(todo_cells, done_cells, todo_pairs, done_pairs, cost, train_at, eval_at, train, evaluation,
                wall / 3600, disk_bytes(cfg, cost, len(cells), len(pairs)))


def _job_wall_s(hours: dict[str, float], device: Device) -> float:
    """A job's wall time from its device-hours: the work is shared by its devices, the start-up is not."""
    return 3600 * (sum(hours.values()) / device.count)


def _spread(seconds: list[float], cfg: ExperimentConfig) -> float:
    """Wall time of jobs run launch.max_parallel at a time (one at a time in process)."""
    parallel = 1 if cfg.launch.executor == "inprocess" else max(1, min(cfg.launch.max_parallel, len(seconds)))
    return sum(seconds) / parallel


def overhead_s(cfg: ExperimentConfig, todo_cells: list[Cell]) -> float:
    """What the driver does itself, in series with the jobs: its start-up, the data it prepares (when a cell
    is to do and the dataset has no manifest yet) and the report (one more start-up's worth)."""
    datasets = {c.dataset for c in todo_cells if not (data_dir(cfg, c.dataset) / MANIFEST).exists()}
    images = sum(cfg.datasets[name].pool_size + cfg.datasets[name].test_size for name in datasets)
    return 2 * RATES["cpu"].startup_s + images / PREPARE_IMAGES_PER_S


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
    lines += _compute(cfg, plan)
    lines.append("disk: " + ", ".join(f"{k} {_size(v)}" for k, v in plan.disk_bytes.items())
                 + f", total {_size(sum(plan.disk_bytes.values()))}")
    lines += [f"  train {c.cell_id}" for c in plan.cells_todo] + [f"  eval  {p.pair_id}" for p in plan.pairs_todo]
    return "\n".join(lines)


def _compute(cfg: ExperimentConfig, plan: Plan) -> list[str]:
    """Device-hours per cell and per pair with what they are made of, the totals to do, and the wall time."""
    t, e = plan.train_device, plan.eval_device
    lines = [f"devices (launch/plan.py RATES): training on {t.label} per cell, {cfg.trainer.precision} at "
             f"{t.rate.flops[PRECISION[cfg.trainer.precision]] / 1e12:.3g} TFLOP/s each; evaluation on {e.label}, "
             f"fp32 at {e.rate.flops['fp32'] / 1e12:.3g} TFLOP/s each, start-up {t.rate.startup_s:g} s a job"]
    for name, hours in plan.train_breakdown.items():
        lines.append(f"compute per cell ({name}): {sum(hours.values()):.3g} device-hours ({_parts(hours)})")
    for pair, hours in plan.eval_breakdown.items():
        lines.append(f"compute per pair ({pair}): {sum(hours.values()):.3g} device-hours ({_parts(hours)})")
    todo_train = sum(plan.train_hours_per_cell[c.dataset] for c in plan.cells_todo)
    todo_eval = sum(plan.eval_hours_per_pair[p.pair_id] for p in plan.pairs_todo)
    parallel = 1 if cfg.launch.executor == "inprocess" else cfg.launch.max_parallel
    lines.append(f"compute to do: training {todo_train:.3g}, evaluation {todo_eval:.3g}, total "
                 f"{todo_train + todo_eval:.3g} device-hours; wall time about {_duration(plan.wall_hours)} "
                 f"({parallel} jobs at once, data preparation included, queueing not)")
    return lines


def _parts(hours: dict[str, float]) -> str:
    """The pieces of at least 1 % of the total, the rest summed as "other"."""
    total = sum(hours.values())
    shown = {what: h for what, h in hours.items() if h >= 0.01 * total}
    rest = total - sum(shown.values())
    return ", ".join([f"{what} {h:.2g}" for what, h in shown.items()] + ([f"other {rest:.2g}"] if rest > 0 else []))


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.3g} min"
    return f"{hours:.3g} h" if hours < 48 else f"{hours / 24:.3g} days"


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
    plural = "GPUs" if device == "GPU" else "processes"
    return (f"training layout: {t.num_nodes} node × {t.devices} {plural}; batch per {device} "
            f"{t.batch_size // ranks} (trainer.batch_size {t.batch_size} / {ranks}); host memory needed per node "
            f"about {train_memory_gb(cfg):.1f} GiB (launch.train.mem_gb {cfg.launch.train.mem_gb:g})")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
