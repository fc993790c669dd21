"""The lifecycle of a cell or pair folder: its state, the one process that owns it, and every write
of its records. Nothing else writes status.json, submission.json or DONE.

States and transitions:

    pending ──(an owner takes the lease: `start`)──▶ running ──(`finish`)──▶ done
       ▲                                               │
       └──(`reopen`: an output failed its checksum)─── done        running ──(`fail`)──▶ failed
    failed ──(`start` again)──▶ running                 a dead owner's running ──▶ pending

Who writes what:
- the owner (the process holding the folder's lease; `launch.task.run_owned` is the one): settings.json and
  status.json (`start`, `record_step`, `fail`), DONE (`finish`, from the `Finished` its work returns), `reopen`,
  and in job mode its lease.json (`Lease`); under DDP that is rank 0 of the job, and ranks > 0 only read
  status.json (`status_record`), never the lease. The work itself (training a cell, evaluating a pair) writes
  only its output files, and returns what DONE records;
- the driver: submission.json only (`record_submission`, `record_lost`).

"running" is never read from status.json: it means the lease is held now, so a dead job never shows as
running. A second driver or a rerun after a crash sees the live owner and waits for it; once the
owner is dead the lease is free and the next owner takes over. The lease is held one of two ways (an
`Ownership`, chosen by `launch.ownership`):
- flock: an exclusive `flock` on `<folder>/lease`, released by the kernel when its process dies, however
  it dies (on NFS, Linux maps flock onto POSIX locks, which the server releases too). It needs a file
  system whose flock works, and works across nodes: not Lustre mounted `noflock` (every call fails with
  ENOSYS), nor `localflock` / NFS `local_lock` (each node sees only its own locks).
- job: `<folder>/lease.json` names the owner (SLURM job id, host, pid), created exclusively (a hard
  link, atomic on NFS and Lustre); the owner is alive while a judge given by launch/ (squeue, the
  process table) says so, and a dead owner's record is broken by the next one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

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


class FlockUnsupported(RuntimeError):
    """The run folder's file system does not support `flock` (the message names the folder and the fix)."""

    def __init__(self, directory: Path, err: OSError):
        self.directory, self.err = Path(directory), err
        super().__init__(f"{directory}: this file system does not support flock ({err.strerror or err}, "
                         f"errno {err.errno}; e.g. Lustre mounted noflock), so gdm cannot lock its folders; "
                         "set launch.ownership=job (owners recorded by SLURM job id, host and pid, checked "
                         "with squeue and the process table) or launch.ownership=auto")


# Errors flock gives where the file system does not implement it (Lustre noflock: ENOSYS; some FUSE
# and NFS mounts without a lock manager: EOPNOTSUPP / ENOLCK).
_NO_FLOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}


