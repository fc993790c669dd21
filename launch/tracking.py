"""Bookkeeping of submitted jobs: is a job over, and did its cell or pair finish?

A job's outcome is read from the run directory (DONE, status.json), not from the scheduler: SLURM
accounting may be off (sacct then reports nothing), and a requeued job keeps its id while it waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gdm.cells import Cell, CellState, EvalPair, read_status


@dataclass
class Tracked:
    """A cell or pair with a job out for it. `job` is None for a SLURM job adopted from an earlier run."""

    item: Cell | EvalPair
    directory: Path
    job_id: str
    job: Any = None


def item_id(item: Cell | EvalPair) -> str:
    return item.cell_id if isinstance(item, Cell) else item.pair_id


def state(directory: Path) -> str:
    return read_status(directory)["state"]


def is_done(directory: Path) -> bool:
    return state(directory) == CellState.DONE.value


def job_over(tracked: Tracked, live_ids: set[str] | None) -> bool:
    """True once the job can no longer change its cell: it left the SLURM queue, or it ended locally."""
    if live_ids is not None:  # on SLURM the queue is the truth (a requeued job is still listed)
        return tracked.job_id not in live_ids
    return tracked.job is None or bool(tracked.job.done())


def job_error(tracked: Tracked) -> str:
    """Why a job ended without marking its item done: its own record, its exception, or a guess."""
    recorded = read_status(tracked.directory).get("error")
    if recorded:
        return str(recorded)
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
