"""Plain helpers shared by the tests; fixtures live in conftest.py. Import them as `from helpers import ...`
(pytest puts tests/ on sys.path, as the folder has no __init__.py; the subprocess scripts of test_train.py
add it themselves).

This module imports no torch or Lightning at its top (conftest.py imports it, and Lightning takes seconds):
the Lightning callbacks are in lightning_helpers.py. What a test hands to a local or SLURM job (a stand-in,
a callback) is defined in these modules or in the test module, none of which the job can import: each is
registered with cloudpickle to travel by value.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cloudpickle
import torch
from torch import nn

from gdm import lifecycle
from gdm.cells import data_dir, expand_pairs
from gdm.config import ExperimentConfig, load_config
from launch.jobs import GridSteps

if TYPE_CHECKING:
    import torch

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs cannot import this module

# --- configs -------------------------------------------------------------------------------------

# A tiny experiment that trains and evaluates in seconds on a CPU (the schema defaults, overridden).
TINY_OVERRIDES = [
    "name=tiny",
    "n_train=[1,4]",
    "datasets.disks.image_size=16",
    "datasets.disks.pool_size=16",
    "datasets.disks.test_size=8",
    "datasets.disks.shard_size=8",
    "model.channels=8",
    "model.blocks=1",
    "trainer.max_steps=6",
    "trainer.batch_size=4",
    "trainer.lr_halve_every=0",
    "trainer.checkpoint_every=3",
    "trainer.log_every=2",
    "trainer.accelerator=cpu",
    "sampler.max_steps=40",
    "sampler.h0=0.2",
    "eval.num_samples=4",
    "eval.batch_size=4",
    "eval.psnr_images=4",
    "eval.psnr_sigmas=[0.1,0.5]",
    "eval.grid_samples=2",
    "launch.executor=inprocess",
]

# Small SLURM jobs, so that two fit on the 2-CPU node of slurm/start_local_cluster.sh at once.
SLURM_OVERRIDES = ["launch.executor=slurm", "launch.max_parallel=2", "launch.poll_seconds=1",
                   "launch.train.cpus_per_task=1", "launch.train.mem_gb=1", "launch.train.time_min=20",
                   "launch.eval.cpus_per_task=1", "launch.eval.mem_gb=1", "launch.eval.time_min=20",
                   "launch.prepare.cpus_per_task=1", "launch.prepare.mem_gb=1", "launch.prepare.time_min=20"]


def tiny_config(root: Path, *extra: str) -> ExperimentConfig:
    """The tiny experiment with its runs under `root`, `extra` overrides last (validated, as `gdm run` loads it)."""
    return load_config(None, [*TINY_OVERRIDES, f"root={root}", *extra])


def prepared(cfg: ExperimentConfig) -> ExperimentConfig:
    """cfg, with every one of its datasets prepared where its jobs read them (gdm.cells.data_dir)."""
    from gdm.data.prepare import prepare_dataset

    for name, data in cfg.datasets.items():
        prepare_dataset(data, data_dir(cfg, name))
    return cfg


# --- waiting and reading -------------------------------------------------------------------------

LOG_TAIL = 8000  # characters of a log shown when a wait times out


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, log: Callable[[], str] | None = None,
             poll: float = 0.2) -> None:
    """Return once `predicate()` holds; after `timeout` seconds fail, naming `what` and the tail of `log()`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}" + (f"\n{log()[-LOG_TAIL:]}" if log else ""))
        time.sleep(poll)


def read_status(directory: Path) -> dict:
    """The owner's record (status.json) with the state, job id and error that gdm.lifecycle derives."""
    status = lifecycle.status(directory)
    return {**status.record, "state": status.state.value, "job_id": status.job_id, "error": status.error}


def saved_weights(path: Path) -> dict[str, torch.Tensor]:
    """The network weights of a model.pt or last.ckpt."""
    import torch

    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    """Equal bit for bit, tensor by tensor; otherwise the first differing key and by how much."""
    import torch

    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), (key, _difference(ours[key], theirs[key]))


