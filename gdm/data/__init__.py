"""Data layer: families of images, import, dedup, splits, shards, manifest, loading and streaming.

Entry points: `families.FAMILIES`, `prepare.prepare_dataset`, `store.load_split` / `load_params` /
`load_manifest`, `streaming.make_stream`. Submodules are imported on demand (they import torch).
"""

from gdm.data.errors import DataError

__all__ = ["DataError"]
