"""The lifecycle of a cell or pair folder: its state, the one process that owns it, and every write
of its records. Nothing else writes status.json, submission.json or DONE.

States and transitions:

    pending ──(an owner takes the lease: `start`)──▶ running ──(`finish`)──▶ done
       ▲                                               │
       └──(`reopen`: an output failed its checksum)─── done        running ──(`fail`)──▶ failed
    failed ──(`start` again)──▶ running                 a dead owner's running ──▶ pending

Who writes what:
- the owner (the process holding the folder's lease): status.json (`start`, `record_step`, `fail`),
  DONE (`finish`), and `reopen`; under DDP that is rank 0 of the job;
- the driver: submission.json only (`record_submission`, `record_lost`).

"running" is never read from a file: it means the lease is held now, so a dead job never shows as
running. The lease is an exclusive `flock` on `<folder>/lease`, released by the kernel when its
process dies, however it dies (on NFS, Linux maps flock onto POSIX locks, which the server releases
too). A second driver or a rerun after a crash sees the live owner and waits for it; once the owner
is dead the lease is free and the next owner takes over.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from gdm.cells import Files
from gdm.io import atomic_write_json, file_sha256, read_json


class State(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class LeaseBusy(RuntimeError):
    """Another live process owns the folder; `owner` is what it recorded about itself."""

    def __init__(self, directory: Path, owner: dict):
        self.directory, self.owner = directory, owner
        who = ", ".join(f"{k} {owner[k]}" for k in ("job_id", "host", "pid") if owner.get(k) is not None)
        super().__init__(f"{directory} is owned by a live process ({who or 'unknown'})")


class IntegrityError(RuntimeError):
    """A file that later steps trust does not match the checksum recorded when it was written."""


# --- reading -----------------------------------------------------------------------------------


def _record(directory: Path, name: str) -> dict:
    """A JSON record of the folder, {} when absent or unreadable (a reader never fails on a record)."""
    try:
        value = read_json(Path(directory) / name)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def done_record(directory: Path) -> dict | None:
    """The DONE record (finish time, output checksums, flags), None when the folder is not done."""
    path = Path(directory) / Files.DONE
    return _record(directory, Files.DONE) if path.exists() else None


def is_done(directory: Path) -> bool:
    """Whether the folder is finished: its owner wrote DONE last, after every output."""
    return (Path(directory) / Files.DONE).exists()


def owner_alive(directory: Path) -> bool:
    """Whether a live process holds the folder's lease (probed with a shared lock, read-only)."""
    try:
        fd = os.open(Path(directory) / Files.LEASE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def submission(directory: Path) -> dict:
    """The driver's record of the last job it submitted for the folder ({} if none)."""
    return _record(directory, Files.SUBMISSION)


@dataclass(frozen=True)
class Status:
    """What `gdm status` shows of a folder, derived from DONE, the lease and the two records."""

    state: State
    job_id: str | None = None
    step: int | None = None
    error: str | None = None
    flags: tuple[str, ...] = ()  # e.g. "does not denoise"
    record: dict = field(default_factory=dict)  # status.json as the owner left it


def status(directory: Path, queued: set[str] | None = None) -> Status:
    """The folder's state. `queued`: job ids the scheduler still lists (None: unknown)."""
    record, sub = _record(directory, Files.STATUS), submission(directory)
    job_id = record.get("job_id") or sub.get("job_id")
    done = done_record(directory)
    if done is not None:
        return Status(State.DONE, job_id, record.get("step"), None, tuple(done.get("flags", ())), record)
    if owner_alive(directory):
        return Status(State.RUNNING, job_id, record.get("step"), None, (), record)
    if record.get("state") == State.FAILED.value and not _submitted_after(sub, record):
        return Status(State.FAILED, job_id, record.get("step"), record.get("error"), (), record)
    if sub.get("lost") and not (queued and str(sub.get("job_id")) in queued):
        return Status(State.FAILED, sub.get("job_id"), record.get("step"), sub["lost"], (), record)
    note = None
    if not _submitted_after(sub, record):
        if record.get("state") == State.RUNNING.value:
            note = f"its owner ({record.get('job_id') or record.get('pid')}) died; the next run resumes it"
        elif record.get("state") == State.PENDING.value:
            note = record.get("error")  # reopened: why it must be made again
    return Status(State.PENDING, job_id, record.get("step"), note, (), record)


def _submitted_after(sub: dict, record: dict) -> bool:
    """A newer submission supersedes what the previous owner recorded."""
    return float(sub.get("submitted", 0)) > float(record.get("started", 0) or 0)


# --- the lease ---------------------------------------------------------------------------------


class Lease:
    """Exclusive ownership of a folder by this process while it works (a context manager).

    `acquire` retries for `patience` seconds (a probe of `owner_alive` holds a shared lock for
    microseconds) and raises LeaseBusy if a live process keeps it. The lock goes with the process.
    """

    def __init__(self, directory: Path, patience: float = 2.0):
        self.directory, self.patience = Path(directory), patience
        self._fd: int | None = None

    def acquire(self) -> Lease:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / Files.LEASE, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LeaseBusy(self.directory, _record(self.directory, Files.STATUS)) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# --- the owner's transitions -------------------------------------------------------------------


def write_settings(directory: Path, settings: dict) -> None:
    """settings.json: what the folder's hash stands for. Written once; a different one is refused."""
    path = Path(directory) / Files.SETTINGS
    if path.exists():
        stored = _record(directory, Files.SETTINGS)
        if stored and stored != _normalised(settings):
            raise IntegrityError(f"{path} holds other settings than this folder's hash stands for; "
                                 f"move {directory} aside and run again")
        if stored:
            return
    atomic_write_json(path, settings)


def _normalised(value: Any) -> Any:
    """As it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def start(directory: Path, settings: dict, **owner: Any) -> dict:
    """pending/failed → running: the owner records itself (job id, host, pid) and the settings."""
    write_settings(directory, settings)
    record = {"state": State.RUNNING.value, "error": None, "started": time.time(), "pid": os.getpid(), **owner}
    atomic_write_json(Path(directory) / Files.STATUS, record)
    return record


def record_step(directory: Path, step: int) -> None:
    """The training step reached (written with each checkpoint)."""
    _update(directory, step=int(step))


def fail(directory: Path, error: str) -> None:
    """running → failed, with the error in one line."""
    _update(directory, state=State.FAILED.value, error=error, failed=time.time())


def finish(directory: Path, outputs: tuple[str, ...] = (), flags: tuple[str, ...] = (), **facts: Any) -> dict:
    """running → done: DONE holds the sha256 of each output file (verified by `verify`) and any flags."""
    directory = Path(directory)
    record = {"finished": time.time(), "sha256": {name: file_sha256(directory / name) for name in outputs},
              "flags": list(flags), **facts}
    _update(directory, state=State.DONE.value, error=None, flags=list(flags), **facts)
    atomic_write_json(directory / Files.DONE, record)
    return record


def verify(directory: Path, name: str) -> Path:
    """The path of output `name` of a done folder, after checking it against its checksum in DONE.

    A missing, truncated or altered file raises IntegrityError naming it, and the folder is reopened
    (DONE and the bad file set aside), so the next `gdm run` makes it again.
    """
    directory = Path(directory)
    path, done = directory / name, done_record(directory) or {}
    expected = (done.get("sha256") or {}).get(name)
    actual = file_sha256(path) if path.exists() else None
    if expected is None or actual != expected:
        reason = "is missing" if actual is None else "does not match the checksum recorded when it was written"
        reopen(directory, f"{path} {reason}", aside=(name,))
        raise IntegrityError(f"{path} {reason} (corrupt or altered); it was set aside and the next "
                             "`gdm run` makes it again")
    return path


def reopen(directory: Path, reason: str, aside: tuple[str, ...] = ()) -> None:
    """done → pending: move DONE and the named files aside (never deleted) and record why."""
    directory = Path(directory)
    for name in (Files.DONE, *aside):
        set_aside(directory / name)
    _update(directory, state=State.PENDING.value, error=reason)


def set_aside(path: Path) -> Path | None:
    """Rename `path` to `<name>.bad-<unix time>` beside it (kept for inspection); None if absent."""
    path = Path(path)
    target = path.with_name(f"{path.name}.bad-{time.time_ns()}")
    try:
        os.rename(path, target)
    except FileNotFoundError:  # absent, or another rank of the same job moved it first
        return None
    return target


def _update(directory: Path, **fields: Any) -> None:
    atomic_write_json(Path(directory) / Files.STATUS, {**_record(directory, Files.STATUS), **fields})


# --- the driver's records ----------------------------------------------------------------------


def record_submission(directory: Path, job_id: str | None = None) -> None:
    """The driver is about to submit a job for the folder (written before the job can start)."""
    record = {"job_id": None if job_id is None else str(job_id), "submitted": time.time()}
    atomic_write_json(Path(directory) / Files.SUBMISSION, record)


def attach_job(directory: Path, job_id: str) -> None:
    """The id the scheduler gave the job just submitted (what `status` shows until an owner starts)."""
    atomic_write_json(Path(directory) / Files.SUBMISSION, {**submission(directory), "job_id": str(job_id)})


def record_lost(directory: Path, job_id: str, error: str) -> None:
    """The driver's verdict on a job that ended without its owner recording done or failed."""
    atomic_write_json(Path(directory) / Files.SUBMISSION, {**submission(directory), "job_id": str(job_id),
                                                           "lost": error, "ended": time.time()})