def _difference(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    return f"largest difference {(a.double() - b.double()).abs().max().item():.3g}"


# --- SLURM ---------------------------------------------------------------------------------------

USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")


def slurm_cluster_up(conf: Path | None = None, nodes: Collection[str] = ()) -> str | None:
    """None when the cluster of slurm.conf `conf` (None: the inherited SLURM_CONF, else SLURM's default)
    has a usable node, and every one of `nodes` usable if named; otherwise why not (a skip reason)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM commands (sinfo, sbatch) on PATH"
    if conf is not None and not Path(conf).is_file():
        return f"no SLURM cluster configured at {conf}"
    env = {**os.environ, "SLURM_CONF": str(conf)} if conf is not None else None
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=env,
                             timeout=20).stdout
    except (subprocess.SubprocessError, OSError) as err:
        return f"the SLURM cluster does not answer ({err})"
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 2]
    usable = {node for node, state in rows if state.rstrip("*") in USABLE_NODE_STATES}
    return None if usable and set(nodes) <= usable else f"SLURM cluster not up (sinfo: {out.strip() or 'nothing'})"


# --- stand-ins for data, training and evaluation (seconds, no torch work) ------------------------

def log_event(cfg: ExperimentConfig, **fields) -> None:
    """One line in the run's events.jsonl, stamped with the time (the stand-ins' record of what ran when)."""
    with open(cfg.run_dir / "events.jsonl", "a") as handle:  # one short append per event: atomic enough
        handle.write(json.dumps({**fields, "t": time.time()}) + "\n")


def events(cfg: ExperimentConfig) -> list[dict]:
    path = cfg.run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def train_owned(cfg: ExperimentConfig, cell, **fit_options) -> Path:
    """Train `cell` through its folder's one owner, as every entry point does (settings.json, DONE with the
    model's checksum); returns the cell's folder. `fit_options`: fit_cell's keywords (callbacks, …)."""
    from gdm.training.fit import fit_cell
    from launch.slurm import SlurmEnv
    from launch.task import run_owned

    run_owned(cfg, cell, lambda: fit_cell(cfg, cell, **fit_options), SlurmEnv())
    return cell.directory(cfg)


@dataclass
class FakeFit:
    fail: tuple[str, ...] = ()  # cell ids that raise
    delay: float = 0.05
    slow: tuple[str, ...] = ()  # cell ids that take 10 × delay

    def __call__(self, cfg, cell, *, progress=False, plugins=None) -> lifecycle.Finished:
        log_event(cfg, kind="train", id=cell.cell_id, what="start")
        time.sleep(self.delay * (10 if cell.cell_id in self.slow else 1))
        if cell.cell_id in self.fail:
            raise RuntimeError(f"boom in {cell.cell_id}")
        (cell.directory(cfg) / "metrics.jsonl").write_text(json.dumps({"step": cfg.trainer.max_steps}) + "\n")
        log_event(cfg, kind="train", id=cell.cell_id, what="end")
        return lifecycle.Finished(facts={"step": cfg.trainer.max_steps})  # the owner writes DONE


@dataclass
class FakeEval:
    def __call__(self, cfg, pair, *, progress=False) -> lifecycle.Finished:
        log_event(cfg, kind="eval", id=pair.pair_id, what="start")
        return lifecycle.Finished()


def fake_prepare(data, data_dir: Path, *, progress: bool = False) -> dict:
    data_dir.mkdir(parents=True, exist_ok=True)
    return {}


def fake_steps(fail: tuple[str, ...] = (), delay: float = 0.05, slow: tuple[str, ...] = ()) -> GridSteps:
    return GridSteps(
        prepare=fake_prepare, verify=None, fit=FakeFit(fail, delay, slow), evaluate=FakeEval(), report=None
    )


def assert_evals_after_cells(cfg: ExperimentConfig) -> None:
    """Every evaluation the stand-ins logged started after both cells of its pair ended."""
    log = events(cfg)
    ends = {e["id"]: e["t"] for e in log if e["kind"] == "train" and e["what"] == "end"}
    for pair in expand_pairs(cfg):
        starts = [e["t"] for e in log if e["kind"] == "eval" and e["id"] == pair.pair_id]
        for start in starts:
            assert all(c.cell_id in ends and ends[c.cell_id] <= start for c in pair.cells), pair.pair_id


class Shrink(nn.Module):
    """f(y) = y / 2: a stand-in denoiser with a parameter, in eval mode."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.eval()

    def forward(self, y):
        return self.scale * y


def small_images(n: int, seed: int) -> torch.Tensor:
    """n random 8×8 one-channel images in [0, 1), fixed by `seed`."""
    return torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


def stand_in_pair(family: str = "disks"):
    """A pair's data for gdm.evaluate.summarize without a run: two Shrink models, 5 training images per split,
    6 held-out images, no prepared dataset (the Gaussian reference fits the training sets)."""
    from gdm.evaluate import PairData

    return PairData({"A": Shrink(), "B": Shrink()}, {"A": small_images(5, 1), "B": small_images(5, 2)},
                    small_images(6, 3), None, family)
