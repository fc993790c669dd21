"""A run folder on a file system without flock (Lustre mounted `noflock`: every flock raises ENOSYS).

In this process `fcntl.flock` is monkeypatched; subprocesses and SLURM jobs get the same through the
shim in tests/noflock (sitecustomize.py, switched on by GDM_TEST_NOFLOCK). gdm must say so once, in one
message naming the folder and the key, and `launch.ownership=job` (what `auto` falls back to) must run
a grid to the end, with status and cancel working; an explicit `launch.ownership=flock` is refused
before any work starts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import SLURM_OVERRIDES, FakeFit, events, fake_steps, slurm_cluster_up, tiny_config

from gdm import lifecycle
from gdm.cells import Files, expand_cells, expand_pairs
from launch import owners
from launch.grid import cancel_experiment, run_grid
from launch.slurm import read_slurm_env
from launch.status import status_rows
from launch.task import Outcome, run_train_task

SHIM = Path(__file__).parent / "noflock"


def _enosys(fd, operation):
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


@pytest.fixture
def noflock(monkeypatch, tmp_path) -> Path:
    """No flock in this process nor in the processes it starts; returns the shim's log."""
    log = tmp_path / "noflock.jsonl"
    monkeypatch.setattr(fcntl, "flock", _enosys)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(SHIM), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("GDM_TEST_NOFLOCK", "all")
    monkeypatch.setenv("GDM_TEST_NOFLOCK_LOG", str(log))
    return log


def shim_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_flock_mode_refuses_such_a_folder_in_one_clear_message(noflock, tiny_root):
    cfg = tiny_config(tiny_root, "launch.ownership=flock")
    cell = expand_cells(cfg)[0]
    with pytest.raises(lifecycle.FlockUnsupported) as caught:
        run_grid(cfg, progress=False, steps=fake_steps())
    message = str(caught.value)
    assert str(cfg.run_dir) in message and "does not support flock" in message and "errno 38" in message
    assert "launch.ownership=job" in message and "\n" not in message
    assert not events(cfg) and not lifecycle.is_done(cell.directory(cfg))  # refused before any work
    with pytest.raises(lifecycle.FlockUnsupported, match="launch.ownership=job"):
        lifecycle.Lease(cell.directory(cfg)).acquire()  # the lease itself never leaks a bare OSError


def test_auto_says_so_once_and_the_grid_ends_done_in_process(noflock, tiny_root, capsys):
    cfg = tiny_config(tiny_root)  # launch.ownership=auto
    summary = run_grid(cfg, progress=False, steps=fake_steps())
    assert len(summary["trained"]) == 4 and len(summary["evaluated"]) == 2 and not summary["failed"], summary
    warnings = [line for line in capsys.readouterr().err.splitlines() if "does not support flock" in line]
    assert len(warnings) == 1, warnings  # once per driver, not per folder or job
    assert str(cfg.run_dir) in warnings[0] and "errno 38" in warnings[0] and "launch.ownership=job" in warnings[0]
    assert not any((c.directory(cfg) / Files.LEASE_JOB).exists() for c in expand_cells(cfg))  # released
    rows = status_rows(cfg)
    assert [r["state"] for r in rows] == ["done"] * 6


def test_job_ownership_runs_a_local_executor_grid_without_flock(noflock, tiny_root):
    cfg = tiny_config(tiny_root, "launch.executor=local", "launch.max_parallel=2", "launch.poll_seconds=0.2")
    summary = run_grid(cfg, progress=False, steps=fake_steps(delay=0.3))
    assert len(summary["trained"]) == 4 and len(summary["evaluated"]) == 2 and not summary["failed"], summary
    log = shim_log(noflock)
    job_pids = {int(lifecycle.status_record(item.directory(cfg))["pid"])
                for item in [*expand_cells(cfg), *expand_pairs(cfg)]}
    assert job_pids <= {e["pid"] for e in log if e["what"] == "loaded"}  # every job ran without flock
    assert not [e for e in log if e["what"] == "flock"]  # and, told the settled mode, never tried it
    assert [r["state"] for r in status_rows(cfg)] == ["done"] * 6
    assert cancel_experiment(cfg) == []  # nothing running; cancel does not crash either


