"""Orchestration with tiny stand-ins for data, training and evaluation (seconds, no torch work).

The stand-ins (tests/helpers.py) record when each cell and pair starts and ends, so the tests can check that a pair's
evaluation never starts before both of its cells are done, on the in-process and local executors.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from helpers import FakeEval, FakeFit, assert_evals_after_cells, events, fake_steps, tiny_config

from gdm import lifecycle
from gdm.cells import Files, cell_settings, expand_cells, expand_pairs
from launch import task
from launch.executors import _slurm_parameters, make_executor
from launch.grid import run_grid
from launch.jobs import EvalJob, TrainJob
from launch.slurm import SlurmEnv, read_slurm_env
from launch.status import format_status, status_rows
from launch.task import Outcome, check_layout, run_owned, run_train_task


def test_inprocess_grid_trains_then_evaluates(tiny_root):
    cfg = tiny_config(tiny_root)
    summary = run_grid(cfg, progress=False, steps=fake_steps())
    assert len(summary["trained"]) == 4 and len(summary["evaluated"]) == 2
    assert not summary["failed"] and not summary["skipped"]
    assert (cfg.run_dir / "config.yaml").read_text().startswith("name: tiny")
    assert_evals_after_cells(cfg)
    assert all(lifecycle.status(c.directory(cfg)).job_id for c in expand_cells(cfg))


def test_local_executor_pool(tiny_root):
    cfg = tiny_config(tiny_root, "launch.executor=local", "launch.max_parallel=2", "launch.poll_seconds=0.2")
    summary = run_grid(cfg, progress=False, steps=fake_steps(delay=0.5))
    assert len(summary["trained"]) == 4 and len(summary["evaluated"]) == 2, summary
    assert_evals_after_cells(cfg)
    job_ids = {lifecycle.status(c.directory(cfg)).job_id for c in expand_cells(cfg)}
    assert len(job_ids) == 4  # one local process per cell


def test_a_pair_is_evaluated_as_soon_as_its_own_cells_are_done(tiny_root):
    cfg = tiny_config(tiny_root, "launch.executor=local", "launch.max_parallel=4", "launch.poll_seconds=0.2")
    small, large = expand_pairs(cfg)  # n = 1 and n = 4; the n = 4 cells train ten times longer
    summary = run_grid(cfg, progress=False, steps=fake_steps(delay=1.5, slow=tuple(c.cell_id for c in large.cells)))
    assert len(summary["evaluated"]) == 2, summary
    log = events(cfg)
    small_eval = next(e["t"] for e in log if e["kind"] == "eval" and e["id"] == small.pair_id)
    large_ends = [e["t"] for e in log if e["kind"] == "train" and e["what"] == "end" and e["id"] in
                  {c.cell_id for c in large.cells}]
    assert small_eval < min(large_ends)  # the pool did not wait for the rest of the grid
    assert_evals_after_cells(cfg)


@pytest.mark.parametrize("executor", ["inprocess", "local"])
def test_failed_cell_is_recorded_and_its_pair_skipped(tiny_root, executor):
    cfg = tiny_config(tiny_root, f"launch.executor={executor}", "launch.poll_seconds=0.2")
    bad = expand_cells(cfg)[3]  # n=4, split B
    summary = run_grid(cfg, progress=False, steps=fake_steps(fail=(bad.cell_id,)))
    assert summary["failed"] == [bad.cell_id]
    status = lifecycle.status(bad.directory(cfg))
    assert status.state == lifecycle.State.FAILED and status.error == f"RuntimeError: boom in {bad.cell_id}"
    assert len(summary["trained"]) == 3
    pair_n1, pair_n4 = expand_pairs(cfg)
    assert summary["evaluated"] == [pair_n1.pair_id] and summary["skipped"] == [pair_n4.pair_id]


def test_rerun_submits_nothing(tiny_root):
    cfg = tiny_config(tiny_root)
    run_grid(cfg, progress=False, steps=fake_steps())
    before = len(events(cfg))
    start = time.time()
    summary = run_grid(cfg, progress=False, steps=fake_steps(fail=tuple(c.cell_id for c in expand_cells(cfg))))
    assert time.time() - start < 5
    assert len(events(cfg)) == before
    assert summary["already_done"] == 6 and not summary["trained"] and not summary["failed"]


def test_killed_and_failed_cells_are_resubmitted(tiny_root):
    cfg = tiny_config(tiny_root)
    cells = expand_cells(cfg)
    lifecycle.finish(cells[0].directory(cfg))
    with lifecycle.Lease(cells[1].directory(cfg)):  # its job was killed: it let go of the lease, unfinished
        lifecycle.start(cells[1].directory(cfg), {}, job_id="12345")
    with lifecycle.Lease(cells[2].directory(cfg)):
        lifecycle.start(cells[2].directory(cfg), {}, job_id="12346")
        lifecycle.fail(cells[2].directory(cfg), "out of memory")
    assert lifecycle.status(cells[1].directory(cfg)).state == lifecycle.State.PENDING
    assert lifecycle.status(cells[2].directory(cfg)).state == lifecycle.State.FAILED
    summary = run_grid(cfg, progress=False, steps=fake_steps())
    assert sorted(summary["trained"]) == sorted(c.cell_id for c in cells[1:])
    assert lifecycle.status(cells[2].directory(cfg)).error is None
    assert lifecycle.status(cells[2].directory(cfg)).state == lifecycle.State.DONE


def test_status_rows_and_table(tiny_root):
    cfg = tiny_config(tiny_root)
    bad = expand_cells(cfg)[1]
    run_grid(cfg, progress=False, steps=fake_steps(fail=(bad.cell_id,)))
    rows = status_rows(cfg)
    assert [r["kind"] for r in rows] == ["train"] * 4 + ["eval"] * 2
    by_id = {r["id"]: r for r in rows}
    assert (
        by_id[bad.cell_id]["state"] == "failed"
        and by_id[bad.cell_id]["error"] == f"RuntimeError: boom in {bad.cell_id}"
    )
    assert by_id[expand_cells(cfg)[0].cell_id]["step"] == cfg.trainer.max_steps
    blocked = expand_pairs(cfg)[0]
    assert (
        by_id[blocked.pair_id]["state"] == "pending"
        and by_id[blocked.pair_id]["error"] == f"waits on failed cell {bad.cell_id}"
    )
    table = format_status(rows)
    assert table.splitlines()[0].split()[:3] == ["kind", "id", "state"]
    assert table.splitlines()[-1] == "4 done, 1 failed, 1 pending"
    assert f"{bad.cell_id}: RuntimeError: boom in {bad.cell_id}" in table.splitlines()  # in full, below the table


def test_a_requeued_job_runs_the_same_call_again(tiny_root):
    cfg = tiny_config(tiny_root)
    cell, pair = expand_cells(cfg)[0], expand_pairs(cfg)[0]
    job = TrainJob(cfg, cell, FakeFit())
    delayed = job.checkpoint()  # what submitit requeues on USR2 / timeout
    assert not delayed.args and not delayed.kwargs
    assert delayed.function.cell == cell and delayed.function.cfg == cfg
    assert delayed.function() == Outcome.DONE and lifecycle.is_done(cell.directory(cfg))
    assert job() == Outcome.ALREADY_DONE  # the requeued run found the cell finished: nothing trained twice
    assert [e["what"] for e in events(cfg) if e["kind"] == "train"] == ["start", "end"]
    for other in expand_cells(cfg)[1:2]:
        lifecycle.finish(other.directory(cfg))
    assert EvalJob(cfg, pair, FakeEval()).checkpoint().function() == Outcome.DONE


def test_a_live_owner_is_adopted_not_duplicated(tiny_root):
    """A folder held by another live process (a second driver's job, an orphan) is waited for, not retrained."""
    cfg = tiny_config(tiny_root, "launch.poll_seconds=0.1")
    owned = expand_cells(cfg)[2]
    folder = owned.directory(cfg)
    script = (
        "import sys, time; from gdm import lifecycle; "
        f"lease = lifecycle.Lease({str(folder)!r}).acquire(); lifecycle.start({str(folder)!r}, {{}}, job_id='other'); "
        "print('held', flush=True); time.sleep(3); lifecycle.finish(" + repr(str(folder)) + ", step=6)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "held"
        summary = run_grid(cfg, progress=False, steps=fake_steps())
    finally:
        owner.wait(timeout=30)
    assert summary["done_elsewhere"] == [owned.cell_id]
    assert sorted(summary["trained"]) == sorted(c.cell_id for c in expand_cells(cfg) if c != owned)
    assert owned.cell_id not in {e["id"] for e in events(cfg) if e["kind"] == "train"}
    assert len(summary["evaluated"]) == 2 and not summary["failed"]
    finished = lifecycle.done_record(folder)["finished"]
    pair = next(p for p in expand_pairs(cfg) if owned in p.cells)
    assert next(e["t"] for e in events(cfg) if e["id"] == pair.pair_id) >= finished  # waited for the owner


def test_a_busy_job_hands_over_to_the_live_owner(tiny_root):
    cfg = tiny_config(tiny_root)
    cell = expand_cells(cfg)[0]
    with lifecycle.Lease(cell.directory(cfg)):
        lifecycle.start(cell.directory(cfg), {}, job_id="first")
        assert run_train_task(cfg, cell, fit=FakeFit()) == Outcome.BUSY
        assert lifecycle.status(cell.directory(cfg)).job_id == "first"  # the busy task wrote nothing
    assert not events(cfg)


def test_train_task_records_slurm_ids_and_ddp_shape(tiny_root):
    cfg = tiny_config(tiny_root, "trainer.devices=2")
    cell = expand_cells(cfg)[0]
    seen = {}

    def fit(cfg_in, cell_in, *, progress=False, plugins=None):
        seen.update(
            devices=cfg_in.trainer.devices,
            plugins=plugins,
            record=lifecycle.status(cell_in.directory(cfg_in)).record,
            running=lifecycle.status(cell_in.directory(cfg_in)).state,
        )
        return lifecycle.Finished()

    env = read_slurm_env({"SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1",
                          "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_PROCID": "0"})
    run_train_task(cfg, cell, fit=fit, env=env)
    assert seen["record"]["job_id"] == "77_1" and seen["record"]["array_task_id"] == 1
    assert seen["running"] == lifecycle.State.RUNNING and seen["devices"] == 2
    assert type(seen["plugins"][0]).__name__ == "SLURMEnvironment"
    assert check_layout(cfg, SlurmEnv()) is cfg
    one = tiny_config(tiny_root)  # trainer.devices=1 in a 2-task step: refused, naming the keys to set
    with pytest.raises(ValueError, match="pass trainer.devices=2 trainer.num_nodes=1"):
        check_layout(one, env)
    assert "pass trainer.devices=2" in run_train_task_error(one, cell, env)


def run_train_task_error(cfg, cell, env) -> str:
    with pytest.raises(ValueError):
        run_train_task(cfg, expand_cells(cfg)[1], fit=FakeFit(), env=env)
    return lifecycle.status(expand_cells(cfg)[1].directory(cfg)).error


def test_slurm_parameters_and_registry(tmp_path, tiny_root):
    cfg = tiny_config(tiny_root, "launch.train.partition=gpu", "launch.train.gpus_per_node=4",
                   "launch.train.tasks_per_node=4", "launch.train.setup=[module load cuda]")
    params = _slurm_parameters(cfg.launch.train, max_parallel=8)
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4
    assert params["slurm_array_parallelism"] == 8 and params["slurm_setup"] == ["module load cuda"]
    assert "slurm_account" not in params and "gpus_per_node" not in _slurm_parameters(
        replace(cfg.launch.train, gpus_per_node=0), 1
    )
    with pytest.raises(ValueError, match="unknown executor"):
        make_executor("kubernetes", tmp_path, cfg.launch.train)


# --- the one owner of a folder's life (launch.task.run_owned) ---------------------------------------

def _writes_model(folder, content: bytes = b"weights", after_done=None):
    """Work as fit_cell does it: its output written, what DONE records returned (the owner writes DONE)."""

    def work() -> lifecycle.Finished:
        assert (folder / Files.SETTINGS).exists() and not lifecycle.is_done(folder)  # settings first, DONE last
        (folder / Files.MODEL).write_bytes(content)
        return lifecycle.Finished((Files.MODEL,), ("does not denoise",), {"step": 7}, after_done)

    return work


def test_the_owner_writes_settings_and_done_with_the_checksums_the_work_returns(tiny_root):
    cfg = tiny_config(tiny_root)
    cell = expand_cells(cfg)[0]
    folder, seen = cell.directory(cfg), {}
    after = lambda done: seen.update(record=done, done=lifecycle.is_done(folder))  # noqa: E731
    assert run_owned(cfg, cell, _writes_model(folder, after_done=after), SlurmEnv()) == Outcome.DONE
    done = lifecycle.done_record(folder)
    assert done["sha256"] == {Files.MODEL: hashlib.sha256(b"weights").hexdigest()}
    assert done["flags"] == ["does not denoise"] and done["step"] == 7
    assert seen == {"record": done, "done": True}  # the W&B step runs after DONE, with its record
    assert json.loads((folder / Files.SETTINGS).read_text()) == json.loads(json.dumps(cell_settings(cfg, cell.dataset)))
    assert lifecycle.status(folder).flags == ("does not denoise",)
    never = lambda: pytest.fail("a done cell was worked again")  # noqa: E731
    assert run_owned(cfg, cell, never, SlurmEnv()) == Outcome.ALREADY_DONE


def test_the_owner_makes_a_done_folder_with_a_damaged_output_again(tiny_root, capsys):
    cfg = tiny_config(tiny_root)
    cell = expand_cells(cfg)[0]
    folder = cell.directory(cfg)
    run_owned(cfg, cell, _writes_model(folder), SlurmEnv())
    (folder / Files.MODEL).write_bytes(b"altered")
    assert run_owned(cfg, cell, _writes_model(folder), SlurmEnv()) == Outcome.DONE
    assert f"{cell.cell_id} is made again: {folder / Files.MODEL} does not match" in capsys.readouterr().err
    assert [p.read_bytes() for p in folder.glob(f"{Files.MODEL}.bad-*")] == [b"altered"]  # kept aside
    assert lifecycle.done_intact(folder) and len(list(folder.glob(f"{Files.DONE}.bad-*"))) == 1


def test_work_that_returns_no_finished_record_fails_naming_the_contract(tiny_root):
    cfg = tiny_config(tiny_root)
    cell = expand_cells(cfg)[0]
    with pytest.raises(TypeError, match="returned PosixPath, not the gdm.lifecycle.Finished"):
        run_owned(cfg, cell, lambda: cell.directory(cfg), SlurmEnv())  # a stand-in of the old contract
    status = lifecycle.status(cell.directory(cfg))
    assert status.state == lifecycle.State.FAILED and "lifecycle.Finished" in status.error
    assert not lifecycle.is_done(cell.directory(cfg))


def test_a_failure_after_done_costs_nothing(tiny_root):
    cfg = tiny_config(tiny_root)
    cell = expand_cells(cfg)[0]

    def publish(done: dict) -> None:
        raise ConnectionError("W&B is down")

    with pytest.raises(ConnectionError):
        run_owned(cfg, cell, lambda: lifecycle.Finished(after_done=publish), SlurmEnv())
    assert lifecycle.status(cell.directory(cfg)).state == lifecycle.State.DONE
    assert lifecycle.status_record(cell.directory(cfg))["state"] == "done"  # not recorded as failed


def test_a_ddp_rank_above_0_works_but_never_writes_done(tiny_root):
    cfg = tiny_config(tiny_root, "trainer.devices=2")
    cell = expand_cells(cfg)[0]
    folder = cell.directory(cfg)
    rank1 = SlurmEnv(job_id="55", rank=1, step_tasks=2)
    folder.mkdir(parents=True)
    lifecycle.start(folder, {}, slurm_job_id="55", restart_count=0)  # as its rank 0 records it
    assert run_owned(cfg, cell, lambda: lifecycle.Finished(), rank1) == Outcome.DONE
    assert not lifecycle.is_done(folder)  # DONE is rank 0's
    (folder / Files.MODEL).write_bytes(b"weights")
    lifecycle.finish(folder, outputs=(Files.MODEL,))
    (folder / Files.MODEL).write_bytes(b"altered")  # done but damaged: rank 0 makes it again, so rank 1 waits
    lifecycle.start(folder, {}, slurm_job_id="54")  # … here for another job's rank 0, which never comes
    assert task._follow(folder, rank1, lambda: None, patience=1.0) == Outcome.BUSY
