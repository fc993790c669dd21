"""What a job learns from SLURM's environment: its ids and the shape of its srun step.

The only place in gdm that reads SLURM_* variables; everything else takes a `SlurmEnv`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    )


def job_record(env: SlurmEnv, fallback_job_id: str | None = None) -> dict:
    """The job fields a task writes into its cell's status.json."""
    return {
        "job_id": env.public_job_id or fallback_job_id,
        "slurm_job_id": env.job_id,
        "array_job_id": env.array_job_id,
        "array_task_id": env.array_task_id,
        "world_size": env.step_tasks,  # processes of this srun step: the DDP world size
    }
