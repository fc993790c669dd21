"""metrics.jsonl: one JSON record per logged step of a cell (rank 0 appends; a resume trims the tail)."""

from __future__ import annotations

import json
from pathlib import Path

from gdm.io import atomic_write_text


def append_record(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def trim_records(path: Path, last_step: int) -> None:
    """Drop records after `last_step` (written after the checkpoint a resumed run starts from)."""
    if path.exists():
        kept = [r for r in read_records(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
