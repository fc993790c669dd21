"""The CUDA path: bf16-mixed + channels_last + torch.compile training, sampling and Jacobians on a GPU.

Skipped cleanly where no CUDA device exists (this project's CI machines); run them on a GPU node with
`python -m pytest -m gpu`. Comparisons of GPU results run under gdm.precision.true_fp32, as evaluation does:
under torch's default TF32 convolutions the GPU's rounding (≈ 5e-4 relative) would exceed their tolerances.
"""

from __future__ import annotations

import pytest
import torch
from helpers import prepared, tiny_config

from gdm.cells import expand_cells
from gdm.config import ModelConfig, SamplerConfig
from gdm.precision import true_fp32

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_channels_last_compiled_training_on_cuda(tiny_root):
    from gdm.training.fit import fit_cell
    from gdm.training.model_file import load_denoiser

    cfg = prepared(tiny_config(tiny_root, "trainer.accelerator=gpu", "trainer.precision=bf16-mixed",
                               "trainer.channels_last=true", "trainer.compile=true", "trainer.max_steps=4"))
    cell = expand_cells(cfg)[0]
    fit_cell(cfg, cell)
    denoiser = load_denoiser(cell.directory(cfg) / "model.pt", "cuda")
    y = torch.rand(2, 1, 16, 16, device="cuda")
    with true_fp32():
        assert torch.allclose(denoiser(3 * y), 3 * denoiser(y), rtol=1e-4, atol=1e-5)  # still bias-free


class _Denoiser(torch.nn.Module):
    """f(y) = y − net(y) with `net` moved to `device` (one network shared by the CPU and CUDA runs)."""

    def __init__(self, net, device):
        super().__init__()
        self.net = net.to(device)
        self.eval()

    def forward(self, y):
        return y - self.net(y)


def _small_net():
    from gdm.models import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(name="bf_unet", channels=8, blocks=1), 16).eval()


def test_sampler_on_cuda_draws_cuda_streams_and_matches_the_cpu_update(monkeypatch):
    """On CUDA each seed's generator is a CUDA one (other numbers than the CPU's for the same key): given
    those draws, the CPU update reproduces the CUDA samples; batching and the host-check interval change nothing."""
    import gdm.sample
    from gdm.sample import SeedNoise, sample

    class CudaDrawsOnCpu(SeedNoise):
        def __init__(self, seeds, shape, device="cpu"):
            super().__init__(seeds, shape, "cuda")

        def draw(self):
            return super().draw().cpu()

    net, cfg, shape = _small_net(), SamplerConfig(h0=0.2, beta=0.5, max_steps=10), (1, 16, 16)
    with true_fp32():  # fp32 on both sides: only the kernels' summation order differs
        gpu = sample(_Denoiser(net, "cuda"), range(3), shape, cfg, "cuda")
        pieces = sample(_Denoiser(net, "cuda"), range(3), shape, cfg, "cuda", batch_size=1, sync_every=1)
        own = sample(_Denoiser(net, "cpu"), range(3), shape, cfg, "cpu")
        monkeypatch.setattr(gdm.sample, "SeedNoise", CudaDrawsOnCpu)
        cpu = sample(_Denoiser(net, "cpu"), range(3), shape, cfg, "cpu")
    assert torch.allclose(pieces.images, gpu.images, atol=1e-5) and torch.equal(pieces.steps, gpu.steps)
    assert torch.allclose(cpu.images, gpu.images, atol=1e-3)  # 10 sampler steps amplify fp32 rounding
    assert not torch.allclose(own.images, gpu.images, atol=1e-3)  # the CPU's own generators: other samples


def test_jacobian_and_its_eigendecomposition_on_cuda_match_cpu():
    from gdm.analysis.jacobian import geometry, jacobian

    net, y = _small_net(), torch.rand(1, 16, 16)
    with true_fp32():
        J_gpu = jacobian(_Denoiser(net, "cuda"), y.cuda(), chunk=64)
        J_cpu = jacobian(_Denoiser(net, "cpu"), y)
    assert torch.allclose(J_gpu.cpu(), J_cpu, atol=1e-3)
    on_gpu, on_cpu = geometry(J_gpu, keep=4), geometry(J_gpu.cpu(), keep=4)  # eigh where J lives
    assert on_gpu.eigenvalues.device.type == "cpu" and on_gpu.eigenvectors.device.type == "cpu"
    assert torch.allclose(on_gpu.eigenvalues, on_cpu.eigenvalues, atol=1e-9)
    overlap = (on_gpu.eigenvectors * on_cpu.eigenvectors).sum(0).abs()  # same vectors up to sign
    assert torch.allclose(overlap, torch.ones(4, dtype=torch.float64), atol=1e-6)


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
