"""Train one cell (dataset, n, split) with a Lightning Trainer; resume, checkpoint, write model.pt.

`fit_cell` builds the network (initial weights seeded by the cell), the data module, a Trainer
(DDP over `devices × num_nodes` processes when there are several; gloo on CPU), checkpoints
`<cell dir>/last.ckpt` atomically every `checkpoint_every` steps and resumes from it, logs to a W&B
run whose id is the cell's, and on rank 0 writes `model.pt`, `metrics.jsonl` and DONE.
`load_denoiser` turns a model.pt back into the blind denoiser f(y) = y - net(y).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from gdm.cells import Cell, mark_done, write_status
from gdm.config import ExperimentConfig, ModelConfig, to_dict
from gdm.data.module import CellDataModule
from gdm.io import atomic_torch_save
from gdm.models import build_model
from gdm.training.checkpoint_io import AtomicCheckpointIO
from gdm.training.denoiser import BlindDenoiser
from gdm.training.lit_module import DenoiserModule
from gdm.training.loss import NonFiniteLossError
from gdm.training.seeds import cell_seed

__all__ = ["DenoiserModule", "BlindDenoiser", "NonFiniteLossError", "TrainingInterrupted", "fit_cell",
           "load_denoiser", "save_model", "build_cell_module"]

LAST_CKPT, MODEL_FILE, METRICS_FILE = "last.ckpt", "model.pt", "metrics.jsonl"


class TrainingInterrupted(RuntimeError):
    """fit returned before max_steps (signal, KeyboardInterrupt): the cell is not done; resume later."""


def build_cell_module(cfg: ExperimentConfig, cell: Cell) -> tuple[DenoiserModule, CellDataModule]:
    """The LightningModule (weights seeded by the cell) and the data of `cell`."""
    data_dir = cfg.run_dir / "data" / cell.dataset
    image_size = cfg.datasets[cell.dataset].image_size
    seed = cell_seed(cfg.trainer.seed, cell.cell_id)
    with torch.random.fork_rng(devices=[]):  # initial weights: a function of the cell, not of the process
        torch.manual_seed(seed % 2**63)
        net = build_model(cfg.model, image_size)
    world = cfg.trainer.devices * cfg.trainer.num_nodes
    data = CellDataModule(data_dir, cell.split, cell.n, batch_size=cfg.trainer.batch_size // world,
                          in_memory=cfg.trainer.in_memory, seed=seed, epoch_size=cfg.trainer.max_steps,
                          num_workers=cfg.trainer.num_workers, val_images=cfg.eval.psnr_images)
    module = DenoiserModule(net, cfg.trainer, seed=seed, psnr_sigmas=cfg.eval.psnr_sigmas,
                            metrics_path=cell.directory(cfg) / METRICS_FILE)
    return module, data


def make_trainer(cfg: ExperimentConfig, cell: Cell, *, progress: bool, plugins: Sequence[Any] | None,
                 callbacks: Sequence[Callback], logger: Any) -> L.Trainer:
    t = cfg.trainer
    checkpoint = ModelCheckpoint(dirpath=cell.directory(cfg), save_top_k=0, save_last=True,
                                 every_n_train_steps=t.checkpoint_every)
    world = t.devices * t.num_nodes
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy="ddp" if world > 1 else "auto", precision=t.precision, max_steps=t.max_steps,
        enable_progress_bar=progress, enable_model_summary=False, logger=logger,
        callbacks=[checkpoint, StatusCallback(cell.directory(cfg), t.checkpoint_every), *callbacks],
        plugins=[*(plugins or []), AtomicCheckpointIO()], log_every_n_steps=t.log_every,
        limit_val_batches=0, num_sanity_val_steps=0, sync_batchnorm=False, use_distributed_sampler=False,
        deterministic=True if on_cpu else "warn",  # some CUDA kernels have no deterministic version
        default_root_dir=cell.directory(cfg))


class StatusCallback(Callback):
    """status.json: the step reached, each time a checkpoint is written (rank 0)."""

    def __init__(self, directory: Path, every: int):
        self.directory, self.every = directory, every

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            write_status(self.directory, step=trainer.global_step)


def make_logger(cfg: ExperimentConfig, cell: Cell):
    """Lightning's WandbLogger for the cell's run (id = cell.wandb_id; offline unless configured)."""
    from lightning.pytorch.loggers import WandbLogger

    from gdm.tracking import wandb_kwargs

    kwargs = wandb_kwargs(cfg, run_id=cell.wandb_id(cfg), name=cell.cell_id, job_type="train", group="train")
    return WandbLogger(save_dir=kwargs.pop("dir"), **kwargs)


def prepare_network(module: DenoiserModule, cfg: ExperimentConfig) -> None:
    """Speed switches that leave the maths unchanged: channels_last memory, torch.compile (in place)."""
    if cfg.trainer.channels_last:
        module.net.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        module.net.compile()  # in place: state_dict keys stay those of the plain network


def fit_cell(cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, plugins: Sequence[Any] | None = None,
             callbacks: Sequence[Callback] = (), job_id: str | None = None) -> Path:
    """Train `cell` to cfg.trainer.max_steps (resuming from its last.ckpt); returns the cell directory.

    plugins: extra Lightning plugins (the launcher passes SLURMEnvironment(auto_requeue=False)).
    callbacks: extra Lightning callbacks. Raises NonFiniteLossError if the loss turns NaN/inf (the
    last good last.ckpt is kept) and TrainingInterrupted if fit stops early.
    """
    directory = cell.directory(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    module, data = build_cell_module(cfg, cell)
    prepare_network(module, cfg)
    trainer = make_trainer(cfg, cell, progress=progress, plugins=plugins, callbacks=callbacks,
                           logger=make_logger(cfg, cell) if cfg.wandb.mode != "disabled" else False)
    if trainer.is_global_zero:
        write_status(directory, step=0, **({"job_id": job_id} if job_id else {}))
    last = directory / LAST_CKPT
    try:
        trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
    finally:
        close_wandb(trainer)
    if trainer.global_step < cfg.trainer.max_steps or trainer.interrupted:
        raise TrainingInterrupted(f"cell {cell.cell_id} stopped at step {trainer.global_step} of "
                                  f"trainer.max_steps={cfg.trainer.max_steps}; run it again to resume from {last}")
    if trainer.is_global_zero:
        finish_cell(cfg, cell, module, trainer)
    return directory


def close_wandb(trainer: L.Trainer) -> None:
    """Finish the W&B run on rank 0 so an offline run is flushed to disk (also when training failed)."""
    for logger in trainer.loggers:
        if trainer.is_global_zero and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish(exit_code=0 if trainer.state.status == "finished" else 1)


def finish_cell(cfg: ExperimentConfig, cell: Cell, module: DenoiserModule, trainer: L.Trainer) -> None:
    directory = cell.directory(cfg)
    save_model(directory / MODEL_FILE, module.eval_net, cfg.model, cfg.datasets[cell.dataset].image_size)
    (directory / METRICS_FILE).touch()
    mark_done(directory, step=trainer.global_step, model=str(directory / MODEL_FILE))


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors under the plain network's keys (torch.compile in place keeps them)."""
    return {key: value.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for key, value in net.state_dict().items()}


def save_model(path: Path, net: nn.Module, model_cfg: ModelConfig, image_size: int) -> Path:
    """model.pt: {"model", "model_cfg", "image_size", "state_dict"}, atomic, weights_only-loadable."""
    payload = {"model": model_cfg.name, "model_cfg": to_dict(model_cfg), "image_size": int(image_size),
               "state_dict": plain_state_dict(net)}
    return atomic_torch_save(path, payload)


def load_denoiser(path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The eval-mode blind denoiser f(y) = y - net(y) of a model.pt (or of a cell directory holding one)."""
    path = Path(path)
    path = path / MODEL_FILE if path.is_dir() else path
    payload = torch.load(path, map_location=device, weights_only=True)
    net = build_model(ModelConfig(**payload["model_cfg"]), payload["image_size"])
    net.load_state_dict(payload["state_dict"])
    return BlindDenoiser(net).to(device).eval()
