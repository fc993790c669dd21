"""One cell or one pair in this process: what a submitit job, `gdm train` and `gdm eval` run.

`run_owned` is the one owner of a folder's life, for every caller (submitit jobs on any executor, the
grid driver's in-process jobs, `gdm train`, `gdm eval`, each DDP rank). It takes the folder's lease
(gdm.lifecycle): at most one process trains a cell or evaluates a pair at a time, whoever started it.
A task that finds the folder done with intact outputs returns at once (a damaged output is set aside
and the folder made again); one that finds a live owner returns BUSY without touching anything, and
the driver waits for that owner. The owner writes settings.json and records where it runs (job id,
array task id, host, pid), calls the work (`fit_cell`, `eval_pair`: they only write their outputs),
writes DONE with the checksums of the outputs the work returns, and on failure records its error.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from gdm import lifecycle
from gdm.cells import Cell, EvalPair, Item, item_settings
from gdm.config import ExperimentConfig
from launch import owners
from launch.slurm import SlurmEnv, job_record, read_slurm_env

FitFn = Callable[..., lifecycle.Finished | None]  # fit_cell: None on DDP ranks > 0 (they write nothing)
EvalFn = Callable[..., lifecycle.Finished]  # eval_pair
Work = Callable[[], lifecycle.Finished | None]  # an item's work, its arguments bound


class Outcome(str, Enum):
    """What a task did: the driver tells work done here from work another owner did or is doing."""

    DONE = "done"  # this task trained or evaluated the item
    ALREADY_DONE = "already_done"  # the folder was done when the task looked
    BUSY = "busy"  # another live process owns the folder


def use_own_wandb_service() -> None:
    """Log through a W&B service of this process, never an inherited one. W&B saves its service's address in
    WANDB_SERVICE ("3-<pid of the starter>-…"), which child processes inherit: submitit's local jobs, and
    SLURM jobs under sbatch's exported environment. A job killed while logging through its parent's service
    leaves its run id "in use" there, and the requeued job's resume of that same (deterministic) id is then
    refused. So a job drops an address that another process wrote; W&B starts one of its own."""
    token = os.environ.get("WANDB_SERVICE")
    if token and token.split("-")[1:2] != [str(os.getpid())]:
        del os.environ["WANDB_SERVICE"]


def _default_fit() -> FitFn:
    from gdm.training.fit import fit_cell

    return fit_cell


def _default_eval() -> EvalFn:
    from gdm.evaluate import eval_pair

    return eval_pair


def _submitit_job_id() -> str | None:
    """The local executor's job id (SLURM ids come from the environment)."""
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job
        return None


def _owner(env: SlurmEnv) -> dict:
    record = job_record(env, _submitit_job_id())
    return {**record, "host": socket.gethostname()}


def _error_line(err: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(err), err)).strip()


def check_layout(cfg: ExperimentConfig, env: SlurmEnv) -> ExperimentConfig:
    """Inside a multi-task srun step, one Lightning process runs per SLURM task: the step's layout must be
    the trainer's (devices × num_nodes), which the cell's settings, and so its folder, stand for."""
    if env.step_tasks > 1 and (env.tasks_per_node, env.nodes) != (cfg.trainer.devices, cfg.trainer.num_nodes):
        raise ValueError(f"this SLURM step runs {env.tasks_per_node} task(s) per node on {env.nodes} node(s) but the "
                         f"config says trainer.devices={cfg.trainer.devices}, trainer.num_nodes="
                         f"{cfg.trainer.num_nodes}; pass trainer.devices={env.tasks_per_node} "
                         f"trainer.num_nodes={env.nodes} (or submit with that layout)")
    return cfg


def _slurm_plugins(env: SlurmEnv) -> list | None:
    """Lightning's SLURM environment for ranks; requeue is submitit's job, not Lightning's."""
    if not env.in_slurm:
        return None
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def run_owned(cfg: ExperimentConfig, item: Item, work: Work, env: SlurmEnv) -> Outcome:
    """Run `work` as the one owner of `item`'s folder: check DONE, write the settings, work, write DONE.
    DDP ranks > 0 follow their rank 0 (never the lease, never DONE)."""
    directory = item.directory(cfg)
    if env.rank != 0:
        return _follow(directory, env, work)
    if lifecycle.done_intact(directory):
        return Outcome.ALREADY_DONE
    try:
        lease = lifecycle.Lease(directory, ownership=owners.ownership(cfg, env)).acquire()
    except lifecycle.LeaseBusy:
        return Outcome.BUSY
    try:
        if done_or_reopened(item, directory):  # finished since the first look; a damaged output reopens
            return Outcome.ALREADY_DONE
        lifecycle.start(directory, item_settings(cfg, item), **_owner(env))
        try:
            finished = _finished(item, work())
            done = lifecycle.finish_with(directory, finished)
        except Exception as err:  # SystemExit (submitit's requeue) is not a failure and passes through
            lifecycle.fail(directory, _error_line(err))
            raise
        if finished.after_done is not None:  # after DONE: nothing it does (W&B) can cost the result
            finished.after_done(done)
        return Outcome.DONE
    finally:
        lease.release()


