"""model.pt: the trained denoiser of a cell, saved once at the end of training and loaded by evaluation.

No Lightning here: evaluation loads a model without importing the trainer. The file is written
atomically, only from finite weights, loads with `weights_only=True`, and every error names it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from gdm.cells import Files
from gdm.config import ModelConfig, to_dict
from gdm.io import atomic_torch_save
from gdm.models import build_model
from gdm.training.denoiser import BlindDenoiser
from gdm.training.health import check_finite


def plain_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors under the plain network's keys (torch.compile in place keeps them)."""
    return {key: value.detach().to("cpu", memory_format=torch.contiguous_format).clone()
            for key, value in net.state_dict().items()}


def save_model(path: Path, net: nn.Module, model_cfg: ModelConfig, image_size: int) -> Path:
    """model.pt: {"model", "model_cfg", "image_size", "state_dict"}; refuses non-finite weights."""
    state = plain_state_dict(net)
    check_finite(state, f"the final model of {Path(path).parent}")
    payload = {"model": model_cfg.name, "model_cfg": to_dict(model_cfg), "image_size": int(image_size),
               "state_dict": state}
    return atomic_torch_save(path, payload)


def load_denoiser(path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """The eval-mode blind denoiser f(y) = y - net(y) of a model.pt; ValueError naming a bad file."""
    path = Path(path)
    path = path / Files.MODEL if path.is_dir() else path
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
        net = build_model(ModelConfig(**payload["model_cfg"]), payload["image_size"])
        net.load_state_dict(payload["state_dict"])
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated zip, pickle error, wrong keys: all mean "this file is bad"
        raise ValueError(f"{path} cannot be loaded as a gdm model ({type(err).__name__}: {err}); "
                         "it is corrupt or from another version: retrain its cell") from err
    check_finite(payload["state_dict"], str(path))
    return BlindDenoiser(net).to(device).eval()
