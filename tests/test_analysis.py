"""Similarities, nearest neighbours, PSNR, Jacobians and reference denoisers on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gdm.analysis import calpha, jacobian, psnr, similarity, tangent
from gdm.analysis.nearest import nearest
from gdm.analysis.optimal import EmpiricalDenoiser, posterior_covariance
from gdm.config import ModelConfig


def _images(n, size=6, seed=0):
    return torch.rand((n, 1, size, size), generator=torch.Generator().manual_seed(seed))


def test_similarity_known_values():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert similarity.cosine_matrix(a, 2 * a).item() == pytest.approx(1.0)
    assert similarity.correlation_matrix(a, torch.tensor([[3.0, 2.0, 1.0]])).item() == pytest.approx(-1.0)
    # the correlation ignores the mean, the cosine does not
    assert similarity.correlation_matrix(a, a + 5).item() == pytest.approx(1.0)
    assert similarity.cosine_matrix(a, a + 5).item() < 0.99
    assert similarity.neg_rms_matrix(a, a + 2).item() == pytest.approx(-2.0)


@pytest.mark.parametrize("measure", ["cosine", "correlation", "l2"])
def test_nearest_equals_brute_force(measure):
    samples, train = _images(7, seed=1), _images(50, seed=2)
    values, index = nearest(samples, train, measure, chunk=8)
    brute = similarity.SIMILARITIES[measure](samples, train)
    assert torch.equal(index, brute.argmax(1))
    assert torch.allclose(values, brute.max(1).values)


def test_psnr_known_pairs():
    clean = torch.full((2, 1, 4, 4), 0.5)
    assert psnr.image_psnr(clean + 0.1, clean).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert psnr.image_psnr(clean, clean).tolist() == [psnr.MAX_PSNR_DB] * 2  # exact: capped, never inf
    curve = psnr.psnr_curve(lambda y: y, clean, [0.1], seed=0)
    assert curve["output_psnr"] == curve["input_psnr"]
    assert curve["input_psnr"][0] == pytest.approx(20.0, abs=1.0)
    assert psnr.generalization_gap({"output_psnr": [30, 20]}, {"output_psnr": [25, 19]}) == pytest.approx(3.0)


class TinyBiasFree(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1, bias=False))
        self.eval()

    def forward(self, y):
        return y - self.net(y)


def test_vectorised_jacobian_equals_per_pixel_loop_at_16x16():
    model = TinyBiasFree().double()
    y = torch.rand((1, 16, 16), dtype=torch.float64)
    J = jacobian.jacobian(model, y, chunk=100)
    loop = torch.stack([torch.autograd.grad(model(y[None]).reshape(-1)[i], y, retain_graph=False)[0].reshape(-1)
                        for i in range(256) if y.requires_grad_(True) is not None])
    assert torch.allclose(J, loop, atol=1e-10)


def test_unet_jacobian_rows_in_partial_chunks_and_training_mode_refused():
    from gdm.models import build_model
    from gdm.training.denoiser import BlindDenoiser

    model = BlindDenoiser(build_model(ModelConfig(name="bf_unet", channels=4, blocks=1), 8)).double().eval()
    y = torch.rand((1, 8, 8), dtype=torch.float64)
    J = jacobian.jacobian(model, y, chunk=7)  # 64 rows: the last chunk is partial
    x = y[None].clone().requires_grad_(True)
    column = torch.autograd.grad(model(x).reshape(-1), x, grad_outputs=torch.eye(64, dtype=torch.float64)[5])[0]
    assert torch.allclose(J[5], column.reshape(-1), atol=1e-12)
    with pytest.raises(ValueError, match="eval mode"):
        jacobian.jacobian(model.train(), y)


def test_bias_free_model_is_its_jacobian_times_input():
    model = TinyBiasFree().double()
    y = torch.rand((1, 8, 8), dtype=torch.float64)
    J = jacobian.jacobian(model, y)
    assert torch.allclose(J @ y.reshape(-1), model(y[None]).reshape(-1), atol=1e-10)


def test_empirical_optimal_jacobian_is_posterior_covariance_over_sigma_squared():
    train = _images(5, size=4, seed=3).double()
    sigma = 0.5
    den = EmpiricalDenoiser(train, sigma).eval()
    for seed in range(3):
        y = train[seed % 5] + sigma * torch.randn((1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        J = jacobian.jacobian(den, y)
        expected = posterior_covariance(den, y) / sigma**2
        assert expected.abs().max() > 1e-3  # weights spread over several images: a real test
        assert torch.allclose(J, expected, atol=1e-10, rtol=1e-7)


def test_chunked_empirical_denoiser_equals_the_direct_posterior_mean():
    train, sigma = _images(23, size=5, seed=4).double(), 0.3
    y = train[:3] + sigma * torch.randn((3, 1, 5, 5), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sq = (y.flatten(1)[:, None, :] - train.flatten(1)[None]).pow(2).sum(-1)  # ‖y − x_i‖², no expansion
    direct = (torch.softmax(-sq / (2 * sigma**2), dim=1) @ train.flatten(1)).view(3, 1, 5, 5)
    for chunk in (4, 23, 100):  # ragged last chunk, exact fit, one chunk
        assert torch.allclose(EmpiricalDenoiser(train, sigma, chunk=chunk)(y), direct, atol=1e-12)
    assert EmpiricalDenoiser(train.float(), sigma)(y.float()).dtype == torch.float32


def test_posterior_covariance_keeps_only_the_images_that_carry_weight():
    train = torch.cat([_images(1, size=4, seed=5), _images(400, size=4, seed=6) + 3.0]).double()  # 400 far away
    y, sigma = train[0] + 0.01, 0.2
    den = EmpiricalDenoiser(train, sigma, chunk=64)
    w = den.weights(y[None])[0]
    assert w[0] > 1 - 1e-12 and torch.allclose(den(y[None])[0], train[0], atol=1e-9)
    full = (train.flatten(1) * w[:, None]).T @ train.flatten(1) - torch.outer(w @ train.flatten(1), w @ train.flatten(1))
    assert torch.allclose(posterior_covariance(den, y), full, atol=1e-12)


def test_geometry_of_a_projection():
    q, _ = torch.linalg.qr(torch.randn(10, 3, dtype=torch.float64))
    g = jacobian.geometry(q @ q.T, keep=3)
    assert g.trace == pytest.approx(3.0)
    assert g.asymmetry == pytest.approx(0.0, abs=1e-12)
    assert g.eigenvalues[:3].tolist() == pytest.approx([1, 1, 1]) and abs(g.eigenvalues[3]) < 1e-10
    assert tangent.subspace_overlap(g.eigenvectors, q) == pytest.approx(1.0)


def test_disk_tangent_basis_is_orthonormal_and_spans_parameter_changes():
    from gdm.data.synthetic.disks import render

    p = np.array([8.0, 7.5, 4.0, 0.8, 0.2])
    q = tangent.tangent_basis(p, 16)
    assert torch.allclose(q.T @ q, torch.eye(5, dtype=q.dtype), atol=1e-8)
    move = torch.from_numpy((render((p + [0.01, 0, 0, 0.01, 0])[None], 16) - render(p[None], 16)).reshape(-1))
    residual = move - q @ (q.T @ move)
    assert residual.norm() < 0.15 * move.norm()  # the anti-aliased edge is only piecewise linear


def test_calpha_slope_fit():
    x = [10.0, 20.0, 30.0, 40.0]
    assert calpha.small_noise_slope(x, [5 + 0.75 * v for v in x]) == pytest.approx(0.75)
    assert calpha.optimal_slope(3) == pytest.approx(0.75)
    assert math.isfinite(calpha.small_noise_slope(x, [1, 2, 3, 4], points=2))
    assert calpha.small_noise_slope([30.0], [20.0]) is None  # one noise level has no slope
