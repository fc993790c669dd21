"""One cell or one pair in this process: what a submitit job, `gdm train` and `gdm eval` run.

Each task records where it runs (job id, array task id, host) in the cell's status.json before it
starts, and its error if it fails, so `gdm status` and the driver can tell what happened.
"""

from __future__ import annotations

import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gdm.cells import Cell, CellState, EvalPair, read_status, write_status
from gdm.config import ExperimentConfig
from launch.slurm_env import SlurmEnv, job_record, read_slurm_env

FitFn = Callable[..., Path]
EvalFn = Callable[..., dict]


def _default_fit() -> FitFn:
    from gdm.train import fit_cell

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


def _start(directory: Path, env: SlurmEnv) -> None:
    if env.rank == 0:  # one writer per job, also under DDP
        record = job_record(env, _submitit_job_id())
        if record["job_id"] is None:  # in-process: keep the id the driver recorded
            del record["job_id"]
        write_status(directory, state=CellState.RUNNING.value, error=None, host=socket.gethostname(),
                     started=time.time(), **record)


def _fail(directory: Path, env: SlurmEnv, err: Exception) -> None:
    if env.rank == 0:
        message = "".join(traceback.format_exception_only(type(err), err)).strip()
        write_status(directory, state=CellState.FAILED.value, error=message, failed=time.time())


def ddp_config(cfg: ExperimentConfig, env: SlurmEnv) -> ExperimentConfig:
    """Inside a multi-task srun step: one Lightning process per SLURM task (devices × num_nodes)."""
    if env.step_tasks <= 1:
        return cfg
    trainer = replace(cfg.trainer, devices=env.tasks_per_node, num_nodes=env.nodes)
    return replace(cfg, trainer=trainer)


def _slurm_plugins(env: SlurmEnv) -> list | None:
    """Lightning's SLURM environment for ranks; requeue is submitit's job, not Lightning's."""
    if not env.in_slurm:
        return None
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def run_train_task(cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, fit: FitFn | None = None,
                   env: SlurmEnv | None = None) -> Path:
    """Train `cell` here (resuming from its last.ckpt); a cell already done returns at once."""
    env = env or read_slurm_env()
    directory = cell.directory(cfg)
    if read_status(directory)["state"] == CellState.DONE.value:
        return directory
    _start(directory, env)
    fit = fit or _default_fit()
    plugins = _slurm_plugins(env)
    kwargs = {"plugins": plugins} if plugins else {}
    try:
        return fit(ddp_config(cfg, env), cell, progress=progress, **kwargs)
    except Exception as err:  # SystemExit (submitit's requeue) is not a failure and passes through
        _fail(directory, env, err)
        raise


def run_eval_task(cfg: ExperimentConfig, pair: EvalPair, *, progress: bool = False, evaluate: EvalFn | None = None,
                  env: SlurmEnv | None = None) -> dict:
    """Evaluate `pair` here; refuses to start unless every cell of the pair is done."""
    env = env or read_slurm_env()
    missing = [c.cell_id for c in pair.cells if read_status(c.directory(cfg))["state"] != CellState.DONE.value]
    if missing:
        raise RuntimeError(f"pair {pair.pair_id}: cells not done yet: {', '.join(missing)}")
    directory = pair.directory(cfg)
    _start(directory, env)
    evaluate = evaluate or _default_eval()
    try:
        return evaluate(cfg, pair, progress=progress)
    except Exception as err:
        _fail(directory, env, err)
        raise
