"""The Lightning side of helpers.py (apart because importing Lightning takes seconds): callbacks that tests
add to a training, and fit_cell with them, picklable for local and SLURM jobs."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import lightning as L

from gdm.cells import Cell
from gdm.config import ExperimentConfig

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs cannot import this module


class AtStep(L.Callback):
    """Does `act(trainer, module)` before the training step at global step `at` (after the checkpoint of
    step `at`, when checkpoint_every divides it)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.at:
            self.act(trainer, module)

    def act(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        raise NotImplementedError


class Stop(AtStep):
    """Simulated preemption before step `at` (after the checkpoint at step `at` was written)."""

    def act(self, trainer, module):
        raise RuntimeError("simulated preemption")


class RecordLr(L.Callback):
    """The learning rate each optimisation step uses, by global step: read once the step's gradients are in,
    just before Adam steps (Lightning's on_before_optimizer_step)."""

    def __init__(self):
        self.lr: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.lr[trainer.global_step] = [group["lr"] for group in optimizer.param_groups]


class HoldOnce(AtStep):
    """A fixed point to signal a job at: the first time rank r reaches step `at`, it writes the file
    `<marker>-rank<r>` and sleeps until a signal ends the job, or `limit_s` passes. A resumed run finds its
    file there and trains on.

    So a test that waits for the files knows the job is mid-training when its signal lands, however loaded
    the machine: no race between the signal and a fixed number of steps. The weights are untouched.
    until_sigterm: also stop holding once Lightning has received SIGTERM (its handler only sets
    trainer.received_sigterm, and a sleep goes on after a handler that returns): the step then runs and
    Lightning stops the fit after it, as it would mid-training."""

    def __init__(self, at: int, marker: Path, limit_s: float = 300.0, until_sigterm: bool = False):
        super().__init__(at)
        self.marker, self.limit_s, self.until_sigterm = Path(marker), limit_s, until_sigterm

    def act(self, trainer, module):
        held = self.marker.with_name(f"{self.marker.name}-rank{trainer.global_rank}")
        if held.exists():
            return
        held.parent.mkdir(parents=True, exist_ok=True)
        held.touch()
        deadline = time.monotonic() + self.limit_s
        # a signal's handler runs during the sleep (submitit's USR2 exits rank 0; Lightning's SIGTERM sets a flag)
        while time.monotonic() < deadline and not (self.until_sigterm and trainer.received_sigterm):
            time.sleep(0.1)


@dataclass
class FitWith:
    """gdm.training.fit.fit_cell with extra Lightning callbacks; with `hold_at`, each cell also holds once
    there (HoldOnce, files `<markers>/<cell id>-rank<r>`; until_sigterm as HoldOnce's)."""

    callbacks: tuple[L.Callback, ...] = ()
    hold_at: int | None = None
    markers: Path | None = None
    until_sigterm: bool = False

    def __call__(self, cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, plugins=None):
        from gdm.training.fit import fit_cell

        holds = ([HoldOnce(self.hold_at, self.markers / cell.cell_id, until_sigterm=self.until_sigterm)]
                 if self.hold_at is not None else [])
        return fit_cell(cfg, cell, progress=progress, plugins=plugins, callbacks=[*self.callbacks, *holds])

    def holding(self, cell: Cell, ranks: int = 1) -> bool:
        """Every rank of the cell's training holds at `hold_at`."""
        return all((self.markers / f"{cell.cell_id}-rank{rank}").exists() for rank in range(ranks))