def flock_error(directory: Path) -> OSError | None:
    """None if `flock` works on the file system of `directory` (or of its nearest existing parent), else
    the error it gives. Probed with a shared lock on the directory itself: nothing is created, so it
    works on read-only storage too. It cannot see node-local locking (`localflock`): that one works here."""
    probe = Path(directory).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    fd = os.open(probe, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        pass  # held by someone: flock works
    except OSError as err:
        if err.errno in _NO_FLOCK:
            return err
        raise
    finally:
        os.close(fd)
    return None


OwnerJudge = Callable[[dict], bool]  # whether the process an owner record names is alive


def _never_judged(record: dict) -> bool:
    return True  # without a judge, an owner record counts as alive: never take a folder from a live owner


@dataclass(frozen=True)
class Ownership:
    """How a folder's one owner is recorded (see the module docstring). launch.owners makes the job one."""

    mode: Literal["flock", "job"] = "flock"
    me: dict = field(default_factory=dict)  # job: what this process records about itself (job id, host, pid)
    alive: OwnerJudge = _never_judged  # job: the judge of another owner's record


FLOCK = Ownership()


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


def done_intact(directory: Path) -> bool:
    """Whether the folder is finished with every output matching its checksum in DONE (reads only)."""
    return is_done(directory) and damaged_output(directory) is None


def owner_alive(directory: Path, ownership: Ownership = FLOCK) -> bool:
    """Whether a live process holds the folder's lease (read-only: a shared-lock probe, or the record)."""
    if ownership.mode == "job":
        record = lease_record(directory)
        return record is not None and ownership.alive(record)
    try:
        fd = os.open(Path(directory) / Files.LEASE, os.O_RDONLY)
    except OSError:
        return False
    try:
        _flock(directory, fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _flock(directory: Path, fd: int, operation: int) -> None:
    """fcntl.flock, with a file system that has none reported as FlockUnsupported (never a bare OSError)."""
    try:
        fcntl.flock(fd, operation)
    except OSError as err:  # BlockingIOError (held by another process) passes through as it is
        if err.errno in _NO_FLOCK:
            raise FlockUnsupported(directory, err) from err
        raise


def lease_record(directory: Path) -> dict | None:
    """The job-mode owner's record (lease.json), None when no one holds it, {} when it does not parse
    (it appears whole, through a hard link, so only a hand-edited or damaged one reads so)."""
    path = Path(directory) / Files.LEASE_JOB
    return _record(directory, Files.LEASE_JOB) if path.exists() else None


def status_record(directory: Path) -> dict:
    """status.json as its owner last wrote it ({} if none); reads no lease (DDP ranks > 0 use it)."""
    return _record(directory, Files.STATUS)


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


def status(directory: Path, queued: set[str] | None = None, ownership: Ownership = FLOCK) -> Status:
    """The folder's state. `queued`: job ids the scheduler still lists (None: unknown)."""
    record, sub = _record(directory, Files.STATUS), submission(directory)
    job_id = record.get("job_id") or sub.get("job_id")
    done = done_record(directory)
    if done is not None and (damage := damaged_output(directory)) is not None:
        return Status(State.FAILED, job_id, record.get("step"), f"{damage}: `gdm run` sets it aside and makes it "
                      "again", (), record)
    if done is not None:
        return Status(State.DONE, job_id, record.get("step"), None, tuple(done.get("flags", ())), record)
    if owner_alive(directory, ownership):
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


UNREADABLE_LEASE_S = 60.0  # a lease.json that does not parse counts as dead after this long


class Lease:
    """Exclusive ownership of a folder by this process while it works (a context manager).

    `acquire` retries for `patience` seconds (a probe of `owner_alive` holds a shared lock for
    microseconds) and raises LeaseBusy if a live process keeps it. A flock goes with the process; a
    job-mode record stays after a crash until the judge finds its owner dead.
    """

    def __init__(self, directory: Path, patience: float = 2.0, ownership: Ownership = FLOCK):
        self.directory, self.patience, self.ownership = Path(directory), patience, ownership
        self._fd: int | None = None
        self._token: str | None = None

    def acquire(self) -> Lease:
        self.directory.mkdir(parents=True, exist_ok=True)
        take = self._take_record if self.ownership.mode == "job" else self._take_flock
        deadline = time.monotonic() + self.patience
        while not take():
            if time.monotonic() > deadline:
                self.release()
                holder = lease_record(self.directory) if self.ownership.mode == "job" else None
                raise LeaseBusy(self.directory, holder or _record(self.directory, Files.STATUS))
            time.sleep(0.05)
        return self

    def _take_flock(self) -> bool:
        if self._fd is None:
            self._fd = os.open(self.directory / Files.LEASE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(self.directory, self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except FlockUnsupported:
            self.release()
            raise
        self._token = "flock"
        return True

    def _take_record(self) -> bool:
        """Create lease.json whole or not at all (a hard link fails if it exists); break a dead owner's."""
        token = uuid.uuid4().hex
        staged = self.directory / f"{Files.LEASE_JOB}.{token}"
        atomic_write_json(staged, {**self.ownership.me, "token": token, "since": time.time()})
        try:
            os.link(staged, self.directory / Files.LEASE_JOB)
        except FileExistsError:
            held = lease_record(self.directory)
            if held is not None and self._dead(held):
                _break_record(self.directory, held)
            return False
        finally:
            staged.unlink()
        self._token = token
        return True

    def _dead(self, held: dict) -> bool:
        """A record the judge finds dead; one that does not parse (hand-edited, a torn copy) once it is
        older than UNREADABLE_LEASE_S."""
        if held:
            return not self.ownership.alive(held)
        try:
            age = time.time() - (self.directory / Files.LEASE_JOB).stat().st_mtime
        except FileNotFoundError:
            return False
        return age > UNREADABLE_LEASE_S

    def release(self) -> None:
        if self._fd is not None:
            if self._token == "flock":
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        elif self._token is not None and (lease_record(self.directory) or {}).get("token") == self._token:
            (self.directory / Files.LEASE_JOB).unlink(missing_ok=True)
        self._token = None

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _break_record(directory: Path, dead: dict) -> None:
    """Remove a dead owner's lease.json. Moved aside first, so that of two breakers only one removes it,
    and put back when what was moved is not the dead record (a new owner took it in between)."""
    path = Path(directory) / Files.LEASE_JOB
    aside = path.with_name(f"{path.name}.dead-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another process broke it first
    moved = _record(directory, aside.name)
    if moved.get("token") != dead.get("token"):
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink()


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


@dataclass(frozen=True)
class Finished:
    """What a folder's work returns to its owner, for DONE: the work writes its outputs, the owner records them."""

    outputs: tuple[str, ...] = ()  # output files (names in the folder) whose sha256 DONE records, for `verify`
    flags: tuple[str, ...] = ()  # warnings in a few words, shown by `gdm status` (e.g. "does not denoise")
    facts: dict = field(default_factory=dict)  # further DONE fields (a cell: its step and validation PSNR)
    # run by the owner once DONE is written, with its record (W&B logging: a failure there costs no result)
    after_done: Callable[[dict], None] | None = None


def finish_with(directory: Path, finished: Finished) -> dict:
    """running → done from what the work returned (see `finish`)."""
    return finish(directory, finished.outputs, finished.flags, **finished.facts)


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
    problem = _output_problem(directory, name, ((done_record(directory) or {}).get("sha256") or {}).get(name))
    if problem is not None:
        reopen(directory, problem, aside=(name,))
        raise IntegrityError(f"{problem} (corrupt or altered); it was set aside and the next `gdm run` makes it again")
    return directory / name


def _output_problem(directory: Path, name: str, expected: str | None) -> str | None:
    """Why output `name` cannot be trusted (missing, or not the bytes DONE's checksum names), or None."""
    path = directory / name
    actual = file_sha256(path) if path.exists() else None
    if expected is not None and actual == expected:
        return None
    return f"{path} {'is missing' if actual is None else 'does not match the checksum recorded when it was written'}"


def damaged_output(directory: Path) -> str | None:
    """The first output of a done folder that fails its checksum in DONE, described; None when every one
    matches (or the folder is not done). Reads only: `gdm status` shows it, `reopen_if_damaged` acts."""
    damage = _first_damaged(Path(directory))
    return damage[1] if damage else None


def reopen_if_damaged(directory: Path) -> str | None:
    """A done folder with a damaged output is reopened (DONE and that file set aside), so it is made again;
    returns what was wrong, None when the folder is intact."""
    damage = _first_damaged(Path(directory))
    if damage is not None:
        reopen(directory, damage[1], aside=(damage[0],))
    return damage[1] if damage else None


def _first_damaged(directory: Path) -> tuple[str, str] | None:
    checksums = (done_record(directory) or {}).get("sha256") or {}
    problems = ((name, _output_problem(directory, name, digest)) for name, digest in sorted(checksums.items()))
    return next(((name, problem) for name, problem in problems if problem), None)


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
