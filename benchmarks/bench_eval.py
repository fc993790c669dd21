"""Evaluation speed: full Jacobian + eigendecomposition (vectorised VJPs vs a per-pixel autograd loop)
and sampler throughput.

    python benchmarks/bench_eval.py [--quick]

Prints one JSON object. Targets: vectorised/loop speed-up ≥ 20 at 32×32 on CPU (the loop is timed on
a subset of rows and scaled to all D rows); on a CUDA device the 80×80 Jacobian + eigh in ≤ 3 s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gdm.analysis.jacobian import geometry, jacobian
from gdm.config import ModelConfig, SamplerConfig
from gdm.models import build_model
from gdm.sample import sample


class Denoiser(torch.nn.Module):
    """f(y) = y − net(y) around a freshly initialised bias-free UNet, in eval mode."""

    def __init__(self, size: int, channels: int, blocks: int):
        super().__init__()
        self.net = build_model(ModelConfig(name="bf_unet", channels=channels, blocks=blocks), size).eval()

    def forward(self, y):
        return y - self.net(y)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def loop_seconds_per_row(model, y: torch.Tensor, rows: int) -> float:
    """Per-pixel autograd: one backward pass per output pixel (what the vectorised path replaces)."""
    x = y[None].clone().requires_grad_(True)

    def run():
        for i in range(rows):
            out = model(x).reshape(-1)[i]
            torch.autograd.grad(out, x)

    return timed(run)[0] / rows


def bench_jacobian(size: int, channels: int, blocks: int, chunk: int, loop_rows: int, device: str) -> dict:
    model = Denoiser(size, channels, blocks).to(device)
    y = torch.rand(1, size, size, device=device)
    jacobian(model, y, chunk=chunk)  # warm-up
    t_jac, J = timed(lambda: jacobian(model, y, chunk=chunk))
    t_eig, _ = timed(lambda: geometry(J, keep=8))
    loop = loop_seconds_per_row(model, y, loop_rows) * size * size
    return {"size": size, "device": device, "jacobian_s": t_jac, "eigh_s": t_eig, "total_s": t_jac + t_eig,
            "per_pixel_loop_s_estimated": loop, "speedup": loop / t_jac}


def bench_sampler(size: int, channels: int, blocks: int, count: int, device: str) -> dict:
    model = Denoiser(size, channels, blocks).to(device)
    # an untrained network barely moves y, so σ_t would fall below σ_∞ at once: run a fixed 60 steps
    cfg = SamplerConfig(h0=0.1, beta=0.5, max_steps=60, sigma_end=1e-12, diverge_sigma=1e12)
    seconds, result = timed(lambda: sample(model, range(count), (1, size, size), cfg, device, batch_size=count))
    return {"size": size, "samples": count, "seconds": seconds, "samples_per_s": count / seconds,
            "mean_steps": float(result.steps.float().mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer loop rows (≈1 min on CPU)")
    args = parser.parse_args()
    channels = 16 if args.quick else 32
    out = {"torch_threads": torch.get_num_threads(), "cpu": bench_jacobian(32, channels, 2, 256, 32 if args.quick else 128, "cpu")}
    out["cpu"]["target_speedup"] = 20.0
    out["sampler_cpu"] = bench_sampler(32, channels, 2, 64 if args.quick else 256, "cpu")
    if torch.cuda.is_available():
        out["cuda"] = bench_jacobian(80, 64, 3, 1600, 64, "cuda") | {"gpu": torch.cuda.get_device_name(), "target_s": 3.0}
        out["sampler_cuda"] = bench_sampler(80, 64, 3, 512, "cuda")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
