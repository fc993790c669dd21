"""The CUDA path: bf16-mixed + channels_last + torch.compile training, sampling and Jacobians on a GPU.

Skipped cleanly where no CUDA device exists (this project's CI machines); run them on a GPU node with
`python -m pytest -m gpu`. Comparisons of GPU results run under gdm.precision.true_fp32, as evaluation does:
under torch's default TF32 convolutions the GPU's rounding (≈ 5e-4 relative) would exceed their tolerances.
"""

from __future__ import annotations

import pytest
import torch

from gdm.cells import expand_cells
from gdm.config import ModelConfig, SamplerConfig, load_config
from gdm.precision import true_fp32

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_channels_last_compiled_training_on_cuda(tiny_overrides):
    from gdm.data.prepare import prepare_dataset
    from gdm.training.fit import fit_cell
    from gdm.training.model_file import load_denoiser

    cfg = load_config(None, [*tiny_overrides, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                             "trainer.channels_last=true", "trainer.compile=true", "trainer.max_steps=4"])
    prepare_dataset(cfg.datasets["disks"], cfg.run_dir / "data" / "disks")
    cell = expand_cells(cfg)[0]
    directory = fit_cell(cfg, cell)
    denoiser = load_denoiser(directory / "model.pt", "cuda")
    y = torch.rand(2, 1, 16, 16, device="cuda")
    with true_fp32():
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
    y = torch.rand(1, 16, 16)
    with true_fp32():  # fp32 on both sides: only the kernels' summation order differs
        cpu = sample(Denoiser("cpu"), range(3), (1, 16, 16), cfg, "cpu")
        gpu = sample(Denoiser("cuda"), range(3), (1, 16, 16), cfg, "cuda")
        J_gpu, J_cpu = jacobian(Denoiser("cuda"), y.cuda(), chunk=64).cpu(), jacobian(Denoiser("cpu"), y)
    assert torch.allclose(cpu.images, gpu.images.cpu(), atol=1e-3)  # 10 sampler steps amplify rounding
    assert torch.allclose(J_gpu, J_cpu, atol=1e-3)


def test_homogeneity_on_cuda_is_fp32_exact_under_true_fp32():
    """The bias-free net is 1-homogeneous: ‖f(ay) − a f(y)‖ / ‖a f(y)‖ is fp32 rounding (≲ 1e-5) in true fp32,
    where TF32 convolutions leave ≈ 5e-4."""
    from gdm.models import build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="bf_unet", channels=16, blocks=2), 32).cuda().eval()
    y = torch.rand(4, 1, 32, 32, device="cuda")
    with torch.no_grad(), true_fp32():
        scaled, reference = net(2.5 * y), 2.5 * net(y)
    assert float((scaled - reference).norm() / reference.norm()) < 1e-5
