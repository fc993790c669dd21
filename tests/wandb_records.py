"""Read an offline W&B run file (run-<id>.wandb) back into protobuf records, for tests.

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB
blocks of records, each with a 7-byte header (crc32, little-endian length, type: 1 full, 2 first,
3 middle, 4 last) followed by a serialized `wandb_internal_pb2.Record`; a block's last < 7 bytes are
padding.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pos, parts = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero fill at the end of a block
            pos += left
            continue
        chunk, pos = data[pos + HEADER:pos + HEADER + length], pos + HEADER + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def flushed_records(run_dir: Path) -> list:
    """The records of a run finished in this process. `run.finish()` ends by publishing `inform_finish`
    to W&B's service without waiting for a reply, and the service closes the run's log after that, so a
    read right after `finish()` can see a file still unwritten (CI once saw one without its run record).
    `wandb.teardown()` waits for the service process to exit, which closes every log it holds."""
    import wandb

    wandb.teardown()
    return [record for path in sorted(Path(run_dir).glob("*.wandb")) for record in read_records(path)]


def run_summary(path: Path) -> dict:
    """What tests ask of a run: its run record (id, job type, group, tags, config) and logged keys."""
    import json

    run, history, artifacts, config = None, {}, [], {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            for item in record.history.item:
                history[item.key or "/".join(item.nested_key)] = item.value_json
        elif kind == "artifact":
            artifacts.append(record.artifact)
    assert run is not None, f"{path} has no run record"
    return {"id": run.run_id, "job_type": run.job_type, "group": run.run_group, "tags": list(run.tags),
            "name": run.display_name, "config": config, "history": history, "artifacts": artifacts}
