"""The CUDA path: bf16-mixed + channels_last + torch.compile training, sampling and Jacobians on a GPU.

Skipped cleanly where no CUDA device exists (this project's CI machines); run them on a GPU node with
`python -m pytest -m gpu`.
"""

from __future__ import annotations

import pytest
import torch
from helpers import prepared, tiny_config

from gdm.cells import expand_cells
from gdm.config import ModelConfig, SamplerConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_channels_last_compiled_training_on_cuda(tiny_root):
    from gdm.training.fit import fit_cell
    from gdm.training.model_file import load_denoiser

    cfg = prepared(tiny_config(tiny_root, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                               "trainer.channels_last=true", "trainer.compile=true", "trainer.max_steps=4"))
    cell = expand_cells(cfg)[0]
    directory = fit_cell(cfg, cell)
    denoiser = load_denoiser(directory / "model.pt", "cuda")
    y = torch.rand(2, 1, 16, 16, device="cuda")
    assert torch.allclose(denoiser(3 * y), 3 * denoiser(y), rtol=1e-4, atol=1e-5)  # still bias-free


def test_sampler_and_jacobian_on_cuda_match_cpu():
    from gdm.analysis.jacobian import jacobian
    from gdm.models import build_model
    from gdm.sample import sample

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="bf_unet", channels=8, blocks=1), 16).eval()

    class Denoiser(torch.nn.Module):
        def __init__(self, device):
            super().__init__()
            self.net = net.to(device)
            self.eval()

        def forward(self, y):
            return y - self.net(y)

    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=10)
    cpu = sample(Denoiser("cpu"), range(3), (1, 16, 16), cfg, "cpu")
    gpu = sample(Denoiser("cuda"), range(3), (1, 16, 16), cfg, "cuda")
    assert torch.allclose(cpu.images, gpu.images.cpu(), atol=1e-3)  # TF32/cuDNN vs CPU kernels
    y = torch.rand(1, 16, 16)
    assert torch.allclose(jacobian(Denoiser("cuda"), y.cuda(), chunk=64).cpu(), jacobian(Denoiser("cpu"), y), atol=1e-3)
