"""manifest.json: the record of a prepared dataset, written last, with a checksum of its own content.

`manifest_sha256` is `gdm.io.stable_hash` (sha256 of the canonical JSON) of every other field, so an
edited manifest is refused; the shard checksums inside it then protect the shards.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from gdm.data.errors import DataError
from gdm.io import atomic_write_json, read_json, stable_hash

MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout of shards or manifest changes


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an index list as little-endian int64 bytes (independent of the platform's int size)."""
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<i8").tobytes()).hexdigest()


def write_manifest(data_dir: Path, body: dict) -> dict:
    """Add the self-checksum and write manifest.json atomically; returns the manifest."""
    body = json.loads(json.dumps(body))  # normalise to plain JSON types (tuples -> lists)
    manifest = {**body, "manifest_sha256": stable_hash(body)}
    atomic_write_json(Path(data_dir) / MANIFEST, manifest)
    return manifest


def load_manifest(data_dir: Path) -> dict:
    """Read and verify data_dir/manifest.json; DataError naming the file if missing, unreadable or edited."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise DataError(f"{path} is missing: the dataset is not prepared; run gdm.data.prepare.prepare_dataset first")
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is unreadable ({err}); delete {data_dir} and prepare again") from err
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"} if isinstance(manifest, dict) else None
    if body is None or manifest.get("manifest_sha256") != stable_hash(body):
        raise DataError(
            f"{path} was modified after it was written (checksum mismatch); delete {data_dir} and prepare again"
        )
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} has format {manifest.get('format')}, this gdm reads {FORMAT}; prepare again")
    return manifest
