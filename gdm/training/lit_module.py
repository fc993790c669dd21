"""DenoiserModule: one training step of a blind denoiser, as a LightningModule.

Each step draws (on the device, from a generator seeded by (cell, step, rank)) the batch indices,
σ per image and the noise, so the step's randomness is a function of the step alone: a run resumed
from last.ckpt reproduces the uninterrupted one. Loss: mean ‖net(y) - σz‖² (gdm.training.loss).
Adam with the learning rate halved every `lr_halve_every` steps (torch's StepLR); optional EMA of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from gdm.analysis.psnr import psnr_curve
from gdm.config import TrainerConfig
from gdm.seeds import step_generator
from gdm.training.denoiser import BlindDenoiser
from gdm.training.ema import make_ema, update_ema
from gdm.training.loss import add_noise, check_finite, denoising_loss
from gdm.training.records import append_record, trim_records
from gdm.training.sigma import draw_sigma


def halving(halve_every: int) -> dict[str, int | float]:
    """StepLR's settings for lr(step) = lr(0) · 0.5^⌊step / halve_every⌋ (the authors halve it every 100
    epochs); halve_every 0: constant. Halving is exact in binary floating point, so StepLR's running
    product equals this closed form bit for bit."""
    return {"step_size": halve_every, "gamma": 0.5} if halve_every > 0 else {"step_size": 1, "gamma": 1.0}


class DenoiserModule(L.LightningModule):
    """Trains `net` (a noise predictor) as the blind denoiser f(y) = y - net(y).

    seed: the cell's seed (gdm.seeds.cell_seed). psnr_sigmas: σ of the validation PSNR; psnr_seed and
    psnr_batch: its noise seed and batch size (evaluation's eval.seed and eval.batch_size).
    metrics_path: metrics.jsonl that rank 0 appends to (None: no file).
    images: resident training images [N, 1, H, W]; None takes them from the datamodule at fit start.
    """

    def __init__(
        self,
        net: nn.Module,
        cfg: TrainerConfig,
        *,
        seed: int,
        psnr_sigmas: Sequence[float] = (0.1,),
        psnr_seed: int = 0,
        psnr_batch: int = 256,
        metrics_path: Path | None = None,
        images: torch.Tensor | None = None,
        val_batches: dict[str, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.net, self.cfg, self.seed = net, cfg, seed
        self.ema = make_ema(net) if cfg.ema_decay > 0 else None
        self.psnr_sigmas, self.psnr_seed, self.psnr_batch = list(psnr_sigmas), psnr_seed, psnr_batch
        self.metrics_path = metrics_path
        self.images, self.val_batches = images, dict(val_batches or {})
        self.last_loss: torch.Tensor | None = None

    @property
    def eval_net(self) -> nn.Module:
        """The weights that are evaluated and saved: the EMA if trainer.ema_decay > 0."""
        return self.ema if self.ema is not None else self.net

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, **halving(self.cfg.lr_halve_every))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.images is None and datamodule is not None and datamodule.in_memory:
            self.images = datamodule.images
        if not self.val_batches and datamodule is not None:
            self.val_batches = datamodule.val_batches()
        if self.images is not None:
            self.images = self.images.to(self.device)  # resident: batches are gathered on the device
        self.val_batches = {k: v.to(self.device) for k, v in self.val_batches.items()}
        if self.metrics_path is not None and self.global_rank == 0:
            trim_records(self.metrics_path, self.global_step)  # records past the resumed checkpoint
        self.apply_configured_lr()

    def apply_configured_lr(self) -> None:
        """The config's lr and halving period win over a resumed checkpoint's (StepLR's state holds both):
        a diverged run's last.ckpt can continue at a lower trainer.lr. With the same settings (every
        ordinary resume) nothing changes, bit for bit."""
        scheduler, settings = self.lr_schedulers(), halving(self.cfg.lr_halve_every)
        if scheduler is None or (scheduler.base_lrs == [self.cfg.lr]
                                 and all(getattr(scheduler, k) == v for k, v in settings.items())):
            return
        scheduler.base_lrs = [self.cfg.lr]
        scheduler.step_size, scheduler.gamma = settings["step_size"], settings["gamma"]
        factor = scheduler.gamma ** (self.global_step // scheduler.step_size)  # StepLR's closed form
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = self.cfg.lr * factor

    def per_rank_batch(self) -> int:
        return self.cfg.batch_size // self.trainer.world_size

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        generator = step_generator(self.seed, self.global_step, self.global_rank, self.device)
        clean = self.draw_batch(batch, generator)
        sigma = draw_sigma(self.cfg.sigma_law, clean.shape[0], self.cfg.sigma_min, self.cfg.sigma_max, generator)
        noisy, noise = add_noise(clean, sigma, generator)
        loss = denoising_loss(self.net, noisy, noise)
        check_finite(loss, self.global_step, self.ranks_non_finite(loss))
        self.last_loss = loss.detach()
        self.log("train/loss", self.last_loss, prog_bar=True, logger=False)
        return loss

    def ranks_non_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """How many ranks hold a non-finite loss this step (summed over the process group), so that all
        ranks stop together; one rank alone reads its own loss."""
        flag = (~torch.isfinite(loss.detach())).float()
        return self.trainer.strategy.reduce(flag, reduce_op="sum") if self.trainer.world_size > 1 else flag

    def draw_batch(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Resident images: B indices drawn with replacement; streaming: the loader's batch."""
        if self.images is None:
            return batch
        index = torch.randint(len(self.images), (self.per_rank_batch(),), generator=generator, device=self.device)
        return self.images[index]

    def optimizer_step(self, *args, **kwargs) -> None:
        """Adam step, then the EMA update — inside the step, so a checkpoint taken after it holds both."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            update_ema(self.ema, self.net, self.cfg.ema_decay)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step  # optimisation steps done
        if self.global_rank != 0:
            return
        if step % self.cfg.log_every == 0 and self.last_loss is not None:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.record({"train/loss": self.last_loss.item(), "lr": lr}, step)
        final = step >= self.trainer.max_steps
        if final or (self.cfg.val_every and step % self.cfg.val_every == 0):
            self.record(self.validation_psnr(), step)

    @torch.no_grad()
    def validation_psnr(self) -> dict[str, float]:
        """val/psnr_<train|test>_sigma<σ> of the evaluated weights on the fixed batches (rank 0 only):
        gdm.analysis.psnr's curve on evaluation's noise draws, in eval mode and fp32."""
        metrics, was_training = {}, self.eval_net.training
        self.eval_net.eval()
        with torch.autocast(self.device.type, enabled=False):
            for name, images in self.val_batches.items():
                curve = psnr_curve(BlindDenoiser(self.eval_net), images, self.psnr_sigmas, seed=self.psnr_seed,
                                   batch_size=self.psnr_batch, device=self.device)
                metrics.update({f"val/psnr_{name}_sigma{sigma:g}": value
                                for sigma, value in zip(curve["sigma"], curve["output_psnr"], strict=True)})
        self.eval_net.train(was_training)
        return metrics

    def record(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
        if self.metrics_path is not None:
            append_record(self.metrics_path, {"step": step, **metrics})

    def on_train_end(self) -> None:
        """Give every rank rank 0's buffers (BF-BN running σ is per rank after the last step)."""
        if dist.is_available() and dist.is_initialized():
            for buffer in self.buffers():
                dist.broadcast(buffer, src=0)
