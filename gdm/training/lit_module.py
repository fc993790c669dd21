"""DenoiserModule: one training step of a blind denoiser, as a LightningModule.

Each step draws (on the device, from a generator seeded by (cell, step, rank)) the batch indices,
σ per image and the noise, so the step's randomness is a function of the step alone: a run resumed
from last.ckpt reproduces the uninterrupted one. Loss: mean ‖net(y) - σz‖² (gdm.training.loss), optionally
weighted per image by λ(σ) (gdm.training.loss_weighting). Adam with the learning rate halved every
`lr_halve_every` steps (`learning_rate`, a closed form of the step set before each step, as EDM does); optional
EMA of the weights; optional precise BN statistics of the evaluated weights after the last step and for each
kept model (gdm.training.precise_bn).

No step waits for the device (docs/CONTRACTS.md, The training step): the loss's finiteness is recorded on the
device each step and read on the host only at the steps that log, validate, write last.ckpt or end training;
the loss is read there too. Validation PSNR runs in true fp32 (gdm.precision), as evaluation does.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from gdm.analysis.psnr import psnr_curve
from gdm.config import TrainerConfig
from gdm.precision import true_fp32
from gdm.seeds import precise_bn_generator, step_generator
from gdm.training.denoiser import BlindDenoiser
from gdm.training.ema import make_ema, update_ema
from gdm.training.loss import NO_STEP, add_noise, check_first_non_finite, denoising_loss, first_non_finite
from gdm.training.loss_weighting import loss_weights
from gdm.training.precise_bn import recompute_statistics
from gdm.training.records import append_record, trim_records
from gdm.training.sigma import draw_sigma


def learning_rate(lr: float, halve_every: int, step: int) -> float:
    """lr(step) = lr · 0.5^⌊step / halve_every⌋ (the authors halve it every 100 epochs); halve_every 0: constant.
    Halving is exact in binary floating point, so this equals torch's StepLR(gamma=0.5) running product bit for
    bit (tests/test_training_maths.py), and, being a function of the step alone, needs no state to resume."""
    return lr * 0.5 ** (step // halve_every) if halve_every > 0 else lr


def make_adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; fused into one kernel per step on CUDA. The CPU keeps torch's default implementation, so CPU
    trajectories stay bit-identical to earlier releases (and to a resume of their checkpoints)."""
    return torch.optim.Adam(params, lr=lr, fused=True) if device.type == "cuda" else torch.optim.Adam(params, lr=lr)


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
        self.loss_weight = loss_weights(cfg)  # None: the plain mean (trainer.loss_weighting=uniform)
        self.psnr_sigmas, self.psnr_seed, self.psnr_batch = list(psnr_sigmas), psnr_seed, psnr_batch
        self.metrics_path = metrics_path
        self.images, self.val_batches = images, dict(val_batches or {})
        self.last_loss: torch.Tensor | None = None
        self.first_non_finite: torch.Tensor | None = None  # on the device: first step with a NaN/inf loss
        self.checked_to = 0  # steps before this one have had their losses' finiteness read on the host

    @property
    def eval_net(self) -> nn.Module:
        """The weights that are evaluated and saved: the EMA if trainer.ema_decay > 0."""
        return self.ema if self.ema is not None else self.net

    def configure_optimizers(self):
        return make_adam(self.net.parameters(), self.cfg.lr, self.device)  # its lr is set each step (optimizer_step)

    def on_train_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and datamodule.in_memory:  # the data module keeps no copy alive (CONTRACTS.md)
            released = datamodule.release_images()
            self.images = released if self.images is None else self.images
        if not self.val_batches and datamodule is not None:
            self.val_batches = datamodule.val_batches()
        if self.images is not None:
            self.images = self.images.to(self.device)  # resident: batches are gathered on the device
        self.val_batches = {k: v.to(self.device) for k, v in self.val_batches.items()}
        if self.metrics_path is not None and self.global_rank == 0:
            trim_records(self.metrics_path, self.global_step)  # records past the resumed checkpoint
        self.first_non_finite = torch.tensor(NO_STEP, device=self.device)
        self.checked_to = self.global_step

    def lr_at(self, step: int) -> float:
        """The config's learning rate at `step`: after a resume the config's trainer.lr and lr_halve_every hold
        (a diverged run's last.ckpt can continue at a lower trainer.lr), not the checkpoint's."""
        return learning_rate(self.cfg.lr, self.cfg.lr_halve_every, step)

    def per_rank_batch(self) -> int:
        return self.cfg.batch_size // self.trainer.world_size

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        generator = step_generator(self.seed, self.global_step, self.global_rank, self.device)
        clean = self.draw_batch(batch, generator)
        sigma = draw_sigma(self.cfg.sigma_law, clean.shape[0], self.cfg.sigma_min, self.cfg.sigma_max, generator)
        noisy, noise = add_noise(clean, sigma, generator)
        loss = denoising_loss(self.net, noisy, noise, None if self.loss_weight is None else self.loss_weight(sigma))
        self.first_non_finite = first_non_finite(self.first_non_finite, loss, self.global_step)
        self.last_loss = loss.detach()
        return loss

    def check_due(self, steps_done: int) -> bool:
        """Whether the losses' finiteness is read after `steps_done` steps: every trainer.log_every steps,
        before each last.ckpt (trainer.checkpoint_every) and validation (trainer.val_every), and at the end."""
        periods = (self.cfg.log_every, self.cfg.checkpoint_every, self.cfg.val_every)
        return 0 < self.trainer.max_steps <= steps_done or any(p and steps_done % p == 0 for p in periods)

    def check_losses(self, steps_done: int) -> None:
        """NonFiniteLossError if any rank's loss was non-finite since the last check. The records are gathered
        over the process group, so every rank raises at the same check (a NaN on one rank has reached every
        rank's weights through the gradient all-reduce by then); one host-device sync."""
        if self.first_non_finite is None or steps_done <= self.checked_to:
            return
        check_first_non_finite(self.all_gather(self.first_non_finite), range(self.checked_to, steps_done))
        self.checked_to = steps_done

    def draw_batch(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Resident images: B indices drawn with replacement; streaming: the loader's batch."""
        if self.images is None:
            return batch
        index = torch.randint(len(self.images), (self.per_rank_batch(),), generator=generator, device=self.device)
        return self.images[index]

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Adam step at lr(step), then the EMA update — inside the step, so a checkpoint taken after it holds both."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(self.global_step)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            update_ema(self.ema, self.net, self.cfg.ema_decay)
        steps_done = self.global_step + 1  # Lightning counts this step once the hook returns
        if self.check_due(steps_done):  # before the callbacks' on_train_batch_end, where last.ckpt is written
            self.check_losses(steps_done)
        if steps_done == self.trainer.max_steps and self.cfg.precise_bn_batches:
            self.recompute_bn(self.eval_net)  # here, so the last last.ckpt (and a resume from it) holds them too

    def saved_net(self) -> nn.Module:
        """The weights to save now: the evaluated net, with BN statistics recomputed for them on a copy when
        trainer.precise_bn_batches > 0 (training goes on with its own). Every rank must call it (all-reduce)."""
        if not self.cfg.precise_bn_batches:
            return self.eval_net
        net = copy.deepcopy(self.eval_net)
        self.recompute_bn(net)
        return net

    def recompute_bn(self, net: nn.Module) -> None:
        """Precise BN (gdm.training.precise_bn) of `net` on this rank's K noisy batches, in true fp32 as
        evaluation runs. With EMA this replaces the raw net's statistics that update_ema copied."""
        with torch.autocast(self.device.type, enabled=False), true_fp32():
            recompute_statistics(net, self.precise_bn_inputs())

    def precise_bn_inputs(self) -> Iterator[torch.Tensor]:
        """trainer.precise_bn_batches noisy batches y = x + σz of this rank's batch size, σ from the training
        law, from a generator keyed by (cell, rank) alone: the same batches before every save."""
        generator = precise_bn_generator(self.seed, self.global_rank, self.device)
        clean = self.precise_bn_images(generator)
        for _ in range(self.cfg.precise_bn_batches):
            x = next(clean).to(self.device)
            sigma = draw_sigma(self.cfg.sigma_law, x.shape[0], self.cfg.sigma_min, self.cfg.sigma_max, generator)
            yield add_noise(x, sigma, generator)[0]

    def precise_bn_images(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Clean batches: drawn with replacement from the resident images, or a fresh pass of the stream."""
        if self.images is None:
            yield from self.trainer.datamodule.train_dataloader()
            return
        while True:
            yield self.images[torch.randint(len(self.images), (self.per_rank_batch(),), generator=generator,
                                            device=self.device)]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step  # optimisation steps done
        if self.global_rank != 0:
            return
        if step % self.cfg.log_every == 0 and self.last_loss is not None:
            lr, loss = self.lr_at(step), self.last_loss.item()  # lr(step): the rate of the next step
            self.record({"train/loss": loss, "lr": lr}, step)
            if self.trainer.progress_bar_callback is not None:  # a host tensor: the bar reads it without a sync
                self.log("train/loss", torch.tensor(loss), prog_bar=True, logger=False, rank_zero_only=True)
        final = step >= self.trainer.max_steps
        if final or (self.cfg.val_every and step % self.cfg.val_every == 0):
            self.record(self.validation_psnr(), step)

    @torch.no_grad()
    def validation_psnr(self) -> dict[str, float]:
        """val/psnr_<train|test>_sigma<σ> of the evaluated weights on the fixed batches (rank 0 only):
        gdm.analysis.psnr's curve on evaluation's noise draws, in eval mode and true fp32 (no TF32), as the
        pair's evaluation computes it."""
        metrics, was_training = {}, self.eval_net.training
        self.eval_net.eval()
        with torch.autocast(self.device.type, enabled=False), true_fp32():
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
        """Check the losses not checked yet; give every rank rank 0's buffers (BF-BN running σ is per rank
        after the last step)."""
        self.check_losses(self.global_step)
        if dist.is_available() and dist.is_initialized():
            for buffer in self.buffers():
                dist.broadcast(buffer, src=0)
