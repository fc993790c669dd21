"""Denoising PSNR per noise level (docs/SCIENCE.md: PSNR = 10 log10(1/MSE) per image, then averaged)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

MAX_PSNR_DB = 100.0  # an exact reconstruction (MSE 0, e.g. the memorizer on its own images) counts as this


def image_psnr(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1] (fp32), [N]; capped at MAX_PSNR_DB so means stay finite."""
    value = peak_signal_noise_ratio(estimate.float(), clean.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return value.clamp(max=MAX_PSNR_DB)


def psnr_curve(denoiser: nn.Module, images: torch.Tensor, sigmas: Sequence[float], *, seed: int = 0,
               batch_size: int = 256, device="cpu") -> dict[str, list[float]]:
    """Input and output PSNR (mean over images) at every σ, with noise fixed by `seed`."""
    return psnr_curve_at(lambda sigma: denoiser, images, sigmas, seed=seed, batch_size=batch_size, device=device)


Curves = dict[str, list[float]]  # sigma, input_psnr, output_psnr


@dataclass(frozen=True)
class PerImage:
    """PSNR of every image at every σ, dB, [σ, image]: what a paired bootstrap over images resamples (a model and
    a reference measured on the same noise draws differ image by image, docs/SCIENCE.md, Statistics)."""

    sigma: list[float]
    input_psnr: torch.Tensor
    output_psnr: torch.Tensor

    def curve(self) -> Curves:
        """The mean over images at each σ: the PSNR curve results.json reports."""
        return {"sigma": list(self.sigma), "input_psnr": [float(row.mean()) for row in self.input_psnr],
                "output_psnr": [float(row.mean()) for row in self.output_psnr]}


@torch.no_grad()
def psnr_per_image_at(denoiser_at: Callable[[float], Callable], images: torch.Tensor, sigmas: Sequence[float], *,
                      seed: int = 0, batch_size: int = 256, device="cpu") -> PerImage:
    """Input and output PSNR of every image at every σ, with noise fixed by `seed` (see `psnr_curve_at`)."""
    generator, images = torch.Generator().manual_seed(seed), images.cpu()
    rows_in, rows_out = [], []
    for sigma in sigmas:
        noisy, denoiser = images + sigma * torch.randn(images.shape, generator=generator), denoiser_at(sigma)
        out = torch.cat(
            [denoiser(noisy[i : i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
        )
        rows_in.append(image_psnr(noisy, images))
        rows_out.append(image_psnr(out, images))
    return PerImage([float(s) for s in sigmas], torch.stack(rows_in), torch.stack(rows_out))


def psnr_curve_at(denoiser_at: Callable[[float], Callable], images: torch.Tensor, sigmas: Sequence[float], *,
                  seed: int = 0, batch_size: int = 256, device="cpu") -> Curves:
    """`psnr_curve` for a denoiser that knows σ (denoiser_at(σ)), e.g. the empirical optimal one; the
    same seed draws the same noise as for a blind denoiser, so the two curves compare image by image.

    This is the one PSNR-per-σ of gdm: training's validation calls it too, with evaluation's seed and
    images, so a cell's final validation PSNR is the number its pair reports. The noise is drawn on the
    CPU (one generator, σ after σ: the seed scheme of gdm.seeds), batches run on `device` in fp32."""
    return psnr_per_image_at(denoiser_at, images, sigmas, seed=seed, batch_size=batch_size, device=device).curve()


def per_image_train_test(denoiser_at: Callable[[float], Callable], train: torch.Tensor, test: torch.Tensor,
                         sigmas: Sequence[float], *, images: int, **run) -> dict[str, PerImage]:
    """{"train", "test"}: `psnr_per_image_at` on the first `images` training and held-out images."""
    return {"train": psnr_per_image_at(denoiser_at, train[:images], sigmas, **run),
            "test": psnr_per_image_at(denoiser_at, test[:images], sigmas, **run)}


def per_image_per_split(denoiser_at: Mapping[str, Callable[[float], Callable]], train: Mapping[str, torch.Tensor],
                        test: torch.Tensor, sigmas: Sequence[float], **run) -> dict[str, dict[str, PerImage]]:
    """split → `per_image_train_test` of that split's denoiser on its own training set and the held-out images;
    every split, model or reference, is measured on the same noise draws (`run`: images, seed, batch, device)."""
    return {split: per_image_train_test(denoiser_at[split], train[split], test, sigmas, **run) for split in denoiser_at}


def curves_of(per_image: Mapping[str, Mapping[str, PerImage]]) -> dict[str, dict[str, Curves]]:
    """split → kind → the mean curve of each PerImage."""
    return {split: {kind: p.curve() for kind, p in kinds.items()} for split, kinds in per_image.items()}


def train_test_curves(denoiser_at: Callable[[float], Callable], train: torch.Tensor, test: torch.Tensor,
                      sigmas: Sequence[float], *, images: int, **run) -> dict[str, Curves]:
    """{"train", "test"}: `psnr_curve_at` on the first `images` training and held-out images."""
    return {kind: p.curve() for kind, p in per_image_train_test(denoiser_at, train, test, sigmas, images=images,
                                                                 **run).items()}


def curves_per_split(denoiser_at: Mapping[str, Callable[[float], Callable]], train: Mapping[str, torch.Tensor],
                     test: torch.Tensor, sigmas: Sequence[float], **run) -> dict[str, dict[str, Curves]]:
    """The mean curves of `per_image_per_split`."""
    return curves_of(per_image_per_split(denoiser_at, train, test, sigmas, **run))


def generalization_gap(train: dict[str, list[float]], test: dict[str, list[float]]) -> float:
    """Train − test output PSNR, averaged over σ (dB): 0 when the denoiser generalizes."""
    pairs = zip(train["output_psnr"], test["output_psnr"], strict=False)
    return float(sum(a - b for a, b in pairs) / max(len(train["output_psnr"]), 1))
