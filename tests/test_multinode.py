"""Lightning DDP across two SLURM hosts (the two-host cluster of slurm/start_two_host_cluster.sh).

Each host is a network namespace with its own address, hostname and slurmd; the tests select that
cluster with SLURM_CONF and go through the project's real path: submitit → TrainJob →
launch.task.run_train_task → gdm.training.fit.fit_cell, with a Lightning callback that records, on every
rank, where it runs and the weights it ends with. Skipped unless both hosts are up.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import lightning as L
import pytest
import torch

from gdm import lifecycle
from gdm.cells import Cell, expand_cells
from gdm.config import ExperimentConfig, load_config

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe travels to the jobs by value
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TWO_HOST_CONF = Path(os.environ.get("GDM_SLURM2_DIR", "/tmp/gdm-slurm2")) / "slurm.conf"
HOSTS = {"gdm-n1", "gdm-n2"}
# Long enough that a USR2 lands mid-training (a step across the two namespaces takes some 50 ms here).
STEPS = ["trainer.max_steps=400", "trainer.checkpoint_every=25", "trainer.log_every=25"]
# One CPU per task, so that two tasks fit on one host (2 CPUs) for the one-node reference.
RESOURCES = [
    "launch.executor=slurm",
    "launch.train.cpus_per_task=1",
    "launch.train.mem_gb=2",  # the one-node reference's two ranks share a node (gdm.config.train_memory_gb)
    "launch.train.time_min=10",
    "launch.train.max_requeues=5",
    "n_train=[4]",
    "splits=[A]",
    "wandb.mode=disabled",
]
# The trainer's layout stated as the job's (README: trainer.devices = launch.train.tasks_per_node).
TWO_NODES = ["launch.train.nodes=2", "launch.train.tasks_per_node=1", "trainer.num_nodes=2", "trainer.devices=1"]
ONE_NODE = ["launch.train.nodes=1", "launch.train.tasks_per_node=2", "trainer.num_nodes=1", "trainer.devices=2"]


def _two_hosts_up() -> str | None:
    """None when both hosts answer, else why not (the skip reason)."""
    if shutil.which("sinfo") is None or not TWO_HOST_CONF.is_file():
        return f"no two-host SLURM cluster ({TWO_HOST_CONF} missing; start it as root: " \
               "bash slurm/start_two_host_cluster.sh)"
    env = {**os.environ, "SLURM_CONF": str(TWO_HOST_CONF)}
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, env=env,
                             timeout=20).stdout
    except (subprocess.SubprocessError, OSError) as err:
        return f"the two-host cluster does not answer ({err})"
    usable = {line.split()[0] for line in out.splitlines()
              if line.split()[-1].rstrip("*") in ("idle", "mixed", "allocated", "completing")}
    return None if usable >= HOSTS else f"two-host cluster not up (sinfo: {out.strip() or 'nothing'}); " \
                                       "start it as root: bash slurm/start_two_host_cluster.sh"


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[None]:
    """SLURM_CONF → the two-host cluster for this module (sbatch exports it to the jobs too)."""
    reason = _two_hosts_up()
    if reason:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(TWO_HOST_CONF))
        patch.setenv("OMP_NUM_THREADS", "1")
        yield


class RankProbe(L.Callback):
    """Per rank: a JSON line at every training start (step, node rank, host, restart), and the final
    weights at the end, under `out`."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        record = {"rank": trainer.global_rank, "node_rank": trainer.node_rank, "world_size": trainer.world_size,
                  "step": trainer.global_step, "host": socket.gethostname(),
                  "restart": int(os.environ.get("SLURM_RESTART_COUNT", 0))}
        with open(self.out / f"starts-rank{trainer.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        weights = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        torch.save(weights, self.out / f"weights-rank{trainer.global_rank}.pt")


@dataclass
class ProbedFit:
    """gdm.training.fit.fit_cell, with a RankProbe writing under `out`."""

    out: Path

    def __call__(self, cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, plugins=None) -> Path:
        from gdm.training.fit import fit_cell

        return fit_cell(cfg, cell, progress=progress, plugins=plugins, callbacks=[RankProbe(self.out)])


@dataclass
class Run:
    """One submitted training job of one cell, and what its probe recorded."""

    cfg: ExperimentConfig
    cell: Cell
    out: Path
    job_id: str

    @property
    def directory(self) -> Path:
        return self.cell.directory(self.cfg)

    def starts(self, rank: int) -> list[dict]:
        path = self.out / f"starts-rank{rank}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def weights(self, rank: int) -> dict[str, torch.Tensor]:
        return torch.load(self.out / f"weights-rank{rank}.pt", weights_only=True)

    def model(self) -> dict[str, torch.Tensor]:
        return torch.load(self.directory / "model.pt", weights_only=True)["state_dict"]

    def log(self, stream: str = "err") -> str:
        """The tails of the job's logs (submitit's own messages are in `out`, Python's errors in `err`)."""
        return "\n".join(p.read_text()[-3000:] for p in sorted((self.cfg.run_dir / "jobs").rglob(f"*.{stream}")))


def tiny_config(root: Path, layout: list[str]) -> ExperimentConfig:
    from conftest import TINY_OVERRIDES

    return load_config(None, [*TINY_OVERRIDES, f"root={root / 'runs'}", *RESOURCES, *STEPS, *layout])


def submit(root: Path, layout: list[str], cell: Cell | None = None) -> Run:
    """Prepare the data here, then submit the training job of `cell` (default: the config's one cell)
    as `gdm run` would (a TrainJob)."""
    from gdm.data.prepare import prepare_dataset
    from launch.executors import job_name, make_executor
    from launch.jobs import TrainJob

    cfg = tiny_config(root, layout)
    cell = cell or expand_cells(cfg)[0]
    prepare_dataset(cfg.datasets["disks"], cfg.run_dir / "data" / "disks")
    out = root / "probe"
    out.mkdir(parents=True)
    executor = make_executor("slurm", cfg.run_dir / "jobs" / "%j", cfg.launch.train, 1,
                             name=job_name(cfg.name, "train"))
    job = executor.submit(TrainJob(cfg, cell, fit=ProbedFit(out)))
    return Run(cfg, cell, out, str(job.job_id))


def read_status(directory: Path) -> dict:
    """The owner's record (status.json) with the state and job id that gdm.lifecycle derives."""
    status = lifecycle.status(directory)
    return {**status.record, "state": status.state.value, "job_id": status.job_id, "error": status.error}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, run: Run) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}; status {read_status(run.directory)}\n{run.log()}")
        time.sleep(0.5)


