"""The driver of `gdm run`: data → training arrays → evaluation pool → report.

Cells not done go out as job arrays; each eval pair goes out as soon as both of its cells are done
(on SLURM at once, held by `afterok` on its cells' jobs). A failed cell is recorded with its error,
the grid goes on, and its pair is skipped. Everything done is skipped, so a second run is a no-op and
a killed run picks up where it stopped (training resumes from last.ckpt).

Ownership (gdm.lifecycle): a folder whose lease a live process holds — a second driver's job, or an
orphan of a driver that was killed — is adopted: this driver waits for that owner instead of starting
a second job, and takes over (submits its own) only once the owner is gone without finishing. The
driver writes nothing into a folder but its submission record.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gdm import lifecycle
from gdm.cells import Cell, EvalPair, Item, expand_cells, expand_pairs, jobs_dir, write_resolved_config
from gdm.config import ExperimentConfig
from launch import owners, slurm
from launch.executors import JOB_KINDS, job_name, make_executor
from launch.jobs import EvalJob, GridSteps, PrepareJob, ReportJob, TrainJob, prepare_all
from launch.task import Outcome, done_or_reopened

MAX_TAKEOVERS = 2  # times one driver submits again for an item whose owner vanished without finishing


def run_grid(cfg: ExperimentConfig, *, progress: bool = True, steps: GridSteps | None = None) -> dict:
    """Run every cell and pair of `cfg` not done yet; returns what happened (see `GridDriver.summary`)."""
    steps = steps or GridSteps()
    cfg = owners.settle(cfg)  # once, here: the jobs (and config.yaml, and the report) get the settled mode
    write_resolved_config(cfg)
    driver = GridDriver(cfg, steps, progress)
    driver.prepare()
    summary = driver.run()
    if steps.report is not None:
        steps.report(cfg)
    return summary


def submit_detached(cfg: ExperimentConfig, *, steps: GridSteps | None = None) -> dict[str, Any]:
    """`gdm run --detach` (SLURM): submit everything with its dependencies, the report included, and return.

    prepare → one training array (afterok prepare) → each pair (afterok on its cells' tasks) → report
    (afterany on every pair). What is done is skipped and what a live job owns is left to it.
    """
    if cfg.launch.executor != "slurm":
        raise ValueError(f"--detach needs launch.executor=slurm (it is {cfg.launch.executor}): elsewhere the "
                         "driver itself runs the evaluation pool, so it has to stay")
    steps = steps or GridSteps()
    cfg = owners.settle(cfg)
    write_resolved_config(cfg)
    driver = GridDriver(cfg, steps, progress=False)
    return driver.submit_all()


SLURM_POLL_CAP_S = 60.0  # default cap of the backoff on SLURM: submitit's own squeue polling backs off to 60 s too


@dataclass
class PollBackoff:
    """Seconds between the driver's polls: `first` after a change, ×`factor` per quiet poll, at most `cap`.

    Jobs that run for days are then polled once a `cap`, while a burst of changes (jobs ending, pairs
    going out) is still followed within `first` seconds.
    """

    first: float
    cap: float
    factor: float = 1.5
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.first

    @classmethod
    def of(cls, cfg: ExperimentConfig) -> PollBackoff:
        launch = cfg.launch
        default_cap = SLURM_POLL_CAP_S if launch.executor == "slurm" else launch.poll_seconds
        cap = default_cap if launch.poll_max_seconds is None else launch.poll_max_seconds
        return cls(launch.poll_seconds, max(cap, launch.poll_seconds))

    def next(self) -> float:
        """The wait before the next poll; the one after it is longer (up to the cap)."""
        wait, self.current = self.current, min(self.cap, self.current * self.factor)
        return wait

    def reset(self) -> None:
        self.current = self.first


@dataclass
class Tracked:
    """A cell or pair this driver waits on: its job, or (job None) an owner or queued job it adopted."""

    item: Item
    job_id: str | None
    job: Any = None


@dataclass
class GridDriver:
    """Submits and watches the jobs of one `run_grid` call."""

    cfg: ExperimentConfig
    steps: GridSteps
    progress: bool = False
    summary: dict[str, Any] = field(default_factory=lambda: {
        "already_done": 0, "trained": [], "evaluated": [], "done_elsewhere": [], "skipped": [], "failed": []})

    def __post_init__(self) -> None:
        self.on_slurm = self.cfg.launch.executor == "slurm"
        self.ownership = owners.ownership(self.cfg)
        self.cells: list[Cell] = expand_cells(self.cfg)
        self.pairs: list[EvalPair] = expand_pairs(self.cfg)
        self.live: dict[str, Tracked] = {}  # item id → what it waits on
        self.failed_cells: set[str] = set()
        self.takeovers: dict[str, int] = {}
        self._executors: dict[str, Any] = {}
        self.poll_waits: list[float] = []  # seconds slept between polls, in order (tests read the backoff)
        self.bar = tqdm(total=len(self.cells) + len(self.pairs), desc=f"gdm {self.cfg.name}",
                        unit="job", disable=not self.progress)

    def folder(self, item: Item):
        return item.directory(self.cfg)

    def status(self, directory: Path, queued: set[str] | None = None) -> lifecycle.Status:
        return lifecycle.status(directory, queued, self.ownership)

    def prepare(self) -> None:
        """Data before any cell: on SLURM as a job of its own (not on the login node), else right here."""
        if not self.on_slurm:
            prepare_all(self.cfg, self.steps, self.progress)
            return
        job = self.executor("prepare").submit(PrepareJob(self.cfg, self.steps))
        tqdm.write(f"gdm: preparing the data in SLURM job {job.job_id}", file=sys.stderr)
        job.result()  # raises, with the job's error, if preparation failed

    # --- detached submission ---------------------------------------------------------------------
    def submit_all(self) -> dict[str, Any]:
        cells = [c for c in self.cells if not self._done(c)]
        pairs = [p for p in self.pairs if not self._done(p)]
        prepare = self.executor("prepare").submit(PrepareJob(self.cfg, self.steps))
        queued = slurm.live_job_ids() or set()
        jobs: dict[str, str] = {}
        fresh = [c for c in cells if not self._adopt(c, queued)]
        for cell in fresh:
            lifecycle.record_submission(self.folder(cell))
        array = self.executor("train").submit_array([TrainJob(self.cfg, c, self.steps.fit) for c in fresh],
                                                    dependencies=[str(prepare.job_id)])
        for cell, job in zip(fresh, array, strict=True):
            self._track(cell, job)
        jobs.update({c.cell_id: str(self.live[c.cell_id].job_id) for c in cells
                     if c.cell_id in self.live and self.live[c.cell_id].job_id is not None})
        pair_jobs = [self._submit_detached_pair(p, jobs, str(prepare.job_id)) for p in pairs]
        report = self.executor("report").submit(ReportJob(self.cfg, self.steps), dependencies=pair_jobs or
                                                [str(prepare.job_id)], after="afterany")
        return {"prepare": str(prepare.job_id), "train": [jobs[c.cell_id] for c in cells if c.cell_id in jobs],
                "eval": pair_jobs, "report": str(report.job_id)}

    def _submit_detached_pair(self, pair: EvalPair, cell_jobs: dict[str, str], prepare: str) -> str:
        waits = [cell_jobs[c.cell_id] for c in pair.cells if c.cell_id in cell_jobs] or [prepare]
        lifecycle.record_submission(self.folder(pair))
        job = self.executor("eval").submit(EvalJob(self.cfg, pair, self.steps.evaluate), dependencies=waits)
        self._track(pair, job)
        return str(job.job_id)

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> dict:
        self.waiting_cells = [c for c in self.cells if not self._skip_done(c)]
        self.waiting_pairs = [p for p in self.pairs if not self._skip_done(p)]
        self._adopt_owned()
        backoff = PollBackoff.of(self.cfg)
        while self.waiting_cells or self.waiting_pairs or self.live:
            changed = self._submit_pairs() | self._submit_cells() | self._reap()
            if not changed and not self.live:  # guards the loop: should be unreachable
                raise RuntimeError(f"gdm run: nothing running and nothing can start: {self.waiting_pairs}")
            if changed:
                backoff.reset()
            else:
                self.poll_waits.append(backoff.next())
                time.sleep(self.poll_waits[-1])
        self.bar.close()
        return self.summary

    def _done(self, item: Item) -> bool:
        """Whether `item` is done with intact outputs; a damaged one is set aside here, to be made again."""
        return done_or_reopened(item, self.folder(item), say=lambda line: tqdm.write(line, file=sys.stderr))

    def _skip_done(self, item: Item) -> bool:
        if self._done(item):
            self.summary["already_done"] += 1
            self.bar.update(1)
            return True
        return False

    # --- executors and slots --------------------------------------------------------------------
    def executor(self, kind: str):
        """The train or eval executor, made on first use (a no-op rerun never touches the cluster)."""
        if kind not in self._executors:
            launch = self.cfg.launch
            resources = getattr(launch, "eval" if kind == "report" else kind)
            self._executors[kind] = make_executor(launch.executor, jobs_dir(self.cfg, kind), resources,
                                                  launch.max_parallel, name=job_name(self.cfg.name, kind))
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
        for cell in batch:  # before submission: an in-process job runs inside submit
            lifecycle.record_submission(self.folder(cell))
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
                lifecycle.record_submission(self.folder(pair))
                job = self.executor("eval").submit(EvalJob(self.cfg, pair, self.steps.evaluate), dependencies=ready)
                self._track(pair, job)
                changed = True
        return changed

    def _pair_readiness(self, pair: EvalPair) -> str | list[str] | None:
        """'skip' if a cell failed; the job ids to wait on (afterok) when it may go out; else None."""
        ids = [c.cell_id for c in pair.cells]
        if any(i in self.failed_cells for i in ids):
            return "skip"
        pending = [c.cell_id for c in pair.cells if not lifecycle.is_done(self.folder(c))]
        if not pending:
            return []
        if self.on_slurm and all(i in self.live and self.live[i].job is not None for i in pending):
            return [str(self.live[i].job_id) for i in pending]
        return None

    def _track(self, item: Item, job: Any) -> None:
        self.live[item.item_id] = Tracked(item, str(job.job_id), job)
        lifecycle.attach_job(self.folder(item), str(job.job_id))

    # --- adoption: live owners (any executor) and queued SLURM jobs of an earlier driver ---------
    def _adopt_owned(self) -> None:
        queued = slurm.live_job_ids() if self.on_slurm else None
        for waiting in (self.waiting_cells, self.waiting_pairs):
            for item in list(waiting):
                if self._adopt(item, queued or set()):
                    waiting.remove(item)

    def _adopt(self, item: Item, queued: set[str]) -> bool:
        directory = self.folder(item)
        status = self.status(directory, queued)
        job_id = lifecycle.submission(directory).get("job_id")
        if lifecycle.owner_alive(directory, self.ownership) or (job_id is not None and str(job_id) in queued):
            self.live[item.item_id] = Tracked(item, status.job_id)
            return True
        return False  # never submitted, or its job is gone: submit (a cell resumes from last.ckpt)

    # --- completion -----------------------------------------------------------------------------
    def _reap(self) -> bool:
        queued = slurm.live_job_ids() if self.on_slurm and self.live else None
        if self.on_slurm and self.live and queued is None:
            return False  # squeue did not answer: judge nothing this round rather than guess
        over = [t for t in self.live.values() if self._over(t, queued)]
        for tracked in over:
            del self.live[tracked.item.item_id]
            self._resolve(tracked)
        return bool(over)

    def _over(self, tracked: Tracked, queued: set[str] | None) -> bool:
        """True once nothing of this driver's can still change the item: its job ended, its owner died."""
        if tracked.job is None:  # adopted: over when no one holds the lease and no job is queued for it
            in_queue = queued is not None and tracked.job_id is not None and str(tracked.job_id) in queued
            return not in_queue and not lifecycle.owner_alive(self.folder(tracked.item), self.ownership)
        if queued is not None:  # on SLURM the queue is the truth (a requeued job is still listed)
            return str(tracked.job_id) not in queued
        return bool(tracked.job.done())

    def _resolve(self, tracked: Tracked) -> None:
        item, directory = tracked.item, self.folder(tracked.item)
        outcome = job_outcome(tracked.job)
        if lifecycle.is_done(directory):
            ours = outcome == Outcome.DONE
            key = ("trained" if isinstance(item, Cell) else "evaluated") if ours else "done_elsewhere"
            self.summary[key].append(item.item_id)
        elif lifecycle.owner_alive(directory, self.ownership):  # BUSY: another live owner has it; wait for that one
            self.live[item.item_id] = Tracked(item, self.status(directory).job_id)
            return
        elif isinstance(item, EvalPair) and self._pair_readiness(item) == "skip":
            self._resolve_skipped(item)  # cancelled by SLURM: a cell of it failed
            return
        elif self._owner_vanished(tracked, outcome) and self._take_over(item):
            return
        else:
            self._resolve_failed(tracked)
        self.bar.update(1)

    def _owner_vanished(self, tracked: Tracked, outcome: Outcome | None) -> bool:
        """The item was someone else's (adopted, or our job found it BUSY) and that owner is gone unfinished."""
        failed = self.status(self.folder(tracked.item)).state == lifecycle.State.FAILED
        return (tracked.job is None or outcome == Outcome.BUSY) and not failed

    def _take_over(self, item: Item) -> bool:
        """Queue the item again (a cell resumes from last.ckpt); False once it was tried MAX_TAKEOVERS times."""
        count = self.takeovers.get(item.item_id, 0)
        if count >= MAX_TAKEOVERS:
            return False
        self.takeovers[item.item_id] = count + 1
        (self.waiting_cells if isinstance(item, Cell) else self.waiting_pairs).append(item)
        return True

    def _resolve_failed(self, tracked: Tracked) -> None:
        item, directory = tracked.item, self.folder(tracked.item)
        status = self.status(directory)
        error = status.error if status.state == lifecycle.State.FAILED else None
        if error is None:  # the owner recorded nothing: the job was killed, or failed before it started
            error = job_error(tracked)
            lifecycle.record_lost(directory, str(tracked.job_id), error)
        self.summary["failed"].append(item.item_id)
        if isinstance(item, Cell):
            self.failed_cells.add(item.cell_id)
        tqdm.write(f"gdm: {item.item_id} failed: {error}", file=sys.stderr)

    def _resolve_skipped(self, pair: EvalPair) -> None:
        self.summary["skipped"].append(pair.pair_id)
        self.bar.update(1)


def job_outcome(job: Any) -> Outcome | None:
    """What a finished job's task reported (None: no job, no result, or the job raised)."""
    if job is None or _exception(job) is not None:
        return None
    paths = getattr(job, "paths", None)
    if paths is not None and not paths.result_pickle.exists():
        return None
    try:
        result = job.result()
    except Exception:
        return None
    return Outcome(result) if result in {o.value for o in Outcome} else None


def job_error(tracked: Tracked) -> str:
    """Why a job ended without its owner recording anything: its exception, or a guess."""
    exception = _exception(tracked.job)
    if exception is not None:
        lines = [line for line in str(exception).strip().splitlines() if line.strip()]
        return lines[-1] if lines else type(exception).__name__
    return f"job {tracked.job_id} ended without finishing (cancelled, killed, out of memory or out of time?)"


def _exception(job: Any) -> BaseException | None:
    if job is None:
        return None
    paths = getattr(job, "paths", None)
    if paths is not None and not paths.result_pickle.exists():
        return None  # exception() would wait for a result that never comes
    try:
        return job.exception()
    except Exception as err:  # an unreadable result is an error too
        return err


def cancel_experiment(cfg: ExperimentConfig) -> list[str]:
    """`gdm cancel`: on SLURM, scancel the experiment's jobs (named gdm-<experiment>-<kind>); elsewhere,
    SIGTERM the local jobs of its current cells and pairs by their own pids (the live owners, and the
    submitit processes the driver recorded). Returns what was cancelled."""
    if cfg.launch.executor == "slurm":
        ids = slurm.job_ids_named([job_name(cfg.name, kind) for kind in JOB_KINDS])
        if ids is None:
            raise RuntimeError("squeue did not answer; nothing was cancelled")
        slurm.cancel(ids)
        return ids
    host, ownership = socket.gethostname(), owners.ownership(cfg)
    cancelled = []
    for item in [*expand_cells(cfg), *expand_pairs(cfg)]:
        directory = item.directory(cfg)
        record = lifecycle.status_record(directory)
        owned_here = lifecycle.owner_alive(directory, ownership) and record.get("host") == host
        pids = {record.get("pid")} if owned_here else set()
        pids.add(_local_job_pid(lifecycle.submission(directory).get("job_id")))
        for pid in pids - {None}:
            try:
                os.kill(int(pid), signal.SIGTERM)
                cancelled.append(f"{item.item_id} (pid {pid})")
            except ProcessLookupError:
                pass
    return cancelled


def _local_job_pid(job_id: Any) -> int | None:
    """A local submitit job's id is its process id: that pid, if it is still that job's process."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (TypeError, ValueError, OSError):
        return None
    return int(job_id) if b"submitit" in cmdline else None
