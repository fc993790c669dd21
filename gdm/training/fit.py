"""Train one cell (dataset, n, split) with a Lightning Trainer; resume, checkpoint, write model.pt.

`fit_cell` builds the network (initial weights seeded by the cell), the data module, a Trainer
(DDP over `devices × num_nodes` processes when there are several; gloo on CPU), checkpoints
`<cell dir>/last.ckpt` atomically every `checkpoint_every` steps and resumes from it, logs to a W&B
run whose id is the cell's, and on rank 0 writes `model.pt` (and `model_step<S>.pt` at each step of
trainer.keep_models_at, gdm.training.kept_models) and `metrics.jsonl`, returning what the cell's DONE
records (`lifecycle.Finished`: the checksums of gdm.cells.cell_outputs, flags, step and validation PSNR) to
its owner, `launch.task.run_owned`, which writes settings.json and DONE. A last.ckpt that cannot be read is
set aside and training starts over; a model whose final weights or validation PSNR are not finite fails
the cell instead of finishing it.
`load_denoiser` (gdm.training.model_file) turns a model.pt back into the blind denoiser.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from gdm import lifecycle, wandb_log
from gdm.cells import Cell, Files, cell_outputs, data_dir
from gdm.config import ExperimentConfig
from gdm.data.module import CellDataModule
from gdm.models import build_model
from gdm.seeds import cell_seed, replicate_seed
from gdm.training.checkpoint_io import AtomicCheckpointIO
from gdm.training.health import NOT_DENOISING, check_finite, denoises
from gdm.training.kept_models import KeepModels
from gdm.training.lit_module import DenoiserModule
from gdm.training.model_file import save_model

__all__ = ["TrainingInterrupted", "fit_cell", "build_cell_module", "usable_checkpoint"]

log = logging.getLogger(__name__)


class TrainingInterrupted(RuntimeError):
    """fit returned before max_steps (signal, KeyboardInterrupt): the cell is not done; resume later."""


def build_cell_module(cfg: ExperimentConfig, cell: Cell) -> tuple[DenoiserModule, CellDataModule]:
    """The LightningModule (weights seeded by the cell) and the data of `cell`."""
    image_size = cfg.datasets[cell.dataset].image_size
    seed = cell_seed(replicate_seed(cfg.trainer.seed, cell.replicate), cell.cell_id)
    with torch.random.fork_rng(devices=[]):  # initial weights: a function of the cell, not of the process
        torch.manual_seed(seed % 2**63)
        net = build_model(cfg.model, image_size)
    world = cfg.trainer.devices * cfg.trainer.num_nodes
    data = CellDataModule(data_dir(cfg, cell.dataset), cell.split, cell.n, batch_size=cfg.trainer.batch_size // world,
                          in_memory=cfg.trainer.in_memory, seed=seed, epoch_size=cfg.trainer.max_steps,
                          num_workers=cfg.trainer.num_workers, val_images=cfg.eval.psnr_images)
    module = DenoiserModule(
        net,
        cfg.trainer,
        seed=seed,
        psnr_sigmas=cfg.eval.psnr_sigmas,
        psnr_seed=cfg.eval.seed,
        psnr_batch=cfg.eval.batch_size,
        metrics_path=cell.directory(cfg) / Files.METRICS,
    )
    return module, data


def deterministic_mode(on_cpu: bool) -> bool | Literal["warn"]:
    """Lightning's `deterministic` for training: True on the CPU; "warn" on a GPU, where some kernels have no
    deterministic version. Either way Lightning makes cuDNN pick deterministic convolution algorithms only and
    turns cudnn.benchmark off (process-wide); benchmarks/bench_train.py measures the GPU with the same flags."""
    return True if on_cpu else "warn"


def make_trainer(cfg: ExperimentConfig, cell: Cell, *, progress: bool, plugins: Sequence[Any] | None,
                 callbacks: Sequence[Callback], logger: Any) -> L.Trainer:
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=cell.directory(cfg),
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,
        every_n_train_steps=t.checkpoint_every,
    )  # always last.ckpt: the folder is ours alone
    world = t.devices * t.num_nodes
    kept = KeepModels(cell.directory(cfg), t.keep_models_at, cfg.model, cfg.datasets[cell.dataset].image_size)
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy="ddp" if world > 1 else "auto", precision=t.precision, max_steps=t.max_steps,
        enable_progress_bar=progress, enable_model_summary=False, logger=logger,
        callbacks=[checkpoint, StatusCallback(cell.directory(cfg), t.checkpoint_every), kept, *callbacks],
        plugins=[*(plugins or []), AtomicCheckpointIO()], log_every_n_steps=t.log_every,
        limit_val_batches=0, num_sanity_val_steps=0, sync_batchnorm=False, use_distributed_sampler=False,
        deterministic=deterministic_mode(on_cpu),
        default_root_dir=cell.directory(cfg))


class StatusCallback(Callback):
    """status.json: the step reached, each time a checkpoint is written (rank 0)."""

    def __init__(self, directory: Path, every: int):
        self.directory, self.every = directory, every

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every == 0:
            lifecycle.record_step(self.directory, trainer.global_step)


def prepare_network(module: DenoiserModule, cfg: ExperimentConfig) -> None:
    """Speed switches that leave the maths unchanged: channels_last memory, torch.compile (in place)."""
    if cfg.trainer.channels_last:
        module.net.to(memory_format=torch.channels_last)
    if cfg.trainer.compile:
        module.net.compile()  # in place: state_dict keys stay those of the plain network


def fit_cell(cfg: ExperimentConfig, cell: Cell, *, progress: bool = False, plugins: Sequence[Any] | None = None,
             callbacks: Sequence[Callback] = ()) -> lifecycle.Finished | None:
    """Train `cell` to cfg.trainer.max_steps (resuming from its last.ckpt); the work only, not the folder's life.

    Returns, on rank 0, what the cell's DONE records (model.pt to checksum, flags, step, validation PSNR) with
    the W&B model artifact to log once DONE is written; None on DDP ranks > 0, which write nothing.
    plugins: extra Lightning plugins (the launcher passes SLURMEnvironment(auto_requeue=False)).
    callbacks: extra Lightning callbacks. Raises NonFiniteLossError if the loss turns NaN/inf and
    NonFiniteModelError if the weights do (the last finite last.ckpt is kept either way), and
    TrainingInterrupted if fit stops early.
    """
    directory = cell.directory(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    module, data = build_cell_module(cfg, cell)
    prepare_network(module, cfg)
    trainer = make_trainer(cfg, cell, progress=progress, plugins=plugins, callbacks=callbacks,
                           logger=wandb_log.train_logger(cfg, cell) if cfg.wandb.mode != "disabled" else False)
    last = usable_checkpoint(directory / Files.LAST_CKPT)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=last)
        if trainer.global_step < cfg.trainer.max_steps or trainer.interrupted:
            raise TrainingInterrupted(f"cell {cell.cell_id} stopped at step {trainer.global_step} of "
                                      f"trainer.max_steps={cfg.trainer.max_steps}; run it again to resume from "
                                      f"{directory / Files.LAST_CKPT}")
        if not trainer.is_global_zero:
            return None
        finished = finish_cell(cfg, cell, module, data, trainer)
    except BaseException:
        if trainer.is_global_zero:
            wandb_log.finish_run(wandb_log.active_run(trainer), False)
        raise
    run = wandb_log.active_run(trainer)
    return replace(finished, after_done=lambda done: publish_model(cfg, cell, run, done))


def publish_model(cfg: ExperimentConfig, cell: Cell, run: Any | None, done: dict) -> None:
    """Once DONE is written: model.pt as a W&B artifact with the checksum DONE recorded, then the run is
    finished (flushed to disk when offline)."""
    if run is None:
        return
    ok = False
    try:
        wandb_log.log_model(cfg, run, cell, cell.directory(cfg) / Files.MODEL, done["sha256"][Files.MODEL])
        ok = True
    finally:
        wandb_log.finish_run(run, ok)


def usable_checkpoint(path: Path) -> Path | None:
    """`path` if it loads (weights_only) with finite values; a bad one is set aside and None returned.

    A last.ckpt is written atomically and only from finite states, so this catches damage from
    outside (a full disk, a copy cut short, a bit flip): training starts over rather than stays stuck.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        check_finite(state.get("state_dict", {}), str(path))
        return path
    except Exception as err:  # truncated zip, unpickling error, NaN weights: all unusable
        aside = lifecycle.set_aside(path)
        log.warning("%s cannot be resumed from (%s: %s); set aside as %s, training starts from step 0",
                    path, type(err).__name__, err, aside)
        return None