def _hold_in_subprocess(cfg, folder: Path) -> subprocess.Popen:
    """A process that takes `folder`'s job-mode lease and sleeps (killed by the test: a crashed owner)."""
    code = ("import sys, time; from gdm import lifecycle; from gdm.config import load_config; "
            "from launch import owners; "
            f"cfg = load_config(None, ['root={cfg.root}', 'launch.ownership=job']); "
            f"lifecycle.Lease({str(folder)!r}, ownership=owners.ownership(cfg)).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_job_lease_is_exclusive_while_its_owner_lives_and_taken_once_it_died(noflock, tiny_root):
    cfg = tiny_config(tiny_root, "launch.ownership=job")
    folder, mine = cfg.run_dir / "cell", owners.ownership(cfg)
    holder = _hold_in_subprocess(cfg, folder)
    try:
        assert lifecycle.owner_alive(folder, mine)
        assert lifecycle.lease_record(folder)["pid"] == holder.pid
        with pytest.raises(lifecycle.LeaseBusy):
            lifecycle.Lease(folder, patience=0.3, ownership=mine).acquire()
    finally:
        holder.kill()  # SIGKILL: the record stays behind, as after a crash or a node failure
        holder.wait()
    assert lifecycle.lease_record(folder)["pid"] == holder.pid and not lifecycle.owner_alive(folder, mine)
    with lifecycle.Lease(folder, patience=0.3, ownership=mine):
        assert lifecycle.lease_record(folder)["pid"] == os.getpid()
    assert lifecycle.lease_record(folder) is None and not list(folder.glob("lease.json*"))


def test_the_job_judge(tmp_path):
    env = read_slurm_env({"SLURM_JOB_ID": "41", "SLURM_RESTART_COUNT": "1"})
    me = owners.this_process(env)
    judge = owners.JobJudge(me, queue=lambda: {"40", "77_3"})  # an squeue answer, as live_job_ids gives it
    assert judge(me)
    assert not judge({**me, "restart_count": 0, "pid": 1})  # the earlier attempt of this requeued job
    assert judge({"slurm_job_id": "40", "job_id": "40"}) and judge({"slurm_job_id": "78", "job_id": "77_3"})
    assert not judge({"slurm_job_id": "39", "job_id": "39"})  # left the queue
    assert judge({"host": "another-host", "pid": 1})  # cannot check from here: never taken from it
    assert not judge({"host": me["host"], "pid": os.getpid(), "pid_start": "0"})  # a reused pid


def test_ddp_ranks_above_0_follow_status_json_never_the_lease(noflock, tiny_root):
    """Rank 1 of SLURM job 55 works once status.json names job 55's current attempt as the owner."""
    cfg = tiny_config(tiny_root, "trainer.devices=2")
    cell = expand_cells(cfg)[0]
    folder = cell.directory(cfg)
    rank1 = read_slurm_env({"SLURM_JOB_ID": "55", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                            "SLURM_RESTART_COUNT": "1"})
    folder.mkdir(parents=True)
    lifecycle.start(folder, {}, slurm_job_id="55", restart_count=1)  # as rank 0 of that attempt records it
    assert run_train_task(cfg, cell, fit=FakeFit(), env=rank1) == Outcome.DONE  # no flock here at all
    other = expand_cells(cfg)[1]
    other.directory(cfg).mkdir(parents=True)
    lifecycle.start(other.directory(cfg), {}, slurm_job_id="55", restart_count=0)  # the attempt before
    from launch import task

    assert task._follow(other.directory(cfg), rank1, lambda: None, patience=1.0) == Outcome.BUSY


@pytest.mark.slurm
@pytest.mark.slow
def test_job_ownership_runs_a_slurm_grid_without_flock(noflock, tiny_root, monkeypatch):
    """The one-node SLURM cluster: the driver settles `auto` to job, the jobs (shim: no flock) own their
    folders by job id, and `status` shows them running from squeue while they run."""
    if reason := slurm_cluster_up():
        pytest.skip(f"{reason}; start one as root: bash slurm/start_local_cluster.sh")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # sbatch exports the environment (and the shim) to the jobs
    cfg = tiny_config(tiny_root, *SLURM_OVERRIDES, "n_train=[1]")
    summary, seen = {}, set()
    driver = threading.Thread(target=lambda: summary.update(run_grid(cfg, progress=False,
                                                                     steps=fake_steps(delay=4.0))))
    driver.start()
    watcher = replace(cfg, launch=replace(cfg.launch, ownership="job"))
    while driver.is_alive():
        seen |= {r["state"] for r in status_rows(watcher)}
        time.sleep(0.3)
    assert len(summary["trained"]) == 2 and summary["evaluated"] == [expand_pairs(cfg)[0].pair_id], summary
    assert "running" in seen  # a job's lease.json, judged alive by squeue
    log = shim_log(noflock)
    assert {e["rank"] for e in log if e["what"] == "loaded"} == {0} and not [e for e in log if e["what"] == "flock"]
    loaded = {e["pid"] for e in log if e["what"] == "loaded"}
    assert {int(lifecycle.status_record(c.directory(cfg))["pid"]) for c in expand_cells(cfg)} <= loaded
    assert [r["state"] for r in status_rows(watcher)] == ["done"] * 3


def test_status_and_cancel_commands_work_without_flock(noflock, tiny_root, tmp_path, capsys):
    from gdm.cli import main
    from gdm.config import to_yaml

    cfg = tiny_config(tiny_root)
    run_grid(cfg, progress=False, steps=fake_steps())
    capsys.readouterr()
    path = tmp_path / "tiny.yaml"
    path.write_text(to_yaml(cfg))
    assert main(["status", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "done" in out and "Traceback" not in err and err.count("does not support flock") == 1
    assert main(["cancel", str(path)]) == 0
    assert "0 cancelled" in capsys.readouterr().out
    assert main(["status", str(path), "launch.ownership=flock"]) == 1  # refused in one line, naming the key
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "launch.ownership=job" in err and str(cfg.run_dir) in err
