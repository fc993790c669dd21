"""Evaluation on a device: sampler throughput, and the 80×80 Jacobian's time and homogeneity error, TF32 on and off.

    python benchmarks/device_eval.py --out FILE [--smoke]

- Sampler: gdm.sample.sample with the BF-UNet (64 channels, 3 blocks, freshly initialised) at evaluation's
  batch (256) in true fp32 (TF32 off, as evaluation runs), for a fixed number of steps (sigma_end out of
  reach), as network passes per second and as samples per second at the paper's sampler (h = 0.01,
  β = 0.1: launch.plan.sampler_forwards passes a sample).
- Jacobian: gdm.analysis.jacobian.jacobian at one 80×80 noisy image (D = 6 400 rows, eval.jacobian.chunk 512),
  its eigh (gdm.analysis.jacobian.geometry) on the device and on the host's CPU (where gdm.evaluate runs it),
  and the homogeneity error ‖J y − f(y)‖ / ‖f(y)‖ in float64, the check gdm.evaluate records: exactly 0 for a
  bias-free network in exact arithmetic, so it measures the rounding of the kernels. TF32 on
  (torch.backends.cuda.matmul and cudnn allow_tf32) against off.
--smoke: 16×16, an 8-channel 1-block UNet, a few samples and steps: the path on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from timing import emit

from gdm.analysis.jacobian import geometry, jacobian
from gdm.config import ExperimentConfig, ModelConfig, SamplerConfig
from gdm.models import build_model
from gdm.sample import sample
from gdm.training.denoiser import BlindDenoiser
from launch.plan import sampler_forwards

PAPER_SAMPLER = SamplerConfig(h0=0.01, beta=0.1, sigma_0=1.0, sigma_end=0.05, max_steps=10_000)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - start


def denoiser(model: ModelConfig, size: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return BlindDenoiser(build_model(model, size)).to(device).eval()


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def sampler(f, size: int, count: int, steps: int, device: torch.device) -> dict:
    """Passes/s over `steps` steps of `count` samples (σ_end out of reach, so none stops early)."""
    cfg = SamplerConfig(h0=0.01, beta=0.1, sigma_end=1e-9, max_steps=steps, final_denoise=False)
    sample(f, range(count), (1, size, size), cfg, device, batch_size=count)  # warm-up (cuDNN plans)
    _, seconds = timed(lambda: sample(f, range(count), (1, size, size), cfg, device, batch_size=count), device)
    passes_per_s = count * (steps + 1) / seconds
    paper = sampler_forwards(ExperimentConfig(sampler=PAPER_SAMPLER))
    return {"batch": count, "steps": steps, "seconds": round(seconds, 4), "passes_per_s": round(passes_per_s, 1),
            "paper_sampler_passes": paper, "samples_per_s_paper_sampler": float(f"{passes_per_s / paper:.4g}")}


def jacobian_check(f, size: int, chunk: int, device: torch.device, tf32: bool, host_eigh: bool) -> dict:
    """J at one noisy image under a TF32 setting: its time, its eigh's, and ‖J y − f(y)‖ / ‖f(y)‖ (float64)."""
    set_tf32(tf32)
    y = (0.5 + 0.15 * torch.randn(1, size, size, generator=torch.Generator().manual_seed(0))).to(device)
    with torch.no_grad():
        fy = f(y[None])[0].reshape(-1).double()  # also the warm-up of this TF32 setting's kernels
    J, seconds = timed(lambda: jacobian(f, y, chunk=chunk), device)
    _, eigh_seconds = timed(lambda: geometry(J, keep=8), device)
    error = float((J.double() @ y.reshape(-1).double() - fy).norm() / fy.norm())
    row = {"tf32": tf32, "rows": y.numel(), "chunk": chunk, "jacobian_s": round(seconds, 4),
           "eigh_s": round(eigh_seconds, 4), "homogeneity_error": error}
    if host_eigh:  # gdm.evaluate takes J to the CPU for eigh: once, TF32 does not touch it
        _, host_seconds = timed(lambda: geometry(J.cpu(), keep=8), torch.device("cpu"))
        row |= {"eigh_host_s": round(host_seconds, 4), "host_threads": torch.get_num_threads()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, size = (ModelConfig("bf_unet", 8, 1), 16) if args.smoke else (ModelConfig("bf_unet", 64, 3), 80)
    f = denoiser(model, size, device)
    set_tf32(False)  # the sampler as evaluation runs it: true fp32
    count, steps, chunk = (8, 5, 64) if args.smoke else (256, 30, 512)
    result = {"benchmark": "device_eval", "device": torch.cuda.get_device_name() if device.type == "cuda"
              else f"cpu ({os.cpu_count()} cores)", "torch": torch.__version__, "image_size": size,
              "smoke": args.smoke, "sampler": sampler(f, size, count, steps, device),
              "jacobian": [jacobian_check(f, size, chunk, device, tf32, tf32) for tf32 in (True, False)]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
