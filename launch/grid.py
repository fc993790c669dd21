"""The driver of `gdm run`: data → training arrays → evaluation pool → report.

Cells not done go out as job arrays; each eval pair goes out as soon as both of its cells are done
(on SLURM at once, held by `afterok` on its cells' jobs). A failed cell is recorded with its error,
the grid goes on, and its pair is skipped. Everything done is skipped, so a second run is a no-op and
a killed run picks up where it stopped (training resumes from last.ckpt).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from gdm.cells import Cell, CellState, EvalPair, expand_cells, expand_pairs, read_status, write_status
from gdm.config import ExperimentConfig, to_yaml
from gdm.io import atomic_write_text
from launch import slurm_cli
from launch.executors import make_executor
from launch.jobs import EvalJob, TrainJob
from launch.steps import GridSteps
from launch.tracking import Tracked, is_done, item_id, job_error, job_over


def write_resolved_config(cfg: ExperimentConfig) -> None:
    """The config this run used, beside its results (atomic: a reader sees all of it or none)."""
    atomic_write_text(cfg.run_dir / "config.yaml", to_yaml(cfg))


def prepare_all(cfg: ExperimentConfig, steps: GridSteps, progress: bool) -> None:
    for name, data in cfg.datasets.items():
        steps.prepare(data, cfg.run_dir / "data" / name, progress=progress)


def run_grid(cfg: ExperimentConfig, *, progress: bool = True, steps: GridSteps | None = None) -> dict:
    """Run every cell and pair of `cfg` not done yet; returns what happened (see `GridDriver.summary`)."""
    steps = steps or GridSteps()
    write_resolved_config(cfg)
    prepare_all(cfg, steps, progress)
    driver = GridDriver(cfg, steps, progress)
    summary = driver.run()
    if steps.report is not None:
        steps.report(cfg)
    return summary


@dataclass
class GridDriver:
    """Submits and watches the jobs of one `run_grid` call."""

    cfg: ExperimentConfig
    steps: GridSteps
    progress: bool = False
    summary: dict[str, Any] = field(default_factory=lambda: {
        "already_done": 0, "trained": [], "evaluated": [], "skipped": [], "failed": []})

    def __post_init__(self) -> None:
        self.on_slurm = self.cfg.launch.executor == "slurm"
        self.cells: list[Cell] = expand_cells(self.cfg)
        self.pairs: list[EvalPair] = expand_pairs(self.cfg)
        self.live: dict[str, Tracked] = {}  # item id → its job out
        self.failed_cells: set[str] = set()
        self._executors: dict[str, Any] = {}
        self.bar = tqdm(total=len(self.cells) + len(self.pairs), desc=f"gdm {self.cfg.name}",
                        unit="job", disable=not self.progress)

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        self.waiting_cells = [c for c in self.cells if not self._skip_done(c.directory(self.cfg))]
        self.waiting_pairs = [p for p in self.pairs if not self._skip_done(p.directory(self.cfg))]
        if self.on_slurm:
            self._adopt_running_jobs()
        while self.waiting_cells or self.waiting_pairs or self.live:
            changed = self._submit_pairs() | self._submit_cells() | self._reap()
            if not changed and not self.live:  # guards the loop: should be unreachable
                raise RuntimeError(f"gdm run: nothing running and nothing can start: {self.waiting_pairs}")
            if not changed:
                time.sleep(self.cfg.launch.poll_seconds)
        self.bar.close()
        return self.summary

    def _skip_done(self, directory) -> bool:
        if is_done(directory):
            self.summary["already_done"] += 1
            self.bar.update(1)
            return True
        return False

    # --- executors and slots --------------------------------------------------------------------
    def executor(self, kind: str):
        """The train or eval executor, made on first use (a no-op rerun never touches the cluster)."""
        if kind not in self._executors:
            launch = self.cfg.launch
            folder = self.cfg.run_dir / "jobs" / kind / "%j"
            self._executors[kind] = make_executor(launch.executor, folder, getattr(launch, kind), launch.max_parallel)
        return self._executors[kind]

    def free_slots(self, kind: str) -> int:
        slots = self.executor(kind).slots
        return 1 << 30 if slots is None else max(0, slots - len(self.live))

    # --- submission -----------------------------------------------------------------------------
    def _submit_cells(self) -> bool:
        if not self.waiting_cells:
            return False
        batch = self.waiting_cells[:self.free_slots("train")]
        if not batch:
            return False
        self.waiting_cells = self.waiting_cells[len(batch):]
        for cell in batch:  # queued: written before the job can write `running`
            write_status(cell.directory(self.cfg), state=CellState.PENDING.value, error=None)
        jobs = self.executor("train").submit_array([TrainJob(self.cfg, cell, self.steps.fit) for cell in batch])
        for cell, job in zip(batch, jobs, strict=True):
            self._track(cell, job)
        return True

    def _submit_pairs(self) -> bool:
        changed = False
        for pair in list(self.waiting_pairs):
            ready = self._pair_readiness(pair)
            if ready == "skip":
                self.waiting_pairs.remove(pair)
                self._resolve_skipped(pair)
                changed = True
            elif ready is not None and self.free_slots("eval") > 0:
                self.waiting_pairs.remove(pair)
                self._submit_pair(pair, ready)
                changed = True
        return changed

    def _pair_readiness(self, pair: EvalPair) -> str | list[str] | None:
        """'skip' if a cell failed; the job ids to wait on (afterok) when it may go out; else None."""
        ids = [c.cell_id for c in pair.cells]
        if any(i in self.failed_cells for i in ids):
            return "skip"
        pending = [i for i in ids if not is_done(self._cell(i).directory(self.cfg))]
        if not pending:
            return []
        if self.on_slurm and all(i in self.live for i in pending):
            return [self.live[i].job_id for i in pending]
        return None

    def _submit_pair(self, pair: EvalPair, dependencies: list[str]) -> None:
        write_status(pair.directory(self.cfg), state=CellState.PENDING.value, error=None)
        job = self.executor("eval").submit(EvalJob(self.cfg, pair, self.steps.evaluate), dependencies=dependencies)
        self._track(pair, job)

    def _track(self, item: Cell | EvalPair, job: Any) -> None:
        directory = item.directory(self.cfg)
        self.live[item_id(item)] = Tracked(item, directory, str(job.job_id), job)
        write_status(directory, job_id=str(job.job_id), submitted=time.time())

    # --- adoption of jobs still queued from an earlier driver (SLURM) ---------------------------
    def _adopt_running_jobs(self) -> None:
        live_ids = slurm_cli.live_job_ids() or set()
        for cell in list(self.waiting_cells):
            if self._adopt(cell, live_ids):
                self.waiting_cells.remove(cell)
        for pair in list(self.waiting_pairs):
            if self._adopt(pair, live_ids):
                self.waiting_pairs.remove(pair)

    def _adopt(self, item: Cell | EvalPair, live_ids: set[str]) -> bool:
        directory = item.directory(self.cfg)
        job_id = read_status(directory).get("job_id")
        if job_id is None or str(job_id) not in live_ids:
            return False  # never submitted, or its job is gone: resubmit (it resumes from last.ckpt)
        self.live[item_id(item)] = Tracked(item, directory, str(job_id))
        return True

    # --- completion -----------------------------------------------------------------------------
    def _reap(self) -> bool:
        live_ids = slurm_cli.live_job_ids() if self.on_slurm and self.live else None
        if self.on_slurm and self.live and live_ids is None:
            return False  # squeue did not answer: judge nothing this round rather than guess
        over = [t for t in self.live.values() if job_over(t, live_ids)]
        for tracked in over:
            del self.live[item_id(tracked.item)]
            self._resolve(tracked)
        return bool(over)

    def _resolve(self, tracked: Tracked) -> None:
        key = "trained" if isinstance(tracked.item, Cell) else "evaluated"
        if is_done(tracked.directory):
            self.summary[key].append(item_id(tracked.item))
        elif isinstance(tracked.item, EvalPair) and self._pair_readiness(tracked.item) == "skip":
            self._resolve_skipped(tracked.item)  # cancelled by SLURM: a cell of it failed
            return
        else:
            self._resolve_failed(tracked)
        self.bar.update(1)

    def _resolve_failed(self, tracked: Tracked) -> None:
        error = job_error(tracked)
        write_status(tracked.directory, state=CellState.FAILED.value, error=error)
        self.summary["failed"].append(item_id(tracked.item))
        if isinstance(tracked.item, Cell):
            self.failed_cells.add(tracked.item.cell_id)
        tqdm.write(f"gdm: {item_id(tracked.item)} failed: {error}", file=sys.stderr)

    def _resolve_skipped(self, pair: EvalPair) -> None:
        write_status(pair.directory(self.cfg), state=CellState.PENDING.value,
                     error="skipped: a cell of this pair failed")
        self.summary["skipped"].append(pair.pair_id)
        self.bar.update(1)

    def _cell(self, cell_id: str) -> Cell:
        return next(c for c in self.cells if c.cell_id == cell_id)
