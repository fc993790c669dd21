"""submitit job callables: picklable, and requeued on preemption or timeout.

On USR2 (preemption, or the time limit approaching) submitit calls `checkpoint`; the
`submitit.helpers.Checkpointable` default hands back a fresh copy of the same call, which submitit
requeues, and the new run resumes from the cell's last.ckpt. Nothing is saved inside the signal
handler: training writes last.ckpt periodically on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import submitit

from gdm.cells import Cell, EvalPair
from gdm.config import ExperimentConfig
from launch.steps import GridSteps
from launch.task import EvalFn, FitFn, Outcome, run_eval_task, run_train_task


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
    fit: FitFn | None = None  # None: gdm.train.fit_cell, imported inside the job

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
        from launch.grid import prepare_all

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
