"""Training throughput: a plain PyTorch loop vs the Lightning DenoiserModule on the same model and data.

    python benchmarks/bench_train.py [--quick] [--peak-flops cpu=FLOPS] [--peak-flops cuda=FLOPS]

Prints one JSON object: images/s of both loops for the paper's 80×80 3-block bias-free UNet and a
small 32×32 one, Lightning's overhead ratio (plain / Lightning throughput; target ≤ 1.05), and on a
CUDA device also bf16 + channels_last + torch.compile throughput at batch 512, in two rows: with the flags
fit_cell trains under (Lightning's deterministic="warn": deterministic cuDNN algorithms only, cudnn.benchmark
off; what users get) and, labelled, with them off (cudnn.benchmark on: the upper bound). Every row also gives
the training FLOPs per image (torch.utils.flop_counter), the FLOP/s achieved and the MFU against the
device's peak: dense bf16 from PEAK_FLOPS for a GPU, an fp32 estimate for the CPU (cores × clock ×
FMA width), or what --peak-flops says. A summary table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import lightning as L
import torch

from gdm.config import ModelConfig, TrainerConfig
from gdm.data.module import CellDataModule
from gdm.models import build_model, count_parameters
from gdm.precision import current_precision
from gdm.seeds import step_generator
from gdm.training.fit import deterministic_mode
from gdm.training.lit_module import DenoiserModule, make_adam
from gdm.training.loss import add_noise, denoising_loss
from gdm.training.sigma import draw_sigma
from launch.plan import network_cost

# Dense bf16 peak FLOP/s (vendor data sheets, without sparsity), by a part of the device's name; the
# longest matching part wins ("H100 PCIe" before "H100", "A100" before "A10").
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def gpu_peak_flops(name: str) -> float | None:
    """The table's peak for a device name, None if it is not in the table (give --peak-flops cuda=...)."""
    matches = [key for key in PEAK_FLOPS if key in name]
    return PEAK_FLOPS[max(matches, key=len)] if matches else None


def cpu_peak_flops(threads: int) -> float | None:
    """fp32 peak of the cores torch uses: threads × clock × FLOPs per cycle per core.

    Two FMA units per core, each 2 FLOPs × the SIMD width in fp32 lanes (AVX-512: 16, AVX2: 8), so
    64 or 32 FLOPs per cycle (4 without AVX2 and FMA: a floor, not a peak). The clock is /proc/cpuinfo's current
    "cpu MHz" (turbo may run faster). None where /proc/cpuinfo is missing (not Linux).
    """
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None
    flags_line = re.search(r"^flags\s*:(.*)$", info, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.MULTILINE)
    if mhz is None:
        return None
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= flags else 1
    return threads * float(mhz.group(1)) * 1e6 * 2 * 2 * lanes


def parse_peaks(items: list[str]) -> dict[str, float]:
    """--peak-flops DEVICE=FLOPS (device cpu or cuda), as {device: FLOP/s}."""
    peaks = {}
    for item in items:
        device, _, value = item.partition("=")
        try:
            peaks[device] = float(value)
        except ValueError:
            peaks[device] = -1.0
        if device not in ("cpu", "cuda") or peaks[device] <= 0:
            raise SystemExit(f"--peak-flops {item!r}: give DEVICE=FLOPS with DEVICE cpu or cuda and FLOPS > 0, "
                             "e.g. --peak-flops cuda=989e12")
    return peaks


def flops_report(flops_per_image: int, images_per_s: float, peak: float | None) -> dict:
    """Achieved FLOP/s and MFU of a throughput, for a model of `flops_per_image` training FLOPs."""
    achieved = flops_per_image * images_per_s
    return {"tflops_per_s": round(achieved / 1e12, 4), "mfu": round(achieved / peak, 4) if peak else None}


def images_for(size: int, count: int = 64) -> torch.Tensor:
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(0))