def finish_cell(cfg: ExperimentConfig, cell: Cell, module: DenoiserModule, data: CellDataModule,
                trainer: L.Trainer) -> lifecycle.Finished:
    """model.pt from finite weights after a finite final validation; returns what DONE records of them."""
    directory = cell.directory(cfg)
    psnr = final_validation(module, data)
    check_finite({"final validation PSNR": list(psnr.values())}, f"cell {cell.cell_id}")
    save_model(directory / Files.MODEL, module.eval_net, cfg.model, cfg.datasets[cell.dataset].image_size)
    (directory / Files.METRICS).touch()
    curve = psnr_by_sigma(psnr, "test") or psnr_by_sigma(psnr, "train")
    flags = () if not curve or denoises(curve) else (NOT_DENOISING,)
    return lifecycle.Finished(outputs=cell_outputs(cfg), flags=flags,
                              facts={"step": trainer.global_step, "validation_psnr": psnr})


def final_validation(module: DenoiserModule, data: CellDataModule) -> dict[str, float]:
    """val/psnr_<train|test>_sigma<σ> of the evaluated weights (also after a resume at max_steps)."""
    if not module.val_batches:
        module.val_batches = {k: v.to(module.device) for k, v in data.val_batches().items()}
    return module.validation_psnr()


def psnr_by_sigma(metrics: dict[str, float], images: str) -> dict[float, float]:
    """{σ: PSNR} of one validation batch ('train' or 'test'), from its val/psnr_<images>_sigma<σ> keys."""
    prefix = f"val/psnr_{images}_sigma"
    return {float(k[len(prefix):]): v for k, v in metrics.items() if k.startswith(prefix)}
