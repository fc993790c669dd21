"""End-to-end on a real SLURM cluster (the one-node cluster of slurm/start_local_cluster.sh).

Skipped unless `sinfo` answers with a usable node. The driver runs here; jobs run through sbatch.
The cluster has no accounting, so outcomes are read from the run directories.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cloudpickle
import pytest
from helpers import (
    SLURM_OVERRIDES,
    FakeEval,
    assert_evals_after_cells,
    assert_same_weights,
    events,
    fake_prepare,
    fake_steps,
    log_event,
    prepared,
    read_status,
    saved_weights,
    slurm_cluster_up,
    tiny_config,
    wait_for,
)

from gdm import lifecycle
from gdm.cells import expand_cells, expand_pairs
from launch.executors import job_name
from launch.grid import run_grid
from launch.jobs import GridSteps

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # stand-ins travel by value
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slurm, pytest.mark.slow]



@pytest.fixture(autouse=True)
def cluster():
    if reason := slurm_cluster_up():
        pytest.skip(f"{reason}; start one as root: bash slurm/start_local_cluster.sh")


@pytest.fixture
def real_steps() -> GridSteps:
    """The library's own steps: gdm.data.prepare, gdm.training.fit, gdm.evaluate, gdm.report."""
    return GridSteps()


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the jobs (sbatch exports the environment)
    monkeypatch.setenv("WANDB_MODE", "offline")


def slurm_cfg(root: Path, *extra: str):
    """The tiny experiment run as small SLURM jobs (helpers.SLURM_OVERRIDES)."""
    return tiny_config(root, *SLURM_OVERRIDES, *extra)