def wait_done(run: Run, timeout: float = 240) -> dict:
    wait_for(lambda: read_status(run.directory)["state"] in ("done", "failed"), timeout, "the job", run)
    record = read_status(run.directory)
    assert record["state"] == "done", (record, run.log())
    return record


def assert_same_weights(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for key in ours:  # gloo sums two addends in either order to the same float: equal bit for bit
        assert torch.equal(ours[key], theirs[key]), (key, (ours[key] - theirs[key]).abs().max())


@pytest.fixture(scope="module")
def one_node_reference(two_hosts, tmp_path_factory) -> Run:
    """The two-node cell trained by 1 host × 2 tasks: the same two ranks and global batch, on one node.

    The cell is the two-node config's (its id seeds the initial weights and every draw); the layout
    is part of the cell hash, so the one-node config alone would name, and seed, another cell.
    """
    root = tmp_path_factory.mktemp("one-node")
    run = submit(root, ONE_NODE, cell=expand_cells(tiny_config(root, TWO_NODES))[0])
    record = wait_done(run)
    assert record["world_size"] == 2
    assert {s["node_rank"] for r in (0, 1) for s in run.starts(r)} == {0}
    return run


def ranks_without_flock(monkeypatch, log: Path) -> None:
    """The jobs submitted next run with tests/noflock's shim: flock raises ENOSYS in ranks > 0 (as on a
    node whose file system has none), and every attempt is logged: ranks > 0 must never touch a lease."""
    shim = Path(__file__).parent / "noflock"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("GDM_TEST_NOFLOCK", "ranks")
    monkeypatch.setenv("GDM_TEST_NOFLOCK_LOG", str(log))


def test_two_node_ddp_matches_one_node(one_node_reference, tmp_path, monkeypatch):
    log = tmp_path / "noflock.jsonl"
    ranks_without_flock(monkeypatch, log)
    run = submit(tmp_path, TWO_NODES)
    name = subprocess.run(["squeue", "-h", "--states=all", "-j", run.job_id, "-o", "%j"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert name == "gdm-tiny-train"
    record = wait_done(run)
    assert record["world_size"] == 2 and record["job_id"] == run.job_id
    starts = [run.starts(rank) for rank in (0, 1)]
    assert [len(s) for s in starts] == [1, 1], starts
    assert [s[0]["node_rank"] for s in starts] == [0, 1] and {s[0]["world_size"] for s in starts} == {2}
    assert {s[0]["host"] for s in starts} == HOSTS  # one rank per host
    assert_same_weights(run.weights(0), run.weights(1))
    assert_same_weights(run.model(), one_node_reference.model())
    shim = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["rank"] for e in shim if e["what"] == "loaded"} == {1}  # rank 1 ran with no flock at all
    assert [e for e in shim if e["what"] == "flock"] == []  # and never tried one: it followed status.json


def test_preempted_two_node_job_requeues_and_resumes(one_node_reference, tmp_path):
    run = submit(tmp_path, TWO_NODES)
    wait_for(lambda: (run.directory / "last.ckpt").exists() and (read_status(run.directory).get("step") or 0) >= 25,
             180, "a checkpoint at step ≥ 25", run)
    subprocess.run(["scancel", "--signal=USR2", run.job_id], check=True)  # preemption: every task gets USR2
    record = wait_done(run, timeout=300)  # the requeued job waits cred_expire (20 s here) to start again
    assert record["job_id"] == run.job_id  # the same job, requeued
    # A 10-minute job counts every USR2 as its time limit: one of launch.train.max_requeues=5 used.
    assert f"Requeued job {run.job_id} (4 remaining timeouts)" in run.log("out")
    for rank in (0, 1):
        first, second = run.starts(rank)
        assert (first["step"], first["restart"]) == (0, 0)
        assert second["restart"] == 1 and 25 <= second["step"] < 400, second  # resumed, not restarted
        assert first["node_rank"] == second["node_rank"] == rank
    assert_same_weights(run.weights(0), run.weights(1))
    assert_same_weights(run.model(), one_node_reference.model())  # resume on two hosts = one uninterrupted node