def done_or_reopened(item: Item, directory: Path, say: Callable[[str], object] | None = None) -> bool:
    """Whether the folder is done with intact outputs; a damaged output is set aside (with DONE) and said, so
    the folder is made again. The owner asks under its lease; the driver before it submits."""
    if (damage := lifecycle.reopen_if_damaged(directory)) is not None:
        (say or _to_stderr)(f"gdm: {item.item_id} is made again: {damage} (set aside)")
    return lifecycle.is_done(directory)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _finished(item: Item, value: object) -> lifecycle.Finished:
    """What the work returned, which must say what DONE records (a stand-in returning anything else is refused)."""
    if not isinstance(value, lifecycle.Finished):
        raise TypeError(f"the work of {item.item_id} returned {type(value).__name__}, not the gdm.lifecycle.Finished "
                        "that its DONE records (outputs to checksum, flags); return one and leave DONE to the owner")
    return value


def _follow(directory: Path, env: SlurmEnv, work: Work, patience: float = 120.0) -> Outcome:
    """A DDP rank > 0 works once status.json says its own job's rank 0 owns the folder (else it would hang
    in DDP's rendezvous). It reads files only, never the lease: its node may not see rank 0's lock
    (node-local flock), or have none at all (Lustre noflock). It writes nothing: what its work returns is
    rank 0's to record. A done folder counts only with intact outputs (rank 0 makes a damaged one again).
    `patience` bounds the wait only when rank 0 did not take the folder (another live owner had it: BUSY)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if _owned_by_my_job(lifecycle.status_record(directory), env):
            work()
            return Outcome.DONE
        if lifecycle.done_intact(directory):
            return Outcome.ALREADY_DONE
        time.sleep(0.5)
    return Outcome.BUSY


def use_threads(count: int) -> None:
    """Fix this process's intra-op threads to the cell's `trainer.threads`: sums over threads are ordered by
    the count, so one value for every entry point keeps one trajectory (and a resume bit-identical)."""
    import torch

    torch.set_num_threads(count)


def _owned_by_my_job(record: dict, env: SlurmEnv) -> bool:
    """status.json names this attempt of this job as the running owner (a requeued job's earlier attempt
    left the same job id behind: the restart count tells the two apart)."""
    return (record.get("state") == lifecycle.State.RUNNING.value and record.get("slurm_job_id") == env.job_id
            and int(record.get("restart_count") or 0) == env.restart_count)


def run_train_task(cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, fit: FitFn | None = None,
                   env: SlurmEnv | None = None) -> Outcome:
    """Train `cell` here (resuming from its last.ckpt) unless it is done or owned by another process."""
    env = env or read_slurm_env()
    fit = fit or _default_fit()
    use_own_wandb_service()
    use_threads(cfg.trainer.threads)
    plugins = _slurm_plugins(env)
    kwargs = {"plugins": plugins} if plugins else {}
    return run_owned(cfg, cell, lambda: fit(check_layout(cfg, env), cell, progress=progress, **kwargs), env)


def run_eval_task(cfg: ExperimentConfig, pair: EvalPair, *, progress: bool = False, evaluate: EvalFn | None = None,
                  env: SlurmEnv | None = None) -> Outcome:
    """Evaluate `pair` here; refuses to start unless every cell of the pair is done."""
    env = env or read_slurm_env()
    missing = [c.cell_id for c in pair.cells if not lifecycle.is_done(c.directory(cfg))]
    if missing:
        raise RuntimeError(f"pair {pair.pair_id}: cells not done yet: {', '.join(missing)}")
    evaluate = evaluate or _default_eval()
    use_own_wandb_service()
    return run_owned(cfg, pair, lambda: evaluate(cfg, pair, progress=progress), env)