def numbers(obj, prefix=""):
    """Every number in a JSON document, by its path (for comparing two runs' results)."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in numbers(value, f"{prefix}/{key}").items()}
    if isinstance(obj, list):
        return {k: v for i, value in enumerate(obj) for k, v in numbers(value, f"{prefix}/{i}").items()}
    return {prefix: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}


# --- orchestration with stand-ins: runs whether or not training exists yet ---------------------

def test_grid_of_stand_ins_runs_as_arrays_and_waits_for_cells(tiny_root):
    cfg = slurm_cfg(tiny_root)
    bad = expand_cells(cfg)[3]
    summary = run_grid(cfg, progress=False, steps=fake_steps(fail=(bad.cell_id,), delay=2.0))
    assert summary["failed"] == [bad.cell_id] and len(summary["trained"]) == 3
    pair_n1, pair_n4 = expand_pairs(cfg)
    assert summary["evaluated"] == [pair_n1.pair_id] and summary["skipped"] == [pair_n4.pair_id]
    records = [read_status(c.directory(cfg)) for c in expand_cells(cfg)]
    assert sorted(r["array_task_id"] for r in records) == [0, 1, 2, 3]  # one array of 4 tasks
    assert all(r["job_id"] == f"{r['array_job_id']}_{r['array_task_id']}" for r in records)
    assert "boom" in records[3]["error"]
    assert_evals_after_cells(cfg)
    again = run_grid(cfg, progress=False, steps=fake_steps(delay=0.1))  # retries the failed cell only
    assert again["trained"] == [bad.cell_id] and again["evaluated"] == [pair_n4.pair_id]


def _squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "|".join(fields)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def test_detach_submits_everything_with_dependencies_then_status_and_cancel(tiny_root, capsys):
    from gdm.cli import main
    from launch.grid import submit_detached

    cfg = slurm_cfg(tiny_root, "name=detached")
    jobs = submit_detached(cfg, steps=fake_steps(delay=60.0))  # returns at once; the jobs are queued
    assert len(jobs["train"]) == 4 and len(jobs["eval"]) == 2
    queued = {row[0]: row for row in _squeue("%i", "%j", "%E")}
    names = {queued[j][1] for j in [jobs["prepare"], *jobs["train"], *jobs["eval"], jobs["report"]]}
    assert names == {f"gdm-detached-{kind}" for kind in ("prepare", "train", "eval", "report")}
    pair = expand_pairs(cfg)[0]
    dependency = queued[jobs["eval"][0]][2]
    assert "afterok" in dependency and all(jobs["train"][i].split("_")[0] in dependency for i in (0, 1)), dependency
    assert "afterany" in queued[jobs["report"]][2]
    resolved = str(cfg.run_dir / "config.yaml")  # what the submission wrote: the same settings as cfg
    assert main(["status", resolved]) == 0
    table = capsys.readouterr().out
    assert pair.pair_id in table and jobs["eval"][0] in table
    assert main(["cancel", resolved]) == 0
    assert "gdm cancel detached:" in capsys.readouterr().out
    wait_for(lambda: not any(row[1].startswith("gdm-detached-") for row in _squeue("%i", "%j")), 60, "cancellation")
    assert all(lifecycle.status(c.directory(cfg)).state != lifecycle.State.RUNNING for c in expand_cells(cfg))


@dataclass
class StepFit:
    """A stand-in training loop that 'checkpoints' its step to a file and resumes from it. The first time a
    cell reaches step `hold_at` it writes `held_marker` and sleeps until a signal ends the job (at most 300 s):
    the test signals it there, never after its last step, however loaded the machine."""

    steps: int = 30
    hold_at: int = 3

    def __call__(self, cfg, cell, *, progress=False, plugins=None):
        ckpt = cell.directory(cfg) / "last.ckpt"
        step = int(ckpt.read_text()) if ckpt.exists() else 0
        log_event(cfg, kind="train", id=cell.cell_id, what="start", step=step)
        while step < self.steps:
            if step == self.hold_at and not held_marker(cfg, cell).exists():
                held_marker(cfg, cell).parent.mkdir(parents=True, exist_ok=True)
                held_marker(cfg, cell).touch()
                time.sleep(300)
            time.sleep(0.5)
            step += 1
            ckpt.write_text(str(step))
        return lifecycle.Finished(facts={"step": step})  # its owner (launch.task.run_owned) writes DONE


def held_marker(cfg, cell) -> Path:
    return cfg.run_dir / "held" / cell.cell_id  # a cell id is <dataset>/<folder>


def test_stand_in_preemption_requeues_and_resumes(tiny_root):
    cfg = slurm_cfg(tiny_root, "n_train=[1]", "splits=[A]")
    cell = expand_cells(cfg)[0]
    result: dict = {}
    steps = GridSteps(prepare=fake_prepare, verify=None, fit=StepFit(), evaluate=FakeEval(), report=None)
    driver = threading.Thread(target=lambda: result.update(run_grid(cfg, progress=False, steps=steps)))
    driver.start()
    wait_for(held_marker(cfg, cell).exists, 120, "the job holding at step 3")
    job_id = _job_of(cfg, cell)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    driver.join(timeout=400)  # SLURM holds a requeued job ~2 min before it starts again
    assert not driver.is_alive() and result["trained"] == [cell.cell_id], result
    starts = [e for e in events(cfg) if e["kind"] == "train" and e["what"] == "start"]
    assert len(starts) == 2 and starts[0]["step"] == 0 and starts[1]["step"] >= 3  # resumed, not restarted
    assert _job_of(cfg, cell) == job_id  # the same job, requeued


# --- the real pipeline ---------------------------------------------------------------------------

def test_grid_on_slurm_equals_inprocess(tiny_root, tmp_path, real_steps):
    cfg = slurm_cfg(tiny_root)
    summary = run_grid(cfg, progress=False)
    assert not summary["failed"] and len(summary["trained"]) == 4 and len(summary["evaluated"]) == 2
    for cell in expand_cells(cfg):
        assert read_status(cell.directory(cfg))["array_task_id"] is not None
    for pair in expand_pairs(cfg):  # each evaluation started after both of its cells ended
        started = read_status(pair.directory(cfg))["started"]
        assert all((c.directory(cfg) / "DONE").stat().st_mtime <= started for c in pair.cells)
    local = tiny_config(tmp_path / "inprocess")
    run_grid(local, progress=False)
    for pair in expand_pairs(cfg):
        ours = numbers(json.loads((pair.directory(cfg) / "results.json").read_text()))
        theirs = numbers(json.loads((pair.directory(local) / "results.json").read_text()))
        assert ours.keys() == theirs.keys() and ours == pytest.approx(theirs, rel=1e-5, abs=1e-6)


def test_two_task_ddp_job(tiny_root, real_steps):
    from launch.executors import make_executor
    from launch.jobs import TrainJob

    cfg = slurm_cfg(tiny_root, "n_train=[4]", "splits=[A]", "launch.train.tasks_per_node=2",
                     "trainer.devices=2", "launch.train.mem_gb=2")  # two ranks each need their memory
    cell = expand_cells(cfg)[0]
    prepared(cfg)
    executor = make_executor("slurm", cfg.run_dir / "jobs" / "%j", cfg.launch.train, 1)
    job = executor.submit(TrainJob(cfg, cell))
    wait_for(lambda: job.paths.result_pickle.exists() or read_status(cell.directory(cfg))["state"] == "done",
              300, "the DDP job")
    record = read_status(cell.directory(cfg))
    assert record["state"] == "done", (record, job.paths.stderr.read_text() if job.paths.stderr.exists() else "")
    assert record["world_size"] == 2


def _job_of(cfg, cell) -> str:
    return str(read_status(cell.directory(cfg)).get("job_id"))


def test_preempted_job_requeues_and_killed_job_is_resubmitted(tiny_root, tmp_path, real_steps):
    """Both cells' jobs hold at step 50, after its checkpoint (lightning_helpers.HoldOnce), until the test
    has signalled them: racing a fixed step count, a job on a loaded machine once reached its last step before
    the signal landed. The requeued run finds its hold marker and trains on; holding changes no weight."""
    from lightning_helpers import FitWith

    long = ["n_train=[1]", "trainer.max_steps=1500", "trainer.checkpoint_every=50", "trainer.log_every=50"]
    cfg = slurm_cfg(tiny_root, *long)
    preempted, killed = expand_cells(cfg)
    fit = FitWith(hold_at=50, markers=tmp_path / "held")
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(run_grid(cfg, progress=False,
                                                                     steps=replace(real_steps, fit=fit))))
    driver.start()
    for cell in (preempted, killed):
        wait_for(lambda c=cell: fit.holding(c), 240, f"{cell.cell_id} holding at step 50 after its checkpoint")
    subprocess.run(["scancel", "--signal=USR2", _job_of(cfg, preempted)], check=True)
    subprocess.run(["scancel", _job_of(cfg, killed)], check=True)
    driver.join(timeout=480)  # the requeued job waits ~2 min before it starts again
    assert not driver.is_alive()
    assert result["trained"] == [preempted.cell_id] and result["failed"] == [killed.cell_id]
    done_job = _job_of(cfg, preempted)
    again = run_grid(cfg, progress=False)
    assert again["trained"] == [killed.cell_id] and _job_of(cfg, preempted) == done_job
    reference = tiny_config(tmp_path / "reference", *long)
    run_grid(reference, progress=False)
    for cell in (preempted, killed):
        assert_same_weights(saved_weights(cell.directory(cfg) / "model.pt"),
                            saved_weights(cell.directory(reference) / "model.pt"))


def test_hand_submitted_array(tiny_root, tiny_overrides, tmp_path, real_steps):
    cfg = slurm_cfg(tiny_root)
    prepared(cfg)
    env = {**os.environ, "GDM": f"{sys.executable} -m gdm.cli"}
    sbatch = ["sbatch", "--wait", "-J", job_name(cfg.name, "train"), "--array=0-3", "--mem=1G",
              "--cpus-per-task=1", "--time=20",
              f"--output={tmp_path}/train-%A_%a.out", "slurm/train_array.sbatch", "configs/quickstart.yaml",
              *tiny_overrides]
    done = subprocess.run(sbatch, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    logs = "\n".join(p.read_text() for p in tmp_path.glob("train-*.out"))
    assert done.returncode == 0, done.stderr + logs
    records = [read_status(c.directory(cfg)) for c in expand_cells(cfg)]
    assert [r["state"] for r in records] == ["done"] * 4
    assert [r["array_task_id"] for r in records] == [0, 1, 2, 3]
