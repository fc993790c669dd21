"""How this process owns folders (`launch.ownership`), decided once per command and job.

gdm.lifecycle keeps the lease; this module decides which kind, and judges job-mode owners, since that
needs what only launch/ may touch: the host, the process table and squeue.

- `settle(cfg)`: `auto` becomes `flock` where the run folder's file system supports flock, else `job`,
  with one warning naming the folder, what the file system did and the key to set; an explicit
  `flock` on such a file system is refused with FlockUnsupported. The driver settles once and hands
  the settled config to its jobs, which therefore never probe again.
- `ownership(cfg, env)`: the lifecycle.Ownership to pass to Lease / status / owner_alive.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gdm import lifecycle
from gdm.config import ExperimentConfig
from launch import slurm
from launch.slurm import SlurmEnv, read_slurm_env

QUEUE_MAX_AGE_S = 5.0  # how long one squeue answer serves the judge (status of many folders: one call)


def settle(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with launch.ownership `flock` or `job` (see the module docstring)."""
    mode = cfg.launch.ownership
    if mode == "job":
        return cfg
    error = lifecycle.flock_error(cfg.run_dir)
    if error is None:
        return _with_mode(cfg, "flock")
    if mode == "flock":
        raise lifecycle.FlockUnsupported(cfg.run_dir, error)
    print(f"gdm: {cfg.run_dir} does not support flock ({error.strerror or error}, errno {error.errno}; e.g. "
          "Lustre mounted noflock): folders are owned by job instead (SLURM job id, host and pid, checked "
          "with squeue and the process table). Set launch.ownership=job to choose this and silence the "
          "warning.", file=sys.stderr)
    return _with_mode(cfg, "job")


def _with_mode(cfg: ExperimentConfig, mode: str) -> ExperimentConfig:
    return replace(cfg, launch=replace(cfg.launch, ownership=mode))


def ownership(cfg: ExperimentConfig, env: SlurmEnv | None = None) -> lifecycle.Ownership:
    """The lease kind this process uses for `cfg`'s folders (settling `auto` if the caller did not)."""
    if settle(cfg).launch.ownership == "flock":
        return lifecycle.FLOCK
    me = this_process(env or read_slurm_env())
    return lifecycle.Ownership("job", me=me, alive=JobJudge(me))


def this_process(env: SlurmEnv) -> dict:
    """What a job-mode owner records about itself: enough for any judge to tell whether it still runs."""
    pid = os.getpid()
    return {"job_id": env.public_job_id, "slurm_job_id": env.job_id, "restart_count": env.restart_count,
            "host": socket.gethostname(), "pid": pid, "pid_start": process_start(pid)}


def process_start(pid: object) -> str | None:
    """The start time of process `pid` (field 22 of /proc/<pid>/stat, in clock ticks since boot), so a
    reused pid is not taken for the owner; None when there is no such process."""
    try:
        stat = open(f"/proc/{int(pid)}/stat").read()  # noqa: SIM115 - one read of a pseudo-file
    except (TypeError, ValueError, OSError):
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # fields after "(comm)" start at field 3


@dataclass
class JobJudge:
    """Whether the owner a lease.json names is alive, judged from here:

    - a SLURM owner: its job is still in the queue (squeue --me; a requeued job stays listed), unless
      it is an earlier attempt of this very job (SLURM runs one attempt at a time, so that one is dead);
    - a local owner on this host: its pid runs, with the same start time;
    - anything this process cannot check (another host's pid, squeue not answering): alive, so a live
      owner's folder is never taken; `gdm status` shows it running until its job id leaves the queue.
    """

    me: dict
    queue: Callable[[], set[str] | None] = slurm.live_job_ids  # this user's queued job ids (None: no answer)
    _queued: set[str] | None = None
    _asked: float = field(default=-1e9)

    def __call__(self, record: dict) -> bool:
        if record.get("slurm_job_id"):
            if record["slurm_job_id"] == self.me.get("slurm_job_id"):
                return _same_process(record, self.me)
            queued = self.queued()
            return True if queued is None else str(record.get("job_id")) in queued
        if record.get("host") != self.me.get("host"):
            return True
        return record.get("pid_start") is not None and process_start(record.get("pid")) == record["pid_start"]

    def queued(self) -> set[str] | None:
        if time.monotonic() - self._asked > QUEUE_MAX_AGE_S:
            self._queued, self._asked = self.queue(), time.monotonic()
        return self._queued


def _same_process(record: dict, me: dict) -> bool:
    return all(record.get(key) == me.get(key) for key in ("restart_count", "host", "pid", "pid_start"))
