"""The plan's time against the clock: `gdm run --dry-run`'s wall estimate vs the measured quickstart.

    python benchmarks/bench_plan.py [--rates-only] [--keep DIR]

1. One CPU core's rates (torch.set_num_threads(1), as every local job runs with trainer.threads = 1 and
   launch.*.cpus_per_task = 1): fp32 training FLOP/s of the BF-UNet at each width the plan states (forward +
   backward + Adam, FLOPs counted by launch.plan.network_cost), fp64 `torch.linalg.eigh` FLOP/s
   (9 n³ FLOP) and the seconds a fresh job's interpreter spends importing torch, Lightning and gdm.
   launch/plan.py's CPU_CORE_FP32_BY_CHANNELS and RATES["cpu"] state these figures; this prints them beside.
2. `gdm run configs/quickstart.yaml root=TMP` end to end in a subprocess, timed, against the plan's
   `wall_hours` for the same config; the ratio measured / planned should lie in [0.67, 1.5].
3. patches16's and transition16's wall times measured earlier (not in this run), beside the plan's estimates.

The load average before and after goes into the JSON: on a shared machine the ratio moves with it.
Writes benchmarks/results/bench_plan.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gdm.config import ModelConfig, load_config
from gdm.models import build_model
from launch.plan import CPU_CORE_FP32_BY_CHANNELS, RATES, make_plan, network_cost

REPO = Path(__file__).resolve().parents[1]
TARGET = (0.67, 1.5)  # measured / planned wall time
# Wall times measured earlier on this VM, idle, two 1-thread jobs at a time (not in this run):
RECORDED = {
    "patches16": {"measured_wall_s": 56 * 60 + 39,  # configs/patches16.yaml's header: 56 min 39 s
                  "measured": "2026-12-06, `/usr/bin/time gdm run configs/patches16.yaml`, this 2-core VM, idle: the "
                              "6-size grid, 16 channels, 12 cells and 12 eval pairs (docs/RESULTS.md)"},
    "transition16": {"measured_wall_s": 9 * 60 + 6,  # README, A Gaussian control: 9 min 6 s
                     "measured": "2026-11-24, `gdm run configs/transition16.yaml`, this 2-core VM, on a day it "
                                 "ran 1.75× faster than 2026-12-06 (bench_train's 2-thread rate)"},
}
IMPORTS = "import torch, lightning, gdm.training.fit, gdm.evaluate, launch.jobs"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def training_flops_per_s(model: ModelConfig, size: int, batch: int, steps: int = 30) -> float:
    """fp32 training FLOP/s of one thread: forward + backward + Adam, FLOPs as the plan counts them."""
    net = build_model(model, size)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    clean = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    for step in range(steps + 3):  # 3 warm-up steps
        if step == 3:
            start = time.perf_counter()
        noise = 0.2 * torch.randn_like(clean)
        loss = (net(clean + noise) - noise).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return network_cost(model, size).train_flops * batch * steps / seconds


def eigh_flops_per_s(n: int = 768) -> float:
    """fp64 eigh FLOP/s of one thread at the plan's count, 9 n³ FLOP (tridiagonalisation + vectors)."""
    a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = a + a.T
    torch.linalg.eigh(a)
    start = time.perf_counter()
    torch.linalg.eigh(a)
    return 9 * n**3 / (time.perf_counter() - start)


def startup_seconds(rounds: int = 3) -> float:
    """Median wall time of a fresh interpreter importing what a training or evaluation job imports."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, cwd=REPO, env=_env())
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


# The widths launch.plan.CPU_CORE_FP32_BY_CHANNELS states, each at an image size and batch a config trains it at
# (quickstart: 16 channels, 32×32, batch 32; patches16: 32 channels, 16×16, batch 64; 64 channels, 32×32).
WIDTHS = ((16, 32, 32), (32, 16, 64), (64, 32, 32))


def core_rates() -> dict:
    torch.set_num_threads(1)
    fp32 = {str(channels): training_flops_per_s(ModelConfig(name="bf_unet", channels=channels, blocks=2), size,
                                                batch) / 1e12 for channels, size, batch in WIDTHS}
    return {"fp32_train_tflops_per_s_by_channels": fp32, "fp64_eigh_tflops_per_s": eigh_flops_per_s() / 1e12,
            "import_s": startup_seconds(),
            "stated_in_plan": {"fp32_tflops_per_s_by_channels": {str(c): r / 1e12
                                                                 for c, r in CPU_CORE_FP32_BY_CHANNELS},
                               "eigh_tflops_per_s": RATES["cpu"].flops["eigh"] / 1e12,
                               "startup_s": RATES["cpu"].startup_s}}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def planned_wall_s(config: str, overrides: list[str]) -> float:
    return make_plan(load_config(REPO / config, overrides)).wall_hours * 3600


def quickstart(root: Path) -> dict:
    """`gdm run configs/quickstart.yaml root=ROOT` timed end to end, beside the plan's estimate."""
    overrides = [f"root={root}"]
    planned = planned_wall_s("configs/quickstart.yaml", overrides)
    before = load_average()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gdm.cli", "run", "configs/quickstart.yaml", *overrides], check=True,
                   cwd=REPO, env=_env(), stdout=subprocess.DEVNULL)
    measured = time.perf_counter() - start
    ratio = measured / planned
    return {"command": "gdm run configs/quickstart.yaml root=TMP", "measured_wall_s": round(measured, 1),
            "planned_wall_s": round(planned, 1), "ratio_measured_over_planned": round(ratio, 3),
            "target_ratio": list(TARGET), "within_target": TARGET[0] <= ratio <= TARGET[1],
            "load_average_before": before, "load_average_after": load_average()}


def recorded(name: str) -> dict:
    """A wall time measured earlier (RECORDED), beside the plan's estimate for the same config from nothing done (an
    empty root: the plan leaves out cells already done under ./runs)."""
    with tempfile.TemporaryDirectory() as root:
        planned = planned_wall_s(f"configs/{name}.yaml", [f"root={root}"])
    measured = RECORDED[name]["measured_wall_s"]
    return {"command": f"gdm run configs/{name}.yaml", **RECORDED[name], "in_this_run": False,
            "planned_wall_s": round(planned, 1), "ratio_measured_over_planned": round(measured / planned, 3),
            "target_ratio": list(TARGET)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates-only", action="store_true", help="measure the core's rates, run nothing else")
    parser.add_argument("--keep", type=Path, help="run the quickstart under this folder (kept) instead of a temp one")
    args = parser.parse_args()
    results = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "core_rates": core_rates()}
    if not args.rates_only:
        results.update({name: recorded(name) for name in RECORDED})
        with tempfile.TemporaryDirectory() as tmp:
            results["quickstart"] = quickstart(args.keep or Path(tmp))
        out = REPO / "benchmarks" / "results" / "bench_plan.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
