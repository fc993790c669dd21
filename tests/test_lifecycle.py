"""The lifecycle of a cell or pair folder: states, the lease, checksums, strict records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from gdm import lifecycle
from gdm.cells import Files
from gdm.io import atomic_write_json
from gdm.lifecycle import State


def test_transitions_on_disk(tmp_path):
    folder = tmp_path / "cell"
    assert lifecycle.status(folder).state == State.PENDING
    lifecycle.record_submission(folder, "42")
    assert lifecycle.status(folder).job_id == "42" and lifecycle.status(folder).state == State.PENDING
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {"x": 1}, job_id="43")
        assert lifecycle.status(folder).state == State.RUNNING and lifecycle.status(folder).job_id == "43"
        lifecycle.record_step(folder, 7)
        lifecycle.fail(folder, "RuntimeError: boom")
    status = lifecycle.status(folder)
    assert status.state == State.FAILED and status.error == "RuntimeError: boom" and status.step == 7
    time.sleep(0.01)
    lifecycle.record_submission(folder, "44")  # a new submission supersedes the old failure
    assert lifecycle.status(folder).state == State.PENDING and lifecycle.status(folder).error is None
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {"x": 1}, job_id="44")
        (folder / Files.MODEL).write_bytes(b"weights")
        lifecycle.finish(folder, outputs=(Files.MODEL,), flags=("does not denoise",), step=9)
    status = lifecycle.status(folder)
    assert status.state == State.DONE and status.flags == ("does not denoise",)
    assert json.loads((folder / Files.SETTINGS).read_text()) == {"x": 1}
    (folder / Files.STATUS).write_text("{ truncated")
    assert lifecycle.status(folder).state == State.DONE  # DONE wins over a damaged status record


def test_a_dead_owner_never_shows_as_running(tmp_path):
    folder = tmp_path / "cell"
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {}, job_id="7")
    # the process that wrote "running" let go of the lease (as a killed job does): not running
    status = lifecycle.status(folder)
    assert status.state == State.PENDING and "died" in status.error


def test_lease_is_exclusive_across_processes_and_freed_by_death(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from gdm import lifecycle; "
        f"lease = lifecycle.Lease({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lifecycle.owner_alive(folder)
        with pytest.raises(lifecycle.LeaseBusy, match="owned by a live process"):
            lifecycle.Lease(folder, patience=0.2).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert not lifecycle.owner_alive(folder)
    with lifecycle.Lease(folder, patience=0.2):
        assert lifecycle.owner_alive(folder)


def test_verify_names_a_corrupt_output_and_reopens_the_folder(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / Files.MODEL).write_bytes(b"0123456789" * 10)
    lifecycle.finish(folder, outputs=(Files.MODEL,))
    assert lifecycle.verify(folder, Files.MODEL) == folder / Files.MODEL
    raw = bytearray((folder / Files.MODEL).read_bytes())
    raw[50] ^= 0xFF
    (folder / Files.MODEL).write_bytes(bytes(raw))
    with pytest.raises(lifecycle.IntegrityError, match=f"{folder / Files.MODEL} does not match the checksum"):
        lifecycle.verify(folder, Files.MODEL)
    assert not lifecycle.is_done(folder) and not (folder / Files.MODEL).exists()
    assert sorted(p.name.split(".bad-")[0] for p in folder.glob("*.bad-*")) == sorted([Files.DONE, Files.MODEL])
    assert lifecycle.status(folder).state == State.PENDING and "does not match" in lifecycle.status(folder).error


def test_settings_file_is_written_once_and_guards_the_hash(tmp_path):
    lifecycle.write_settings(tmp_path, {"a": (1, 2)})
    lifecycle.write_settings(tmp_path, {"a": [1, 2]})  # the same settings, as JSON reads them back
    with pytest.raises(lifecycle.IntegrityError, match="other settings"):
        lifecycle.write_settings(tmp_path, {"a": 3})


def test_json_records_are_strict(tmp_path):
    path = atomic_write_json(tmp_path / "r.json", {"nan": float("nan"), "inf": [float("inf"), 1.5], "ok": 2})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"nan": None, "inf": [None, 1.5], "ok": 2}


def test_lease_files_are_probed_read_only(tmp_path):
    folder = tmp_path / "cell"
    with lifecycle.Lease(folder):
        pass
    os.chmod(folder / Files.LEASE, 0o444)
    assert not lifecycle.owner_alive(folder)


def _write(folder, name, record):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("status_record", "submission", "queued", "expected"),
    [
        # (status.json, submission.json, the scheduler's queue, (state, job id, step, error))
        (None, None, None, (State.PENDING, None, None, None)),
        (None, {"job_id": "5", "submitted": 10.0}, None, (State.PENDING, "5", None, None)),
        (
            {"state": "running", "job_id": "6", "started": 20.0, "step": 3},
            None,
            None,
            (State.PENDING, "6", 3, "its owner (6) died; the next run resumes it"),
        ),
        (
            {"state": "running", "pid": 99, "started": 20.0},
            None,
            None,
            (State.PENDING, None, None, "its owner (99) died; the next run resumes it"),
        ),
        (
            {"state": "running", "job_id": "6", "started": 20.0},
            {"job_id": "7", "submitted": 30.0},
            None,
            (State.PENDING, "6", None, None),
        ),  # resubmitted after the owner died: no stale note
        (
            {"state": "failed", "job_id": "6", "started": 20.0, "error": "E: x", "step": 4},
            None,
            None,
            (State.FAILED, "6", 4, "E: x"),
        ),
        (
            {"state": "failed", "job_id": "6", "started": 20.0, "error": "E: x"},
            {"job_id": "6", "submitted": 20.0},
            None,
            (State.FAILED, "6", None, "E: x"),
        ),  # submitted at the same time as started: not after it
        (
            {"state": "failed", "job_id": "6", "started": 20.0, "error": "E: x"},
            {"job_id": "8", "submitted": 20.5},
            None,
            (State.PENDING, "6", None, None),
        ),
        (
            {"state": "pending", "error": "model.pt is missing", "started": 20.0},
            None,
            None,
            (State.PENDING, None, None, "model.pt is missing"),
        ),
        (
            {"state": "failed", "error": "E: y"},
            {"submitted": 0.5},
            None,
            (State.PENDING, None, None, None),
        ),  # no start time
        (
            {"state": "failed", "error": "E: y", "started": None},
            {"submitted": 0.5},
            None,
            (State.PENDING, None, None, None),
        ),
        (
            None,
            {"job_id": "9", "submitted": 1.0, "lost": "job 9 ended: TIMEOUT"},
            None,
            (State.FAILED, "9", None, "job 9 ended: TIMEOUT"),
        ),
        (None, {"job_id": "9", "submitted": 1.0, "lost": "job 9 ended"}, {"9"}, (State.PENDING, "9", None, None)),
        (
            None,
            {"job_id": "9", "submitted": 1.0, "lost": "job 9 ended"},
            {"10"},
            (State.FAILED, "9", None, "job 9 ended"),
        ),
        (
            None,
            {"job_id": "9", "submitted": 1.0, "lost": "job 9 ended"},
            set(),
            (State.FAILED, "9", None, "job 9 ended"),
        ),
    ],
)
def test_status_reads_the_records_as_the_state_table_says(tmp_path, status_record, submission, queued, expected):
    folder = tmp_path / "cell"
    folder.mkdir()
    if status_record is not None:
        _write(folder, Files.STATUS, status_record)
    if submission is not None:
        _write(folder, Files.SUBMISSION, submission)
    status = lifecycle.status(folder, queued)
    assert (status.state, status.job_id, status.step, status.error) == expected
    assert status.record == (status_record or {}) and status.flags == ()


def test_done_wins_and_carries_its_flags(tmp_path):
    folder = tmp_path / "cell"
    _write(folder, Files.STATUS, {"state": "failed", "job_id": "3", "step": 5, "error": "old"})
    _write(folder, Files.DONE, {"flags": ["does not denoise"]})
    status = lifecycle.status(folder)
    assert (status.state, status.job_id, status.step, status.error, status.flags) == (
        State.DONE, "3", 5, None, ("does not denoise",))


def test_records_that_are_not_json_objects_read_as_empty(tmp_path):
    folder = tmp_path / "cell"
    _write(folder, Files.STATUS, [1, 2])
    (folder / Files.SUBMISSION).write_text("{ half")
    assert lifecycle.submission(folder) == {} and lifecycle.status(folder).record == {}
    assert lifecycle.done_record(folder) is None and not lifecycle.is_done(folder)


def test_finish_records_each_outputs_sha256_the_flags_and_the_facts(tmp_path):
    import hashlib

    folder = tmp_path / "cell"
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {"x": 1}, job_id="1", host="h")
        lifecycle.record_step(folder, 12.0)
        (folder / "a.bin").write_bytes(b"alpha")
        (folder / "b.bin").write_bytes(b"beta")
        before = time.time()
        record = lifecycle.finish(folder, outputs=("a.bin", "b.bin"), flags=("f1",), step=12)
    done = json.loads((folder / Files.DONE).read_text())
    assert done == record
    assert done["sha256"] == {
        "a.bin": hashlib.sha256(b"alpha").hexdigest(),
        "b.bin": hashlib.sha256(b"beta").hexdigest(),
    }
    assert done["flags"] == ["f1"] and done["step"] == 12 and before <= done["finished"] <= time.time()
    status = json.loads((folder / Files.STATUS).read_text())
    assert status["state"] == "done" and status["error"] is None and status["flags"] == ["f1"]
    assert status["job_id"] == "1" and status["host"] == "h" and status["pid"] == os.getpid() and status["step"] == 12
    assert isinstance(status["step"], int)


def test_fail_keeps_the_owner_and_records_the_time(tmp_path):
    folder = tmp_path / "cell"
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {}, job_id="2")
        before = time.time()
        lifecycle.fail(folder, "ValueError: bad")
    record = json.loads((folder / Files.STATUS).read_text())
    assert record["state"] == "failed" and record["error"] == "ValueError: bad" and record["job_id"] == "2"
    assert before <= record["failed"] <= time.time() and record["started"] <= record["failed"]


def test_driver_records_keep_what_they_do_not_change(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    before = time.time()
    lifecycle.record_submission(folder)
    first = lifecycle.submission(folder)
    assert first["job_id"] is None and before <= first["submitted"] <= time.time()
    lifecycle.attach_job(folder, 77)
    assert lifecycle.submission(folder) == {**first, "job_id": "77"}
    lifecycle.record_lost(folder, 77, "job 77 ended: CANCELLED")
    lost = lifecycle.submission(folder)
    assert (
        lost["submitted"] == first["submitted"] and lost["job_id"] == "77" and lost["lost"] == "job 77 ended: CANCELLED"
    )
    assert lost["ended"] >= first["submitted"]
    assert not (folder / Files.STATUS).exists()  # the driver never writes the owner's record


def test_a_lease_is_released_once_and_can_be_taken_again(tmp_path):
    folder = tmp_path / "deep" / "cell"
    lease = lifecycle.Lease(folder, patience=0.1).acquire()  # creates the folder
    assert (folder / Files.LEASE).exists() and lifecycle.owner_alive(folder)
    lease.release()
    lease.release()  # a second release is a no-op
    assert not lifecycle.owner_alive(folder)
    with lifecycle.Lease(folder, patience=0.1) as again:
        assert again._fd is not None and lifecycle.owner_alive(folder)
    assert again._fd is None and not lifecycle.owner_alive(folder)
    assert not lifecycle.owner_alive(tmp_path / "never-made")


def test_lease_busy_names_the_owner(tmp_path):
    error = lifecycle.LeaseBusy(tmp_path, {"job_id": "12", "host": "n1", "pid": 5, "other": 1})
    assert error.directory == tmp_path and error.owner["other"] == 1
    assert str(error) == f"{tmp_path} is owned by a live process (job_id 12, host n1, pid 5)"
    assert str(lifecycle.LeaseBusy(tmp_path, {})) == f"{tmp_path} is owned by a live process (unknown)"


def test_reopen_sets_aside_and_records_the_reason(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / Files.RESULTS).write_text("{}")
    lifecycle.finish(folder, outputs=(Files.RESULTS,))
    lifecycle.reopen(folder, "results.json is missing", aside=(Files.RESULTS, "absent.bin"))
    assert not lifecycle.is_done(folder) and not (folder / Files.RESULTS).exists()
    assert len(list(folder.glob(f"{Files.RESULTS}.bad-*"))) == 1 and len(list(folder.glob(f"{Files.DONE}.bad-*"))) == 1
    record = json.loads((folder / Files.STATUS).read_text())
    assert record["state"] == "pending" and record["error"] == "results.json is missing"
    assert lifecycle.set_aside(folder / "absent.bin") is None


def test_verify_refuses_an_output_done_never_recorded(tmp_path):
    folder = tmp_path / "cell"
    folder.mkdir()
    (folder / Files.MODEL).write_bytes(b"w")
    lifecycle.finish(folder, outputs=())
    with pytest.raises(lifecycle.IntegrityError, match="does not match"):
        lifecycle.verify(folder, Files.MODEL)
    (folder / Files.MODEL).write_bytes(b"w")
    lifecycle.finish(folder, outputs=(Files.MODEL,))
    (folder / Files.MODEL).unlink()
    with pytest.raises(lifecycle.IntegrityError, match="is missing"):
        lifecycle.verify(folder, Files.MODEL)


def test_settings_are_written_when_absent_or_unreadable(tmp_path):
    lifecycle.write_settings(tmp_path, {"a": 1})
    assert json.loads((tmp_path / Files.SETTINGS).read_text()) == {"a": 1}
    (tmp_path / Files.SETTINGS).write_text("not json")
    lifecycle.write_settings(tmp_path, {"a": 2})  # an unreadable record is replaced, not trusted
    assert json.loads((tmp_path / Files.SETTINGS).read_text()) == {"a": 2}


def test_probing_the_owner_leaves_no_file_descriptor_open(tmp_path):
    folder = tmp_path / "cell"
    lifecycle.Lease(folder).acquire().release()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert not lifecycle.owner_alive(folder)
    assert len(os.listdir("/proc/self/fd")) == before


def test_every_transition_takes_a_path_as_a_string(tmp_path):
    """Callers hand over folders as str (submitit pickles, CLI arguments) as well as Path."""
    folder = str(tmp_path / "cell")
    with lifecycle.Lease(folder):
        lifecycle.start(folder, {"a": 1}, job_id="1")
        (tmp_path / "cell" / Files.MODEL).write_bytes(b"w")
        lifecycle.finish(folder, outputs=(Files.MODEL,))
    assert lifecycle.verify(folder, Files.MODEL) == tmp_path / "cell" / Files.MODEL
    lifecycle.reopen(folder, "again", aside=(Files.MODEL,))
    assert lifecycle.status(folder).error == "again"
    (tmp_path / "cell" / "x").write_text("1")
    assert lifecycle.set_aside(str(tmp_path / "cell" / "x")).name.startswith("x.bad-")


def test_a_status_is_a_value(tmp_path):
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        lifecycle.status(tmp_path).state = State.DONE


def test_finish_clears_the_error_of_an_earlier_failure(tmp_path):
    with lifecycle.Lease(tmp_path):
        lifecycle.start(tmp_path, {}, job_id="1")
        lifecycle.fail(tmp_path, "E: first try")
        lifecycle.finish(tmp_path)
    assert json.loads((tmp_path / Files.STATUS).read_text())["error"] is None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_busy_lease_waits_its_patience_retrying_and_leaks_nothing(tmp_path):
    """flock locks belong to an open file: a second Lease in the same process contends like another process."""
    holder = lifecycle.Lease(tmp_path).acquire()
    try:
        before = _open_fds()
        for patience in (0.3, None):  # None: the documented default, 2 s
            lease = lifecycle.Lease(tmp_path) if patience is None else lifecycle.Lease(tmp_path, patience=patience)
            start = time.monotonic()
            with pytest.raises(lifecycle.LeaseBusy):
                lease.acquire()
            waited = time.monotonic() - start
            expected = 2.0 if patience is None else patience
            assert expected <= waited < expected + 0.6, (patience, waited)  # retries every 0.05 s, then gives up
        assert _open_fds() == before
    finally:
        holder.release()
    before = _open_fds()
    lifecycle.Lease(tmp_path).acquire().release()
    assert _open_fds() == before


def test_the_lease_file_is_readable_by_every_user_the_umask_allows(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    lifecycle.Lease(tmp_path / "cell").acquire().release()
    assert (tmp_path / "cell" / Files.LEASE).stat().st_mode & 0o777 == 0o666 & ~umask


def test_done_intact_reads_only_and_finish_with_records_what_the_work_returned(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    assert not lifecycle.done_intact(folder)
    (folder / Files.RESULTS).write_text("{}")
    finished = lifecycle.Finished((Files.RESULTS,), ("all samples diverged",), {"step": 3})
    record = lifecycle.finish_with(folder, finished)
    assert record["sha256"] == {Files.RESULTS: lifecycle.file_sha256(folder / Files.RESULTS)}
    assert record["flags"] == ["all samples diverged"] and record["step"] == 3 and lifecycle.done_intact(folder)
    (folder / Files.RESULTS).write_text('{"edited": 1}')
    assert not lifecycle.done_intact(folder)
    assert lifecycle.is_done(folder) and (folder / Files.RESULTS).exists()  # it only reads: nothing set aside
