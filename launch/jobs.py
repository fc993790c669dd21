"""submitit job callables: picklable, and requeued on preemption or timeout; and `GridSteps`, the library
functions they call, injectable so tests can swap in tiny stand-ins (`fit` and `evaluate` travel inside
the jobs; None means "import the real one inside the job", which keeps torch out of the driver's pickles;
stand-ins must be picklable for the local and slurm executors).

On USR2 (preemption, or the time limit approaching) submitit calls `checkpoint`; the
`submitit.helpers.Checkpointable` default hands back a fresh copy of the same call, which submitit
requeues (the same call: these jobs hold no state of their own), and the new run resumes from the
cell's last.ckpt. Nothing is saved inside the signal
handler: training writes last.ckpt periodically on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import submitit

from gdm import lifecycle
from gdm.cells import Cell, EvalPair, data_dir
from gdm.config import ExperimentConfig
from launch import owners
from launch.task import EvalFn, FitFn, Outcome, run_eval_task, run_train_task


def _prepare(data, data_dir: Path, *, progress: bool = False) -> dict:
    from gdm.data.prepare import prepare_dataset

    return prepare_dataset(data, data_dir, progress=progress)


def _verify(data_dir: Path) -> dict:
    from gdm.data.store import verify_data

    return verify_data(data_dir)


def _report(cfg) -> Path:
    from gdm.report import make_report

    return make_report(cfg, owners.ownership(cfg))


@dataclass(frozen=True)
class GridSteps:
    prepare: Callable[..., dict] = _prepare  # prepare_dataset(data, data_dir, progress=)
    verify: Callable[..., dict] | None = _verify  # verify_data(data_dir): shards and caches, once, before fan-out
    fit: Callable[..., Path] | None = None  # fit_cell(cfg, cell, progress=, plugins=)
    evaluate: Callable[..., dict] | None = None  # eval_pair(cfg, pair, progress=)
    report: Callable[..., Path] | None = _report  # make_report(cfg); None: no report


def use_cpus(count: int) -> None:
    """Intra-op threads of this job's process = the CPUs it was given (no oversubscription when
    several local jobs share a machine)."""
    import torch

    torch.set_num_threads(max(1, int(count)))


@dataclass
class TrainJob(submitit.helpers.Checkpointable):
    """Train one cell (in every SLURM task of the job: Lightning DDP spans them)."""

    cfg: ExperimentConfig
    cell: Cell
    fit: FitFn | None = None  # None: gdm.training.fit.fit_cell, imported inside the job

    def __call__(self) -> Outcome:
        use_cpus(self.cfg.launch.train.cpus_per_task)
        return run_train_task(self.cfg, self.cell, fit=self.fit)


@dataclass
class EvalJob(submitit.helpers.Checkpointable):
    """Evaluate one (dataset, n) pair; a requeued evaluation starts over (it is short)."""

    cfg: ExperimentConfig
    pair: EvalPair
    evaluate: EvalFn | None = None  # None: gdm.evaluate.eval_pair

    def __call__(self) -> Outcome:
        use_cpus(self.cfg.launch.eval.cpus_per_task)
        return run_eval_task(self.cfg, self.pair, evaluate=self.evaluate)


@dataclass
class PrepareJob(submitit.helpers.Checkpointable):
    """Prepare and verify every dataset of the experiment (on SLURM: a job, not the login node)."""

    cfg: ExperimentConfig
    steps: GridSteps

    def __call__(self) -> str:
        use_cpus(self.cfg.launch.prepare.cpus_per_task)
        prepare_all(self.cfg, self.steps, progress=False)
        return "prepared"


@dataclass
class ReportJob(submitit.helpers.Checkpointable):
    """The report across n, after every evaluation has ended (submitted with --detach)."""

    cfg: ExperimentConfig
    steps: GridSteps

    def __call__(self) -> str:
        use_cpus(self.cfg.launch.eval.cpus_per_task)
        if self.steps.report is not None:
            self.steps.report(self.cfg)
        return "reported"


PREPARE_PATIENCE_S = 6 * 3600.0  # how long a driver waits for another one preparing the same dataset


def prepare_all(cfg: ExperimentConfig, steps: GridSteps, progress: bool) -> None:
    """Prepare each dataset, then verify its shards and caches once, here, before any job starts.

    A dataset being prepared by another driver is waited for (its folder's lease), never written twice.
    """
    ownership = owners.ownership(cfg)
    for name, data in cfg.datasets.items():
        folder = data_dir(cfg, name)
        with _owned(folder, ownership):
            steps.prepare(data, folder, progress=progress)
            if steps.verify is not None:
                steps.verify(folder)


def _owned(folder: Path, ownership: lifecycle.Ownership):
    """The folder's lease, waited for as long as another driver holds it; none on a finished read-only
    folder (nothing will be written there: prepare and verify only read a prepared dataset)."""
    if folder.exists() and not os.access(folder, os.W_OK):
        return nullcontext()
    return lifecycle.Lease(folder, patience=PREPARE_PATIENCE_S, ownership=ownership)
