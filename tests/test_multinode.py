"""Lightning DDP across two SLURM hosts (the two-host cluster of slurm/start_two_host_cluster.sh).

Each host is a network namespace with its own address, hostname and slurmd; the tests select that
cluster with SLURM_CONF and go through the project's real path: submitit → TrainJob →
launch.task.run_train_task → gdm.training.fit.fit_cell, with a Lightning callback that records, on every
rank, where it runs and the weights it ends with. Skipped unless both hosts are up.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import lightning as L
import pytest
import torch
from helpers import assert_same_weights, prepared, read_status, saved_weights, slurm_cluster_up, tiny_config, wait_for
from lightning_helpers import FitWith

from gdm.cells import Cell, expand_cells
from gdm.config import ExperimentConfig

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the probe travels to the jobs by value
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TWO_HOST_CONF = Path(os.environ.get("GDM_SLURM2_DIR", "/tmp/gdm-slurm2")) / "slurm.conf"
HOSTS = {"gdm-n1", "gdm-n2"}
# A step across the two namespaces takes some 50 ms here; the preempted job holds at HOLD_AT until signalled.
STEPS = ["trainer.max_steps=400", "trainer.checkpoint_every=25", "trainer.log_every=25"]
HOLD_AT = 25  # a checkpoint step (trainer.checkpoint_every)
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


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[None]:
    """SLURM_CONF → the two-host cluster for this module (sbatch exports it to the jobs too); skips unless
    both of its hosts are up."""
    if reason := slurm_cluster_up(TWO_HOST_CONF, HOSTS):
        pytest.skip(f"{reason}; start the two-host cluster as root: bash slurm/start_two_host_cluster.sh")
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
class Run:
    """One submitted training job of one cell, and what its probe recorded."""

    cfg: ExperimentConfig
    cell: Cell
    out: Path
    job_id: str
    fit: FitWith

    @property
    def directory(self) -> Path:
        return self.cell.directory(self.cfg)

    def starts(self, rank: int) -> list[dict]:
        path = self.out / f"starts-rank{rank}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def weights(self, rank: int) -> dict[str, torch.Tensor]:
        return torch.load(self.out / f"weights-rank{rank}.pt", weights_only=True)

    def model(self) -> dict[str, torch.Tensor]:
        return saved_weights(self.directory / "model.pt")

    def log(self, stream: str = "err") -> str:
        """The tails of the job's logs (submitit's own messages are in `out`, Python's errors in `err`)."""
        return "\n".join(p.read_text()[-3000:] for p in sorted((self.cfg.run_dir / "jobs").rglob(f"*.{stream}")))

    def diagnosis(self) -> str:
        """What a failed wait shows: the job's error logs, then its status record (last, so never cut off)."""
        return f"{self.log()}\nstatus {read_status(self.directory)}"


def layout_config(root: Path, layout: list[str]) -> ExperimentConfig:
    return tiny_config(root / "runs", *RESOURCES, *STEPS, *layout)


def submit(root: Path, layout: list[str], cell: Cell | None = None, hold_at: int | None = None) -> Run:
    """Prepare the data here, then submit the training job of `cell` (default: the config's one cell)
    as `gdm run` would (a TrainJob), with a RankProbe, and held once at step `hold_at` if given."""
    from launch.executors import job_name, make_executor
    from launch.jobs import TrainJob

    cfg = prepared(layout_config(root, layout))
    cell = cell or expand_cells(cfg)[0]
    out = root / "probe"
    out.mkdir(parents=True)
    fit = FitWith(callbacks=(RankProbe(out),), hold_at=hold_at, markers=out / "held")
    executor = make_executor("slurm", cfg.run_dir / "jobs" / "%j", cfg.launch.train, 1,
                             name=job_name(cfg.name, "train"))
    job = executor.submit(TrainJob(cfg, cell, fit=fit))
    return Run(cfg, cell, out, str(job.job_id), fit)


def wait_done(run: Run, timeout: float = 240) -> dict:
    wait_for(lambda: read_status(run.directory)["state"] in ("done", "failed"), timeout, "the job", run.diagnosis)
    record = read_status(run.directory)
    assert record["state"] == "done", (record, run.log())
    return record


@pytest.fixture(scope="module")
def one_node_reference(two_hosts, tmp_path_factory) -> Run:
    """The two-node cell trained by 1 host × 2 tasks: the same two ranks and global batch, on one node.

    The cell is the two-node config's (its id seeds the initial weights and every draw); the layout
    is part of the cell hash, so the one-node config alone would name, and seed, another cell.
    """
    root = tmp_path_factory.mktemp("one-node")
    run = submit(root, ONE_NODE, cell=expand_cells(layout_config(root, TWO_NODES))[0])
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
    # gloo sums two addends in either order to the same float: equal bit for bit
    assert_same_weights(run.weights(0), run.weights(1))
    assert_same_weights(run.model(), one_node_reference.model())
    shim = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["rank"] for e in shim if e["what"] == "loaded"} == {1}  # rank 1 ran with no flock at all
    assert [e for e in shim if e["what"] == "flock"] == []  # and never tried one: it followed status.json


def test_preempted_two_node_job_requeues_and_resumes(one_node_reference, tmp_path):
    """USR2 while both ranks train, then the same job resumes from last.ckpt to the reference's weights.

    Both ranks hold at step HOLD_AT, after its checkpoint (lightning_helpers.HoldOnce), until the test has
    signalled them. Racing a fixed step count instead, the job once reached its last step on a loaded CI
    machine before the USR2 landed. The requeued run finds its hold markers and trains on; holding changes
    no weight (the final weights still equal the uninterrupted one-node reference's, bit for bit)."""
    run = submit(tmp_path, TWO_NODES, hold_at=HOLD_AT)
    wait_for(lambda: run.fit.holding(run.cell, ranks=2), 180, f"both ranks holding at step {HOLD_AT}", run.diagnosis)
    subprocess.run(["scancel", "--signal=USR2", run.job_id], check=True)  # preemption: every task gets USR2
    record = wait_done(run, timeout=300)  # the requeued job waits cred_expire (20 s here) to start again
    assert record["job_id"] == run.job_id  # the same job, requeued
    # A 10-minute job counts every USR2 as its time limit: one of launch.train.max_requeues=5 used.
    assert f"Requeued job {run.job_id} (4 remaining timeouts)" in run.log("out")
    for rank in (0, 1):
        first, second = run.starts(rank)
        assert (first["step"], first["restart"]) == (0, 0)
        assert second["restart"] == 1 and HOLD_AT <= second["step"] < 400, second  # resumed, not restarted
        assert first["node_rank"] == second["node_rank"] == rank
    assert_same_weights(run.weights(0), run.weights(1))
    assert_same_weights(run.model(), one_node_reference.model())  # resume on two hosts = one uninterrupted node
