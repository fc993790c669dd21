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
