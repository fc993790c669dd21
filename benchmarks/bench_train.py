"""Training throughput: a plain PyTorch loop vs the Lightning DenoiserModule on the same model and data.

    python benchmarks/bench_train.py [--quick]

Prints one JSON object: images/s of both loops for the paper's 80×80 3-block bias-free UNet and a
small 32×32 one, Lightning's overhead ratio (plain / Lightning throughput; target ≤ 1.05), and on a
CUDA device also bf16 + channels_last + torch.compile throughput at batch 512 with its MFU (FLOPs
counted by torch.utils.flop_counter, against the device's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import lightning as L
import torch

from gdm.config import ModelConfig, TrainerConfig
from gdm.data.module import CellDataModule
from gdm.models import build_model, count_parameters
from gdm.training.lit_module import DenoiserModule
from gdm.training.loss import add_noise, denoising_loss
from gdm.training.seeds import step_generator
from gdm.training.sigma import draw_sigma

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense


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
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(warmup):
        plain_step(net, optimizer, images, cfg, step).item()
    synchronize(images.device)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        loss = plain_step(net, optimizer, images, cfg, step)
        loss.item()  # the Lightning step checks the loss for NaN every step: the same host sync
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


def compare(name: str, model: ModelConfig, size: int, batch: int, warmup: int, steps: int, rounds: int = 3) -> dict:
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
    return {"model": name, "image_size": size, "batch": batch, "params": count_parameters(net), "rounds": rounds,
            "plain_images_per_s": round(p, 2), "lightning_images_per_s": round(lt, 2),
            "plain_rounds": [round(v, 2) for v in plain], "lightning_rounds": [round(v, 2) for v in lightning],
            "lightning_overhead_ratio": round(p / lt, 3), "target_ratio": 1.05}


def train_flops(net, size: int, batch: int, device: torch.device) -> int:
    """FLOPs of one forward + backward at this batch (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    y = torch.rand(batch, 1, size, size, device=device)
    with FlopCounterMode(display=False) as counter, torch.autocast("cuda", dtype=torch.bfloat16):
        net(y).float().square().mean().backward()
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def cuda_throughput(size: int, blocks: int, batch: int, warmup: int, steps: int) -> dict:
    """bf16-mixed + channels_last + torch.compile at batch 512 on the GPU, with MFU."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    net = build_model(ModelConfig("bf_unet", 64, blocks), size).to(device, memory_format=torch.channels_last)
    flops = train_flops(net, size, batch, device)
    net.compile()
    cfg = TrainerConfig(batch_size=batch, precision="bf16-mixed")
    rate = plain_throughput(net, images_for(size, 1024).to(device), cfg, warmup, steps)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    achieved = flops / batch * rate / 1e12
    return {"device": name, "image_size": size, "blocks": blocks, "batch": batch, "images_per_s": round(rate, 1),
            "tflops_per_s": round(achieved, 1), "mfu": round(achieved / peak, 3) if peak else None,
            "flops_per_image_train": flops // batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few steps (< 3 min on a CPU)")
    args = parser.parse_args()
    warmup, steps = (2, 6) if args.quick else (3, 12)
    results = {"torch": torch.__version__, "lightning": L.__version__, "threads": torch.get_num_threads(),
               "cpu": [compare("bf_unet 80px 3 blocks", ModelConfig("bf_unet", 64, 3), 80, 4 if args.quick else 16,
                               warmup, steps),
                       compare("bf_unet 32px 2 blocks", ModelConfig("bf_unet", 16, 2), 32, 32, warmup, 3 * steps)]}
    if torch.cuda.is_available():
        results["cuda"] = cuda_throughput(80, 3, 512, 5, 10 if args.quick else 30)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
