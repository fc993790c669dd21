"""Executors by name: where submitted jobs run.

- "slurm": submitit's AutoExecutor on a SLURM cluster, resources from `cfg.launch.train/eval`.
- "local": submitit's LocalExecutor — one subprocess per job on this machine, no cluster.
- "inprocess": jobs run at submission, in the driver process (tests, debugging).

Every executor offers `submit(fn)` and `submit_array(fns)`; jobs offer `job_id`, `done()` and
`exception()`. `slots` is how many jobs the driver may have running at once (None: the cluster decides).

SLURM conventions: jobs are named `gdm-<experiment>-<kind>` (`job_name`), so squeue shows what each
job is and `scancel --name` can select an experiment's jobs; USR2 comes `signal_delay_s` before the
time limit, and submitit then requeues the job (at most `max_requeues` times for time limits) through
the job's `checkpoint()`; the requeued job resumes from the cell's last.ckpt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from gdm.config import ResourcesConfig

JOB_KINDS = ("train", "eval", "prepare", "report")


def job_name(experiment: str, kind: str) -> str:
    """The SLURM job name of an experiment's jobs of one kind: `gdm-<experiment>-<kind>`."""
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}; choose one of {', '.join(JOB_KINDS)}")
    return f"gdm-{experiment}-{kind}"


class InProcessJob:
    """A finished 'job': the call already ran in this process; holds its result or exception."""

    def __init__(self, job_id: str, fn: Callable[[], Any]):
        self.job_id = job_id
        self._result: Any = None
        self._error: BaseException | None = None
        try:
            self._result = fn()
        except Exception as err:  # a failing cell must not stop the grid
            self._error = err

    def done(self, force_check: bool = False) -> bool:
        return True

    def exception(self) -> BaseException | None:
        return self._error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result


@dataclass
class InProcessExecutor:
    """Runs each submitted call immediately, one after another, in the driver process."""

    slots: int | None = 1
    _count: int = field(default=0, repr=False)

    def submit(self, fn: Callable[[], Any], dependencies: Sequence[str] = (), after: str = "afterok") -> InProcessJob:
        self._count += 1
        return InProcessJob(f"inprocess-{self._count}", fn)

    def submit_array(self, fns: Sequence[Callable[[], Any]], dependencies: Sequence[str] = ()) -> list[InProcessJob]:
        return [self.submit(fn) for fn in fns]


@dataclass
class SubmititExecutor:
    """A submitit executor (local or slurm) behind the two calls the driver makes."""

    executor: submitit.Executor
    slots: int | None
    max_array: int = 1000

    def submit(self, fn: Callable[[], Any], dependencies: Sequence[str] = (), after: str = "afterok") -> submitit.Job:
        """One job; with `dependencies` it waits on those SLURM jobs (`after`: afterok — never start before
        they succeeded, cancelled if one fails — or afterany, e.g. a report after every evaluation)."""
        with self._depending_on(dependencies, after):
            return self.executor.submit(fn)

    def submit_array(self, fns: Sequence[Callable[[], Any]], dependencies: Sequence[str] = ()) -> list[submitit.Job]:
        """One job array per chunk of at most `max_array` calls (each waiting on `dependencies`, afterok)."""
        jobs: list[submitit.Job] = []
        with self._depending_on(dependencies, "afterok"):
            for start in range(0, len(fns), self.max_array):
                with self.executor.batch():
                    chunk = [self.executor.submit(fn) for fn in fns[start:start + self.max_array]]
                jobs += chunk
        return jobs

    @contextmanager
    def _depending_on(self, dependencies: Sequence[str], after: str):
        if dependencies:
            deps = {"dependency": f"{after}:" + ":".join(map(str, dependencies)), "kill_on_invalid_dep": "yes"}
            self.executor.update_parameters(slurm_additional_parameters=deps)
        try:
            yield
        finally:
            if dependencies:
                self.executor.update_parameters(slurm_additional_parameters={})


def _slurm_parameters(resources: ResourcesConfig, max_parallel: int, name: str | None = None) -> dict[str, Any]:
    """submitit AutoExecutor parameters of one job kind; unset options are left to the cluster."""
    params: dict[str, Any] = {
        "timeout_min": resources.time_min, "tasks_per_node": resources.tasks_per_node,
        "nodes": resources.nodes, "cpus_per_task": resources.cpus_per_task, "mem_gb": resources.mem_gb,
        "slurm_array_parallelism": max_parallel, "slurm_setup": list(resources.setup),
        "slurm_signal_delay_s": resources.signal_delay_s,  # --signal=USR2@s: time to requeue before the kill
        # one rank that fails ends the step's other ranks at once (they would wait in a collective for 30 min)
        "slurm_srun_args": ["--kill-on-bad-exit=1"],
    }
    if name is not None:
        params["name"] = name
    if resources.gpus_per_node:  # --gpus-per-node=0 is refused by clusters without GRES
        params["gpus_per_node"] = resources.gpus_per_node
    optional = {"slurm_partition": resources.partition, "slurm_account": resources.account,
                "slurm_qos": resources.qos, "slurm_constraint": resources.constraint}
    params.update({key: value for key, value in optional.items() if value is not None})
    return params


def slurm_executor(folder: Path, resources: ResourcesConfig, max_parallel: int,
                   name: str | None = None) -> SubmititExecutor:
    from launch.slurm import max_array_size

    # A time limit counts against max_requeues; a preemption does not (submitit tells them apart by
    # the time the job has run).
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=resources.max_requeues)
    executor.update_parameters(**_slurm_parameters(resources, max_parallel, name))
    return SubmititExecutor(executor, slots=None, max_array=max_array_size())


def local_executor(folder: Path, resources: ResourcesConfig, max_parallel: int,
                   name: str | None = None) -> SubmititExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="local")
    executor.update_parameters(timeout_min=resources.time_min, name=name)  # name=None: left unset
    # LocalExecutor starts every job at once: the driver itself keeps at most max_parallel running.
    return SubmititExecutor(executor, slots=max_parallel)


def inprocess_executor(folder: Path, resources: ResourcesConfig, max_parallel: int,
                       name: str | None = None) -> InProcessExecutor:
    return InProcessExecutor()


EXECUTORS: dict[str, Callable[..., Any]] = {
    "slurm": slurm_executor,
    "local": local_executor,
    "inprocess": inprocess_executor,
}


def make_executor(kind: str, folder: Path, resources: ResourcesConfig, max_parallel: int = 1, *,
                  name: str | None = None):
    """The executor named `kind`, writing submitit's job files (logs, pickles) under `folder`.

    name: the job name its jobs get on SLURM, `job_name(experiment, job kind)` (None: submitit's default).
    """
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[kind](Path(folder), resources, max(1, max_parallel), name=name)
