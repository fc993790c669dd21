"""Lightning CheckpointIO that writes atomically, only finite states, and loads with weights_only=True.

Lightning writes checkpoints through fsspec straight onto the target name; a job killed mid-write
would leave a truncated last.ckpt and the cell could never resume. Here the checkpoint goes to a
temporary file beside it, is fsynced, then renamed over the old one (gdm.io.atomic_write). A state
holding NaN or ±inf (weights, BF-BN buffers, Adam moments) is refused before anything is written,
so the last.ckpt kept is always one a rerun can resume from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gdm.io import atomic_torch_save
from gdm.training.health import check_finite


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        step = checkpoint.get("global_step")
        what = f"the training state at step {step} (not written; the previous {Path(path).name} is kept)"
        check_finite({"state_dict": checkpoint.get("state_dict", {}),
                      "optimizer_states": checkpoint.get("optimizer_states", [])}, what)
        atomic_torch_save(path, checkpoint)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
