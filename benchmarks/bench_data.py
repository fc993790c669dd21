"""Data-layer throughput: prepare (generate + shard + manifest), load a cell from the cache, and whether
the in-memory batch path keeps a training step fed (target: data batches/s >= 20 x training steps/s).

Usage: python benchmarks/bench_data.py [--quick]   (prints one JSON object)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gdm.config import DataConfig  # noqa: E402
from gdm.data.prepare import prepare_dataset  # noqa: E402
from gdm.data.store import load_split  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_prepare(root: Path, count: int) -> dict:
    data = DataConfig(
        family="disks", image_size=80, pool_size=count - count // 10, test_size=count // 10, shard_size=1000
    )
    _, seconds = timed(lambda: prepare_dataset(data, root / "prepare"))
    _, again = timed(lambda: prepare_dataset(data, root / "prepare"))
    return {"prepare_images": count, "prepare_images_per_s": count / seconds, "prepare_again_s": again}


def bench_load(root: Path, n: int) -> dict:
    data = DataConfig(family="disks", image_size=80, pool_size=2 * n, test_size=10, shard_size=10_000)
    _, prep = timed(lambda: prepare_dataset(data, root / "load"))
    _, first = timed(lambda: load_split(root / "load", "A", n))  # verifies shards, builds the cache
    images, cached = timed(lambda: load_split(root / "load", "A", n))
    return {
        "load_n": n,
        "load_prepare_s": prep,
        "load_first_s": first,
        "load_images_per_s": n / cached,
        "load_shape": list(images.shape),
    }


def data_batches_per_s(n: int, batch: int, seconds: float) -> float:
    """Batches/s of the in-memory path: random indices into a preloaded uint8 tensor, to float, add noise."""
    pool = torch.randint(0, 256, (n, 1, 80, 80), dtype=torch.uint8)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x = pool[torch.randint(n, (batch,))].float().div_(255.0)
        sigma = torch.rand(batch, 1, 1, 1) ** 2
        _ = x + sigma * torch.randn_like(x)
        count += 1
    return count / (time.perf_counter() - start)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.ReLU(),
    )


class StandInUNet(nn.Module):
    """Bias-free UNet of docs/SCIENCE.md's 80x80 shape (64-128-256, middle 512): the same FLOPs as bf_unet."""

    def __init__(self, widths=(64, 128, 256), middle=512):
        super().__init__()
        ins = (1, *widths[:-1])
        self.down = nn.ModuleList(conv_block(i, o) for i, o in zip(ins, widths, strict=True))
        self.middle = conv_block(widths[-1], middle)
        outs = (middle, *widths[::-1][:-1])
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(i, w, 2, stride=2, bias=False) for i, w in zip(outs, widths[::-1], strict=True)
        )
        self.dec = nn.ModuleList(conv_block(2 * w, w) for w in widths[::-1])
        self.out = nn.Conv2d(widths[0], 1, 1, bias=False)

    def forward(self, y):
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = nn.functional.avg_pool2d(y, 2)
        y = self.middle(y)
        for up, block in zip(self.up, self.dec, strict=True):
            y = block(torch.cat([up(y), skips.pop()], dim=1))
        return self.out(y)


def build_network() -> tuple[nn.Module, str]:
    try:
        from gdm.config import ModelConfig
        from gdm.models import build_model

        return build_model(ModelConfig(name="bf_unet", channels=64, blocks=3), 80), "gdm.models bf_unet"
    except (ImportError, AttributeError):
        return StandInUNet(), "stand-in bias-free UNet (gdm.models.build_model not available), same FLOPs as bf_unet"


def train_steps_per_s(batch_measured: int, batch_target: int, steps: int) -> tuple[float, str]:
    """Steps/s at batch_target, extrapolated linearly from timing at batch_measured (CPU time ~ batch)."""
    net, name = build_network()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    y = torch.rand(batch_measured, 1, 80, 80)

    def step():
        loss = (net(y) - y).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step()  # warm-up
    _, seconds = timed(lambda: [step() for _ in range(steps)])
    return steps / seconds * batch_measured / batch_target, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 2 minutes)")
    args = parser.parse_args()
    quick = args.quick
    results: dict = {"quick": quick, "device": "cpu", "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        results |= bench_prepare(Path(tmp), 2_000 if quick else 10_000)
        results |= bench_load(Path(tmp), 10_000 if quick else 100_000)
    batch = 512
    results["data_batches_per_s"] = data_batches_per_s(10_000 if quick else 100_000, batch, 3.0 if quick else 10.0)
    steps, name = train_steps_per_s(4 if quick else 16, batch, 1 if quick else 2)
    results |= {
        "model": name,
        "train_steps_per_s_at_512": steps,
        "train_timing_note": f"timed at batch {4 if quick else 16} on CPU, scaled linearly to 512",
    }
    results["ratio_data_to_train"] = results["data_batches_per_s"] / steps
    results["target_ratio"] = 20
    results["meets_target"] = results["ratio_data_to_train"] >= 20
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