def plain_step(net, optimizer, images, cfg: TrainerConfig, step: int) -> torch.Tensor:
    """The DenoiserModule's step without Lightning: same draws, same loss, Adam."""
    generator = step_generator(0, step, 0, images.device)
    index = torch.randint(len(images), (cfg.batch_size,), generator=generator, device=images.device)
    clean = images[index]
    sigma = draw_sigma(cfg.sigma_law, cfg.batch_size, cfg.sigma_min, cfg.sigma_max, generator)
    noisy, noise = add_noise(clean, sigma, generator)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16-mixed"):
        loss = denoising_loss(net, noisy, noise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_throughput(net, images, cfg: TrainerConfig, warmup: int, steps: int) -> float:
    optimizer = make_adam(net.parameters(), cfg.lr, images.device)  # the DenoiserModule's optimizer
    for step in range(warmup):
        plain_step(net, optimizer, images, cfg, step).item()
    synchronize(images.device)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):  # no per-step host sync, as in the Lightning step
        plain_step(net, optimizer, images, cfg, step)
    synchronize(images.device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


class StepTimer(L.Callback):
    """Wall time of the steps after `warmup` (Trainer setup and teardown excluded)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.stop = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        synchronize(module.device)
        self.stop = time.perf_counter()


def lightning_throughput(net, images, cfg: TrainerConfig, warmup: int, steps: int, accelerator: str) -> float:
    cfg = replace(cfg, max_steps=warmup + steps, log_every=10**9)
    module = DenoiserModule(net, cfg, seed=0, psnr_sigmas=[], images=images)
    data = CellDataModule(None, "A", len(images), batch_size=cfg.batch_size, images=images)
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=cfg.precision, max_steps=cfg.max_steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    return steps * cfg.batch_size / (timer.stop - timer.start)


def compare(name: str, model: ModelConfig, size: int, batch: int, warmup: int, steps: int, rounds: int = 3,
            peak: float | None = None) -> dict:
    """Plain and Lightning throughput of one model on the CPU, from the same initial weights.

    The two loops alternate for `rounds` rounds and the medians are compared, so that a burst of load
    on a shared machine does not land on one side only.
    """
    cfg = TrainerConfig(batch_size=batch, accelerator="cpu")
    images = images_for(size)
    torch.manual_seed(0)
    net = build_model(model, size)
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    plain, lightning = [], []
    for _ in range(rounds):
        net.load_state_dict(initial)
        plain.append(plain_throughput(net, images, cfg, warmup, steps))
        net.load_state_dict(initial)
        lightning.append(lightning_throughput(net, images, cfg, warmup, steps, "cpu"))
    p, lt = statistics.median(plain), statistics.median(lightning)
    flops = int(network_cost(model, size).train_flops)  # the count `gdm run --dry-run` plans with
    plain_flops, lightning_flops = flops_report(flops, p, peak), flops_report(flops, lt, peak)
    return {"model": name, "image_size": size, "batch": batch, "params": count_parameters(net), "rounds": rounds,
            "plain_images_per_s": round(p, 2), "lightning_images_per_s": round(lt, 2),
            "plain_rounds": [round(v, 2) for v in plain], "lightning_rounds": [round(v, 2) for v in lightning],
            "lightning_overhead_ratio": round(p / lt, 3), "target_ratio": 1.05,
            "flops_per_image_train": flops, "peak_tflops_per_s": round(peak / 1e12, 4) if peak else None,
            "plain_tflops_per_s": plain_flops["tflops_per_s"], "plain_mfu": plain_flops["mfu"],
            "lightning_tflops_per_s": lightning_flops["tflops_per_s"], "lightning_mfu": lightning_flops["mfu"]}


@contextmanager
def torch_flags(deterministic: bool | str, benchmark: bool) -> Iterator[dict]:
    """The process-wide flags Lightning's Trainer(deterministic=...) sets (its accelerator connector's
    _set_torch_flags: deterministic algorithms, warn-only for "warn"; cudnn.benchmark; cuBLAS's deterministic
    workspace), set for one row and restored after it; yields them as the row records them."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=deterministic == "warn")
    torch.backends.cudnn.benchmark = benchmark
    if deterministic:  # read when cuBLAS makes its handle: the first row (fit_cell's flags) runs first
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        yield {"deterministic": deterministic, "cudnn_benchmark": benchmark,
               "conv_fp32_precision": current_precision().conv, "matmul_fp32_precision": current_precision().matmul}
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]


