"""submitit job callables: picklable, and requeued on preemption or timeout.

On USR2 (preemption, or the time limit approaching) submitit calls `checkpoint`, which hands back a
fresh copy of the same job; submitit requeues it and the new run resumes from the cell's last.ckpt.
Nothing is saved inside the signal handler: training writes last.ckpt periodically on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import submitit

from gdm.cells import Cell, EvalPair
from gdm.config import ExperimentConfig
from launch.task import EvalFn, FitFn, run_eval_task, run_train_task


def use_cpus(count: int) -> None:
    """Intra-op threads of this job's process = the CPUs it was given (no oversubscription when
    several local jobs share a machine)."""
    import torch

    torch.set_num_threads(max(1, int(count)))


@dataclass
class TrainJob:
    """Train one cell (in every SLURM task of the job: Lightning DDP spans them)."""

    cfg: ExperimentConfig
    cell: Cell
    fit: FitFn | None = None  # None: gdm.train.fit_cell, imported inside the job

    def __call__(self) -> Path:
        use_cpus(self.cfg.launch.train.cpus_per_task)
        return run_train_task(self.cfg, self.cell, fit=self.fit)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self.__class__(self.cfg, self.cell, self.fit))


@dataclass
class EvalJob:
    """Evaluate one (dataset, n) pair; a requeued evaluation starts over (it is short)."""

    cfg: ExperimentConfig
    pair: EvalPair
    evaluate: EvalFn | None = None  # None: gdm.evaluate.eval_pair

    def __call__(self) -> dict:
        use_cpus(self.cfg.launch.eval.cpus_per_task)
        return run_eval_task(self.cfg, self.pair, evaluate=self.evaluate)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self.__class__(self.cfg, self.pair, self.evaluate))
