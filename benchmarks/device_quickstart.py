"""The quickstart end to end on this machine's accelerator, timed, beside the plan's estimate for it.

    python benchmarks/device_quickstart.py --root DIR --out FILE [--smoke] [override ...]

Runs `python -m gdm.cli run configs/quickstart.yaml root=DIR trainer.accelerator=gpu launch.train.gpus_per_node=1
launch.eval.gpus_per_node=1` (the resources only tell the plan that both kinds of job hold a GPU: the local
executor ignores them) in a subprocess and records its wall time, exit status, the cells and pairs done,
and `gdm run --dry-run`'s wall estimate for the same settings. --smoke: a 2-cell, 1-pair grid of 16×16
images on the CPU, in process, W&B disabled: the path in seconds. Extra overrides go last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gdm import lifecycle
from gdm.cells import expand_cells, expand_pairs
from gdm.config import load_config
from launch.plan import make_plan

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart.yaml"
ON_GPU = ["trainer.accelerator=gpu", "launch.train.gpus_per_node=1", "launch.eval.gpus_per_node=1"]
SMOKE = ["trainer.accelerator=cpu", "n_train=[1]", "datasets.disks.image_size=16", "datasets.disks.pool_size=16",
         "datasets.disks.test_size=8", "datasets.disks.shard_size=8", "model.channels=8", "model.blocks=1",
         "trainer.max_steps=4", "trainer.batch_size=4", "trainer.checkpoint_every=2", "trainer.log_every=2",
         "sampler.max_steps=5", "eval.num_samples=4", "eval.batch_size=4", "eval.psnr_images=4",
         "eval.psnr_sigmas=[0.1,0.5]", "eval.grid_samples=2", "wandb.mode=disabled", "launch.executor=inprocess"]


def run(root: Path, overrides: list[str]) -> dict:
    settings = [f"root={root}", *overrides]
    cfg = load_config(REPO / CONFIG, settings)
    planned = make_plan(cfg).wall_hours * 3600
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gdm.cli", "run", CONFIG, *settings], cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cells = sum(lifecycle.is_done(c.directory(cfg)) for c in expand_cells(cfg))
    pairs = sum(lifecycle.is_done(p.directory(cfg)) for p in expand_pairs(cfg))
    return {"command": f"gdm run {CONFIG} " + " ".join(settings[1:]), "returncode": done.returncode,
            "wall_s": round(seconds, 1), "planned_wall_s": round(planned, 1),
            "ratio_measured_over_planned": round(seconds / planned, 3), "cells_done": cells,
            "cells": len(expand_cells(cfg)), "pairs_done": pairs, "pairs": len(expand_pairs(cfg)),
            "stderr_tail": done.stderr[-2000:] if done.returncode else ""}


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder for the run (the quickstart's root)")
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="a tiny grid on the CPU")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides")
    args = parser.parse_args()
    overrides = (SMOKE if args.smoke else ON_GPU) + args.overrides
    result = {"benchmark": "device_quickstart", "device": device_name(), "smoke": args.smoke,
              **run(args.root, overrides)}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