# The GPU rows: fit_cell's flags (what a user's training gets), then every speed flag on (labelled as such)
CUDA_ROWS = (("as fit_cell (deterministic='warn', cudnn.benchmark off)", deterministic_mode(on_cpu=False), False),
             ("flags off (nondeterministic, cudnn.benchmark): not what fit_cell runs", False, True))


def cuda_throughput(size: int, blocks: int, batch: int, warmup: int, steps: int, label: str,
                    deterministic: bool | str, benchmark: bool, peak: float | None = None) -> dict:
    """bf16-mixed + channels_last + torch.compile at batch 512 on the GPU under the given Lightning flags, with
    MFU (peak: the table's)."""
    device = torch.device("cuda")
    with torch_flags(deterministic, benchmark) as flags:
        torch.manual_seed(0)
        model = ModelConfig("bf_unet", 64, blocks)
        net = build_model(model, size).to(device, memory_format=torch.channels_last)
        net.compile()
        cfg = TrainerConfig(batch_size=batch, precision="bf16-mixed")
        rate = plain_throughput(net, images_for(size, 1024).to(device), cfg, warmup, steps)
    name = torch.cuda.get_device_name()
    peak = peak or gpu_peak_flops(name)
    flops = int(network_cost(model, size).train_flops)
    return {"label": label, "flags": flags, "device": name, "image_size": size, "blocks": blocks, "batch": batch,
            "images_per_s": round(rate, 1), "flops_per_image_train": flops,
            "peak_tflops_per_s": round(peak / 1e12, 1) if peak else None, **flops_report(flops, rate, peak)}


def print_table(results: dict) -> None:
    """A short human summary on stderr (stdout stays one JSON object)."""
    rows = [(f"cpu {r['model']} b{r['batch']}", r["flops_per_image_train"], r["lightning_images_per_s"],
             r["lightning_tflops_per_s"], r["lightning_mfu"]) for r in results["cpu"]]
    rows += [(f"{c['device']} b{c['batch']} {c['label'].split(' (')[0]}", c["flops_per_image_train"],
              c["images_per_s"], c["tflops_per_s"], c["mfu"]) for c in results.get("cuda", [])]
    print(f"{'run':<52} {'GFLOP/image':>11} {'images/s':>10} {'TFLOP/s':>9} {'MFU':>7}", file=sys.stderr)
    for run, flops, rate, tflops, mfu in rows:
        mfu_text = f"{mfu:.2%}" if mfu is not None else "n/a"
        print(f"{run:<52} {flops / 1e9:>11.3f} {rate:>10.1f} {tflops:>9.4f} {mfu_text:>7}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few steps (< 3 min on a CPU)")
    parser.add_argument("--peak-flops", action="append", default=[], metavar="DEVICE=FLOPS",
                        help="peak FLOP/s to compute MFU against, for cpu or cuda (e.g. cuda=989e12); "
                             "default: the table of GPUs (dense bf16), an fp32 estimate for the CPU")
    args = parser.parse_args()
    peaks = parse_peaks(args.peak_flops)
    warmup, steps = (2, 6) if args.quick else (3, 12)
    threads = torch.get_num_threads()
    cpu_peak = peaks.get("cpu") or cpu_peak_flops(threads)
    results = {"torch": torch.__version__, "lightning": L.__version__, "threads": threads,
               "cpu_model": cpu_model(), "cpu_peak_source": "--peak-flops" if "cpu" in peaks else "estimate",
               "cpu": [compare("bf_unet 80px 3 blocks", ModelConfig("bf_unet", 64, 3), 80, 4 if args.quick else 16,
                               warmup, steps, peak=cpu_peak),
                       compare("bf_unet 32px 2 blocks", ModelConfig("bf_unet", 16, 2), 32, 32, warmup, 3 * steps,
                               peak=cpu_peak)]}
    if torch.cuda.is_available():
        results["cuda"] = [cuda_throughput(80, 3, 512, 5, 10 if args.quick else 30, label, deterministic, benchmark,
                                           peak=peaks.get("cuda")) for label, deterministic, benchmark in CUDA_ROWS]
    print_table(results)
    print(json.dumps(results, indent=2))


def cpu_model() -> str | None:
    """/proc/cpuinfo's model name (None off Linux): which CPU the figures were measured on."""
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", open("/proc/cpuinfo").read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1).strip() if match else None


if __name__ == "__main__":
    main()
