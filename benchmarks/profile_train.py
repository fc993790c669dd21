"""Where Lightning's time goes: cProfile of the same 80×80 training steps in the plain loop and in the
Lightning DenoiserModule, grouped by package (only the timed steps, after warm-up).

    python benchmarks/profile_train.py [--steps 8] [--batch 16]

Prints one JSON object: per loop, seconds per step in total and by package (torch's C++ kernels show
up as the torch/builtins entries), and Lightning's top functions by their own time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
from dataclasses import replace

import lightning as L
import torch
from bench_train import images_for, plain_step

from gdm.config import ModelConfig, TrainerConfig
from gdm.data.module import CellDataModule
from gdm.models import build_model
from gdm.training.lit_module import DenoiserModule


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own time (tottime) of every function, summed by the package its file belongs to."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = next((k for k in ("lightning", "torchmetrics", "torch", "gdm") if f"/{k}/" in filename), None)
        key = key or ("builtins (C calls, incl. torch ops)" if filename == "~" else "other python")
        totals[key] = totals.get(key, 0.0) + tottime
    return totals


def top(stats: pstats.Stats, package: str, count: int = 8) -> list[list]:
    rows = [(tottime, f"{filename.split('/' + package + '/')[-1]}:{name}")
            for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items()  # type: ignore[attr-defined]
            if f"/{package}/" in filename]
    return [[name, round(t, 4)] for t, name in sorted(rows, reverse=True)[:count]]


def profile_plain(net, images, cfg: TrainerConfig, warmup: int, steps: int) -> pstats.Stats:
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    for step in range(warmup):
        plain_step(net, optimizer, images, cfg, step).item()
    profiler = cProfile.Profile()
    profiler.enable()
    for step in range(warmup, warmup + steps):
        plain_step(net, optimizer, images, cfg, step).item()
    profiler.disable()
    return pstats.Stats(profiler)


class ProfileSteps(L.Callback):
    """cProfile from the first step after warm-up to the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.profiler = warmup, cProfile.Profile()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.profiler.enable()

    def on_train_end(self, trainer, module):
        self.profiler.disable()


def profile_lightning(net, images, cfg: TrainerConfig, warmup: int, steps: int) -> pstats.Stats:
    cfg = replace(cfg, max_steps=warmup + steps, log_every=10**9)
    module = DenoiserModule(net, cfg, seed=0, psnr_sigmas=[], images=images)
    data = CellDataModule(None, "A", len(images), batch_size=cfg.batch_size, images=images)
    probe = ProfileSteps(warmup)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=cfg.max_steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[probe])
    trainer.fit(module, datamodule=data)
    return pstats.Stats(probe.profiler)


def summary(stats: pstats.Stats, steps: int) -> dict:
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    return {"seconds_per_step": round(total / steps, 4),
            "by_package_per_step": {k: round(v / steps, 4) for k, v in sorted(by_package(stats).items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="profiled steps per loop (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    args = parser.parse_args()
    cfg, images = TrainerConfig(batch_size=args.batch, accelerator="cpu"), images_for(80)
    plain = profile_plain(build_model(ModelConfig("bf_unet", 64, 3), 80), images, cfg, 2, args.steps)
    lightning = profile_lightning(build_model(ModelConfig("bf_unet", 64, 3), 80), images, cfg, 2, args.steps)
    print(json.dumps({"image_size": 80, "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
                      "plain": summary(plain, args.steps), "lightning": summary(lightning, args.steps),
                      "lightning_top_own_time": top(lightning, "lightning")}, indent=2))


if __name__ == "__main__":
    main()
