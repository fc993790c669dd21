"""The SLURM interface of gdm: what a job learns from SLURM's environment, and the commands the driver
runs (squeue, scancel, scontrol).

`read_slurm_env` is the only place in gdm that reads SLURM_* variables; everything else takes a
`SlurmEnv`. Accounting (sacct) may be disabled — it is on the local test cluster — so liveness comes
from squeue.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmEnv:
    """The SLURM facts of the current process (all None / 1 outside SLURM)."""

    job_id: str | None = None  # SLURM_JOB_ID (for an array task, its own unique id)
    array_job_id: str | None = None  # SLURM_ARRAY_JOB_ID
    array_task_id: int | None = None  # SLURM_ARRAY_TASK_ID
    rank: int = 0  # SLURM_PROCID: global rank of this task
    step_tasks: int = 1  # SLURM_STEP_NUM_TASKS: processes of this srun step (1 in the batch script)
    nodes: int = 1  # SLURM_JOB_NUM_NODES
    restart_count: int = 0  # SLURM_RESTART_COUNT: how many times this job was requeued (its attempt)

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None

    @property
    def public_job_id(self) -> str | None:
        """The id squeue and submitit show: `ARRAY_TASK` for an array task, else the job id."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.step_tasks // max(1, self.nodes))


def read_slurm_env(environ: Mapping[str, str] | None = None) -> SlurmEnv:
    """Parse SLURM's variables from `environ` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    task = env.get("SLURM_ARRAY_TASK_ID")
    return SlurmEnv(
        job_id=env.get("SLURM_JOB_ID"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID"),
        array_task_id=int(task) if task not in (None, "") else None,
        rank=int(env.get("SLURM_PROCID", 0)),
        step_tasks=int(env.get("SLURM_STEP_NUM_TASKS", 1)),
        nodes=int(env.get("SLURM_JOB_NUM_NODES", env.get("SLURM_NNODES", 1))),
        restart_count=int(env.get("SLURM_RESTART_COUNT") or 0),
    )


def job_record(env: SlurmEnv, fallback_job_id: str | None = None) -> dict:
    """The job fields a task writes into its cell's status.json."""
    return {
        "job_id": env.public_job_id or fallback_job_id,
        "slurm_job_id": env.job_id,
        "array_job_id": env.array_job_id,
        "array_task_id": env.array_task_id,
        "world_size": env.step_tasks,  # processes of this srun step: the DDP world size
        "restart_count": env.restart_count,  # which attempt of the job (ranks > 0 follow their own attempt)
    }


# --- the commands the driver runs ------------------------------------------------------------

DEFAULT_MAX_ARRAY_SIZE = 1000


def _run(args: list[str]) -> str | None:
    """stdout of a SLURM command, or None when SLURM is absent or the command fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices run 0..MaxArraySize-1), or 1000 if unknown."""
    text = _run(["scontrol", "show", "config"]) or ""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def live_job_ids() -> set[str] | None:
    """Ids of this user's queued or running jobs (array tasks as `A_T`); None if squeue failed."""
    text = _run(["squeue", "--me", "-h", "-r", "-o", "%i"])
    return None if text is None else {line.strip() for line in text.splitlines() if line.strip()}


def job_ids_named(names: Iterable[str]) -> list[str] | None:
    """Ids of this user's queued or running jobs with one of `names`; None if squeue failed."""
    text = _run(["squeue", "--me", "-h", "-o", "%i", f"--name={','.join(names)}"])
    if text is None:
        return None
    # pending array tasks are listed as `A_[2-3%2]`; scancel takes the array A itself for them
    ids = {line.strip().split("_[")[0] for line in text.splitlines() if line.strip()}
    return sorted(ids)


def cancel(job_ids: Iterable[str]) -> None:
    ids = [str(job_id) for job_id in job_ids]
    if ids:
        _run(["scancel", *ids])
