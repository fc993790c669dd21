"""Sampler speed: per-seed generators on the sampling device (gdm.sample) against the per-(seed, step)
CPU generators they replace, measured in one run on one machine.

    python benchmarks/bench_sample.py [--seeds 256] [--size 32] [--steps 4] [--rounds 7] [--threads 1] [--device cpu]

Writes benchmarks/results/bench_sample.json (and prints it). Target: `speedup` = old / new seconds ≥ 1
at 256 seeds of 32×32 on the CPU (the old noise was 29.5 ms of host work a step there, see `noise_*`).

What is timed, each the best (minimum) of `rounds` alternating rounds: on a shared machine the load of
other processes only ever adds time, so the minimum is the steadiest estimate of each one's own cost.
- `sample_old_s` / `sample_new_s`: `steps` sampler steps of `seeds` samples around a small bias-free UNet,
  with the previous sampler (a verbatim copy below: a fresh CPU generator per seed and step, σ_t copied to
  the host every step) and with gdm.sample.sample;
- `overhead_old_s` / `overhead_new_s`: the same around f(y) = (y + 0.5)/2, which costs next to nothing:
  the sampler's own work (noise, bookkeeping, copies), what a GPU forward of 6–12 ms a step must hide;
- `noise_old_s` / `noise_new_s`: the noise alone, `steps` + 1 draws for every seed each way.
An untrained network barely moves y, so σ_∞ is set to 0: every sample runs all `steps` steps. On a
shared 2-core machine the UNet forward (≈ 0.7 s a step at 256 × 32 × 32) dominates `sample_*` and its
load noise is larger than the noise's share, so `speedup` scatters around its true value; the overhead
and noise ratios show the host work itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from timing import alternating

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gdm.config import ModelConfig, SamplerConfig  # noqa: E402
from gdm.models import build_model  # noqa: E402
from gdm.sample import SeedNoise, sample, step_size  # noqa: E402
from gdm.training.denoiser import BlindDenoiser  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_sample.json"


# --- the previous sampler, verbatim but for names: the baseline ------------------------------------------


def old_noise(seed: int, step: int, shape: Sequence[int]) -> torch.Tensor:
    key = int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(key))


def old_noise_batch(seeds: Sequence[int], step: int, shape: Sequence[int], device) -> torch.Tensor:
    return torch.stack([old_noise(s, step, shape) for s in seeds]).to(device)


@torch.no_grad()
def old_sample_batch(denoiser, seeds, shape, cfg: SamplerConfig, device):
    y = cfg.mean + cfg.sigma_0 * old_noise_batch(seeds, 0, shape, device)
    k = len(seeds)
    steps, diverged = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.bool)
    sigma, active = torch.full((k,), float("inf")), torch.arange(k)
    for t in range(1, cfg.max_steps + 2):
        d = denoiser(y[active]) - y[active]
        s = d.flatten(1).pow(2).mean(1).sqrt().cpu()
        sigma[active] = s
        bad = ~torch.isfinite(s) | (s > cfg.diverge_sigma) | ~torch.isfinite(y[active]).flatten(1).all(1).cpu()
        diverged[active[bad]] = True
        above = s > cfg.sigma_end
        go = ~bad & (above | cfg.authors_loop)
        if t > cfg.max_steps or not go.any():
            break
        idx, d, s, above = active[go], d[go.to(d.device)], s[go], above[go]
        h = step_size(cfg, t)
        gamma = math.sqrt(max((1 - cfg.beta * h) ** 2 - (1 - h) ** 2, 0.0)) * s
        z = old_noise_batch([seeds[i] for i in idx.tolist()], t, shape, device)
        y[idx] = y[idx] + h * d + gamma.to(device).view(-1, 1, 1, 1) * z
        steps[idx] = t
        active = idx[above]
        if not len(active):
            break
    keep = ~diverged.to(y.device)
    y[keep] = denoiser(y[keep])
    return y.cpu(), steps, diverged, sigma


# --- timing -------------------------------------------------------------------------------------------------


def alternating_best(fns: dict[str, Callable[[], object]], rounds: int, device: str) -> dict[str, float]:
    """Least seconds of each function over `rounds` rounds that run them in turn."""
    return {name: min(times) for name, times in alternating(fns, rounds, device).items()}


def new_noise(seeds: Sequence[int], shape, draws: int, device: str) -> None:
    noise = SeedNoise(seeds, shape, device)
    for _ in range(draws):
        noise.draw()


class Halve(torch.nn.Module):
    """f(y) = (y + 0.5) / 2: a denoiser that costs next to nothing, so the sampler's own work is what is timed."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 0.5) / 2


def bench(seeds: int, size: int, steps: int, rounds: int, channels: int, device: str) -> dict:
    torch.manual_seed(0)
    model = BlindDenoiser(build_model(ModelConfig(name="bf_unet", channels=channels, blocks=1), size)).to(device)
    model.eval()
    cheap = Halve()
    cfg = SamplerConfig(h0=0.1, beta=0.5, max_steps=steps, sigma_end=0.0, diverge_sigma=1e12)
    ids, shape = list(range(seeds)), (1, size, size)
    new = sample(model, ids, shape, cfg, device)  # warm-up; both run every step
    assert (new.steps == steps).all() and (old_sample_batch(model, ids, shape, cfg, device)[1] == steps).all()
    t = alternating_best({
        "sample_old": lambda: old_sample_batch(model, ids, shape, cfg, device),
        "sample_new": lambda: sample(model, ids, shape, cfg, device),
        "overhead_old": lambda: old_sample_batch(cheap, ids, shape, cfg, device),
        "overhead_new": lambda: sample(cheap, ids, shape, cfg, device),
        "noise_old": lambda: [old_noise_batch(ids, k, shape, device) for k in range(steps + 1)],
        "noise_new": lambda: new_noise(ids, shape, steps + 1, device),
    }, rounds, device)
    return {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(), "seeds": seeds,
            "size": size, "steps": steps, "channels": channels, "rounds": rounds,
            **{f"{name}_s": value for name, value in t.items()},
            "noise_old_ms_per_step": 1e3 * t["noise_old"] / (steps + 1),
            "noise_new_ms_per_step": 1e3 * t["noise_new"] / (steps + 1),
            "overhead_old_ms_per_step": 1e3 * t["overhead_old"] / steps,
            "overhead_new_ms_per_step": 1e3 * t["overhead_new"] / steps,
            "speedup": t["sample_old"] / t["sample_new"], "overhead_speedup": t["overhead_old"] / t["overhead_new"],
            "noise_speedup": t["noise_old"] / t["noise_new"],
            "target_speedup": 1.0, "meets_target": t["sample_old"] >= t["sample_new"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=256, help="samples in one batch (default 256)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--steps", type=int, default=4, help="sampler steps timed (default 4)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds; the best of each is reported")
    parser.add_argument("--channels", type=int, default=8, help="UNet width (default 8: a small model)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a loaded shared machine two threads wait on each "
                             "other's barriers and an elementwise op can take 20× longer, in both samplers)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"result file (default {RESULTS})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = bench(args.seeds, args.size, args.steps, args.rounds, args.channels, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
