"""Atomic writes: a writer that fails or is killed mid-write leaves the old file whole and no temp file;
the status and metrics files of a run are written that way (fault injected at the disk flush)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gdm import io
from gdm.training.records import append_record, read_records, trim_records

OLD = {"state": "running", "step": 3}


def _old_file(tmp_path: Path) -> Path:
    path = tmp_path / "status.json"
    io.atomic_write_json(path, OLD)
    return path


def _half_then(error: BaseException):
    def write(handle):
        handle.write(b'{"state": "do')  # half of the new record is on disk when the writer dies
        handle.flush()
        raise error

    return write


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_a_writer_failing_midway_leaves_the_old_file_and_no_temp_file(tmp_path, error):
    path = _old_file(tmp_path)
    with pytest.raises(type(error)):
        io.atomic_write(path, _half_then(error))
    assert io.read_json(path) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_a_writer_killed_midway_leaves_the_old_file_whole(tmp_path):
    """SIGKILL cannot be cleaned up after: the old file is whole; the torn bytes are only in a hidden temp."""
    path = _old_file(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal
        from gdm.io import atomic_write

        def write(handle):
            handle.write(b'{{"state": "do' + b" " * 1_000_000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        atomic_write({str(path)!r}, write)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert io.read_json(path) == OLD
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "status.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".status.json.") and leftovers[0].endswith(".tmp")


def test_a_completed_write_replaces_the_file_with_shared_permissions(tmp_path):
    path = _old_file(tmp_path / "new" / "folder")  # parents are created
    io.atomic_write_json(path, {"state": "done", "values": [1.5, 2]})
    assert json.loads(path.read_text()) == {"state": "done", "values": [1.5, 2]}
    assert path.read_text().endswith("\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["status.json"]


def test_json_writes_numpy_tensors_and_paths_and_refuses_the_rest(tmp_path):
    import numpy as np
    import torch

    path = io.atomic_write_json(tmp_path / "r.json", {"a": np.arange(3), "t": torch.tensor([0.5]), "p": Path("x/y")})
    assert io.read_json(path) == {"a": [0, 1, 2], "t": [0.5], "p": "x/y"}
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        io.atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


def _failing_flush(monkeypatch):
    def flush(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", flush)


def test_status_file_survives_a_failed_update(tmp_path, monkeypatch):
    from gdm import lifecycle

    lifecycle.record_step(tmp_path, 3)
    before = (tmp_path / "status.json").read_bytes()
    _failing_flush(monkeypatch)
    with pytest.raises(OSError):
        lifecycle.record_step(tmp_path, 6)
    monkeypatch.undo()
    assert (tmp_path / "status.json").read_bytes() == before and json.loads(before)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_metrics_trim_survives_a_failed_write_and_drops_a_torn_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    for step in (1, 2, 3, 4):
        append_record(path, {"step": step, "train/loss": 1.0 / step})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"step": 5, "train/lo')  # a rank killed while appending
    assert [r["step"] for r in read_records(path)] == [1, 2, 3, 4]  # the torn line is not a record
    before = path.read_bytes()
    _failing_flush(monkeypatch)
    with pytest.raises(OSError):
        trim_records(path, 2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    trim_records(path, 2)  # the resume from a step-2 checkpoint
    assert read_records(path) == [{"step": 1, "train/loss": 1.0}, {"step": 2, "train/loss": 0.5}]
    assert path.read_text().endswith("}\n") and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_metrics_lines_are_canonical_json_and_a_trim_keeps_records_without_a_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_record(path, {"step": 2, "b": 1, "a": 0.5})
    append_record(path, {"note": "no step"})
    assert path.read_text() == '{"a": 0.5, "b": 1, "step": 2}\n{"note": "no step"}\n'  # sorted keys, one per line
    trim_records(path, 0)  # a resume from step 0 keeps what has no step, drops step 2
    assert path.read_text() == '{"note": "no step"}\n'
    append_record(path, {"z": 1, "step": 1})
    trim_records(path, 1)
    assert path.read_text() == '{"note": "no step"}\n{"step": 1, "z": 1}\n'
    path.write_text('{"z": 2, "step": 1}\n')  # a line another writer left unsorted
    trim_records(path, 1)
    assert path.read_text() == '{"step": 1, "z": 2}\n'  # the trim rewrites canonical lines
