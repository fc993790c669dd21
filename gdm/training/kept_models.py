"""The training-time axis: model_step<S>.pt at each step S of trainer.keep_models_at (docs/SCIENCE.md, Training).

A kept model is the evaluated weights after S steps (the EMA's if trainer.ema_decay > 0), with precise BN
statistics when trainer.precise_bn_batches > 0, written by rank 0 in model.pt's format (gdm.training.model_file:
atomic, finite only, loads with weights_only=True) and checksummed in the cell's DONE with model.pt
(gdm.cells.cell_outputs). It is written in on_train_batch_end, which Lightning runs before ModelCheckpoint's
(checkpoint callbacks always run last): a last.ckpt at step S exists only once model_step<S>.pt does, and a
resume from an earlier last.ckpt writes the same file again.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from gdm.cells import Files
from gdm.config import ModelConfig
from gdm.training.lit_module import DenoiserModule
from gdm.training.model_file import save_model


class KeepModels(Callback):
    """Saves model_step<S>.pt into `directory` after each step S of `steps`."""

    def __init__(self, directory: Path, steps: list[int], model_cfg: ModelConfig, image_size: int):
        self.directory, self.steps = Path(directory), frozenset(steps)
        self.model_cfg, self.image_size = model_cfg, image_size

    def on_train_batch_end(self, trainer: L.Trainer, module: DenoiserModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step not in self.steps:
            return
        net = module.saved_net()  # every rank: precise BN averages over the process group
        if trainer.is_global_zero:
            save_model(self.directory / Files.model_at(step), net, self.model_cfg, self.image_size)
