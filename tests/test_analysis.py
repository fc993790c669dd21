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


def _numpy_similarity(measure: str, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """[K, M] by the definitions, pair by pair in float64 numpy (no matrix identities)."""
    a, b = a.flatten(1).double().numpy(), b.flatten(1).double().numpy()
    out = np.empty((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if measure == "correlation":
                x, y = x - x.mean(), y - y.mean()
            if measure == "l2":
                out[i, j] = -np.sqrt(np.mean((x - y) ** 2))
            else:
                out[i, j] = x @ y / (np.linalg.norm(x) * np.linalg.norm(y))
    return out


@pytest.mark.parametrize("measure", ["cosine", "correlation", "l2"])
def test_similarity_matrices_equal_their_definitions(measure):
    a, b = _images(3, seed=7) - 0.3, 2 * _images(5, seed=8)  # signed, different scales
    value = similarity.SIMILARITIES[measure](a, b)
    assert value.dtype == torch.float64 and value.shape == (3, 5)
    np.testing.assert_allclose(value.numpy(), _numpy_similarity(measure, a, b), rtol=1e-10, atol=1e-12)
    paired = similarity.paired(measure, a, b[:3])
    np.testing.assert_allclose(paired.numpy(), np.diag(_numpy_similarity(measure, a, b[:3])), rtol=1e-10, atol=1e-12)
    assert similarity.paired(measure, a[:0], b[:0]).shape == (0,)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1e3])
def test_cosine_and_correlation_do_not_depend_on_the_images_scale(scale):
    a, b = _images(3, seed=7).double() - 0.3, _images(5, seed=8).double()
    for measure in ("cosine", "correlation"):
        np.testing.assert_allclose(similarity.SIMILARITIES[measure](scale * a, b).numpy(),
                                   _numpy_similarity(measure, a, b), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(similarity.neg_rms_matrix(scale * a, scale * b).numpy(),  # l2 scales with them
                               scale * _numpy_similarity("l2", a, b), rtol=1e-9)


def test_similarity_of_a_blank_image_is_zero_not_nan():
    blank, image = torch.zeros(1, 1, 3, 3), _images(1, size=3)
    assert similarity.cosine_matrix(blank, image).item() == 0.0
    assert similarity.correlation_matrix(torch.full((1, 1, 3, 3), 0.7), image).item() == 0.0


@pytest.mark.parametrize("measure", ["cosine", "correlation", "l2"])
@pytest.mark.parametrize("chunk", [1, 8, 50, 1000])
def test_nearest_equals_numpy_brute_force_in_every_chunk(measure, chunk):
    samples, train = _images(7, seed=1), _images(50, seed=2)
    train[41], train[49] = train[3], train[17]  # duplicates in later chunks: the first index must win
    samples[:4] = train[[3, 17, 44, 49]]  # at chunk=8: exact matches in the first, middle and last (partial) chunks
    values, index = nearest(samples, train, measure, chunk=chunk)
    brute = _numpy_similarity(measure, samples, train)
    np.testing.assert_array_equal(index.numpy(), brute.argmax(1))  # numpy's argmax takes the first maximum
    np.testing.assert_allclose(values.numpy(), brute.max(1), rtol=1e-10, atol=1e-12)
    assert index[:4].tolist() == [3, 17, 44, 17]
    assert torch.equal(train[index[:4]], samples[:4])  # the index selects training images


def _near_ties(k=12, copies=8, others=200, size=32, seed=0):
    """Samples and a training set holding, per sample, `copies` near-copies at similarities 1 − O(10⁻⁹):
    closer together than float32 (2⁻²⁴ ≈ 6·10⁻⁸) can tell apart, at scattered positions."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.rand(k, 1, size, size, generator=g)
    spread = torch.linspace(1, 1.5, copies).repeat(k).view(-1, 1, 1, 1)
    near = samples.repeat_interleave(copies, 0) + 1e-5 * spread * torch.rand(k * copies, 1, size, size, generator=g)
    train = torch.cat([torch.rand(others, 1, size, size, generator=g), near])
    return samples, train[torch.randperm(len(train), generator=g)]


@pytest.mark.parametrize("measure", ["cosine", "correlation", "l2"])
def test_nearest_picks_the_float64_best_among_near_ties_that_float32_cannot_order(measure):
    samples, train = _near_ties()
    brute = _numpy_similarity(measure, samples, train)
    values, index = nearest(samples, train, measure, chunk=64)
    np.testing.assert_array_equal(index.numpy(), brute.argmax(1))
    np.testing.assert_allclose(values.numpy(), brute.max(1), rtol=1e-10, atol=1e-12)
    assert values.dtype == torch.float64
    # the float32 screen alone (one candidate, no float64 choice among several) gets most of them wrong
    screened = nearest(samples, train, measure, chunk=64, candidates=1)[1]
    assert (screened.numpy() != brute.argmax(1)).sum() >= len(samples) // 2


def test_nearest_of_no_samples_and_unknown_measure():
    values, index = nearest(torch.zeros(0, 1, 4, 4), _images(5, size=4), "correlation")
    assert values.shape == index.shape == (0,)
    with pytest.raises(KeyError, match="similarity 'dot' is not one of cosine, correlation, l2"):
        nearest(_images(2, size=4), _images(5, size=4), "dot")


def test_psnr_known_pairs():
    clean = torch.full((2, 1, 4, 4), 0.5)
    assert psnr.image_psnr(clean + 0.1, clean).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)
    assert psnr.image_psnr(clean, clean).tolist() == [100.0] * 2  # exact: capped at 100 dB, never inf
    assert psnr.MAX_PSNR_DB == 100.0
    curve = psnr.psnr_curve(lambda y: y, clean, [0.1], seed=0)
    assert curve["output_psnr"] == curve["input_psnr"]
    assert curve["input_psnr"][0] == pytest.approx(20.0, abs=1.0)


def _numpy_psnr(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    mse = ((estimate - clean) ** 2).reshape(len(clean), -1).mean(1)
    return np.minimum(10 * np.log10(1 / mse), 100.0)


def test_image_psnr_is_per_image_against_numpy():
    clean = _images(4, size=5, seed=9)
    noise = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    estimate = clean + torch.linspace(0.01, 0.2, 4).view(4, 1, 1, 1) * noise  # a different MSE per image
    np.testing.assert_allclose(psnr.image_psnr(estimate, clean).numpy(),
                               _numpy_psnr(estimate.double().numpy(), clean.double().numpy()), atol=1e-3)


@pytest.mark.parametrize("seed", [None, 5])
def test_psnr_curve_equals_numpy_with_the_seeded_noise_and_a_ragged_batch(seed):
    """Noise: one randn(images.shape) per σ, in order, from a generator seeded once (default seed 0)."""
    images, sigmas, scale = _images(5, size=4, seed=10), [0.05, 0.3, 1.0], 0.8
    run = {} if seed is None else {"seed": seed}
    curve = psnr.psnr_curve(lambda y: scale * y, images, sigmas, batch_size=2, **run)  # batches 2, 2, 1
    generator = torch.Generator().manual_seed(seed or 0)
    x = images.double().numpy()
    assert curve["sigma"] == sigmas
    for k, sigma in enumerate(sigmas):
        noisy = x + sigma * torch.randn(images.shape, generator=generator).double().numpy()
        assert curve["input_psnr"][k] == pytest.approx(_numpy_psnr(noisy, x).mean(), abs=1e-3)
        assert curve["output_psnr"][k] == pytest.approx(_numpy_psnr(scale * noisy, x).mean(), abs=1e-3)


def test_train_test_curves_use_the_first_images_of_each_set():
    """denoiser_at(σ) is asked for each σ; both curves draw the same noise (default seed 0)."""
    train, test = _images(6, size=4, seed=11), _images(4, size=4, seed=12)
    asked = []

    def denoiser_at(sigma):
        asked.append(sigma)
        return lambda y: y * 0 + sigma  # a constant image: its PSNR shows which σ's denoiser was used

    curves = psnr.train_test_curves(denoiser_at, train, test, [0.1, 0.4], images=3)
    assert asked == [0.1, 0.4, 0.1, 0.4]
    for name, images in (("train", train[:3]), ("test", test[:3])):
        x, generator = images.double().numpy(), torch.Generator().manual_seed(0)
        for k, sigma in enumerate([0.1, 0.4]):
            noisy = x + sigma * torch.randn(images.shape, generator=generator).double().numpy()
            assert curves[name]["input_psnr"][k] == pytest.approx(_numpy_psnr(noisy, x).mean(), abs=1e-3)
            assert curves[name]["output_psnr"][k] == pytest.approx(_numpy_psnr(np.full_like(x, sigma), x).mean(),
                                                                   abs=1e-3)


def test_generalization_gap_is_the_mean_difference():
    assert psnr.generalization_gap({"output_psnr": [30, 20]}, {"output_psnr": [25, 19]}) == pytest.approx(3.0)
    assert psnr.generalization_gap({"output_psnr": [30]}, {"output_psnr": [24]}) == pytest.approx(6.0)
    assert psnr.generalization_gap({"output_psnr": []}, {"output_psnr": []}) == 0.0


class TinyBiasFree(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1, bias=False)
        )
        self.eval()

    def forward(self, y):
        return y - self.net(y)


def test_vectorised_jacobian_equals_per_pixel_loop_at_16x16():
    model = TinyBiasFree().double()
    y = torch.rand((1, 16, 16), dtype=torch.float64)
    J = jacobian.jacobian(model, y, chunk=100)
    assert torch.allclose(J, _per_pixel_rows(model, y), atol=1e-10)


def _per_pixel_rows(model: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """J by one backward pass per output pixel: row i = ∂f_i/∂y."""
    x = y[None].clone().requires_grad_(True)
    out = model(x).reshape(-1)
    return torch.stack([torch.autograd.grad(out[i], x, retain_graph=True)[0].reshape(-1) for i in range(out.numel())])


def test_unet_jacobian_rows_in_every_chunk_equal_the_per_pixel_loop():
    from gdm.models import build_model
    from gdm.training.denoiser import BlindDenoiser

    torch.manual_seed(0)
    model = BlindDenoiser(build_model(ModelConfig(name="bf_unet", channels=4, blocks=1), 8)).double().eval()
    y = torch.rand((1, 8, 8), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loop = _per_pixel_rows(model, y)
    assert loop.abs().sum(1).min() > 0  # every row carries signal: a zero row would hide a skipped chunk
    for chunk in (1, 7, 64, 100):  # 64 rows: one per pass, nine full chunks and a partial one (row 63), one chunk
        torch.testing.assert_close(jacobian.jacobian(model, y, chunk=chunk), loop, atol=1e-12, rtol=1e-10)


def test_jacobian_refuses_training_mode_and_a_chunk_below_one():
    model = TinyBiasFree().double()
    y = torch.rand((1, 4, 4), dtype=torch.float64)
    model.net[2].train()  # a single submodule in training mode is enough to refuse
    with pytest.raises(ValueError, match="eval mode"):
        jacobian.jacobian(model, y)
    model.eval()
    with pytest.raises(ValueError, match="chunk is 0; it must be ≥ 1"):
        jacobian.jacobian(model, y, chunk=0)
    assert jacobian.jacobian(model, y, chunk=1).shape == (16, 16)


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
        y = train[seed % 5] + sigma * torch.randn(
            (1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
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


class Float64Optimum(nn.Module):
    """The empirical optimal denoiser as gdm computed it before float32: logits (2⟨y, x_i⟩ − ‖x_i‖²)/2σ² by one
    matrix product, softmax and mean, all in `dtype` (float64: the reference; float32: the naive port)."""

    def __init__(self, images: torch.Tensor, sigma: float, dtype=torch.float64):
        super().__init__()
        self.images, self.shape, self.sigma, self.dtype = images.flatten(1), images.shape[1:], sigma, dtype

    def forward(self, y):
        x, flat = self.images.to(self.dtype), y.flatten(1).to(self.dtype)
        w = torch.softmax((2 * flat @ x.T - x.pow(2).sum(1)) / (2 * self.sigma**2), dim=1)
        return (w @ x).to(y.dtype).view(-1, *self.shape)


def _clustered(size=80, centres=8, members=16):
    """Members of a few random images at spreads from 10⁻³ to 0.3: neighbours at every σ of 0.01 … 1, so
    the posterior weights spread over several images; even members train, odd ones are held out."""
    g = torch.Generator().manual_seed(0)
    centre = torch.rand(centres, 1, 1, size, size, generator=g)
    spread = torch.logspace(-3, -0.5, members).view(1, members, 1, 1, 1)
    images = (centre + spread * torch.randn(centres, members, 1, size, size, generator=g)).flatten(0, 1)
    return images[1::2], images[0::2][::4]


@pytest.mark.parametrize("candidates", [64, 8])
def test_float32_optimal_psnr_equals_the_float64_reference_within_a_thousandth_of_a_db(candidates):
    """80×80 images, where a float32 rounding of ‖x_i‖² ≈ 10³ would move a logit at σ = 0.01 by O(1)."""
    train, test = _clustered()
    sigmas, run = [0.01, 0.1, 1.0], {"seed": 0, "batch_size": 64}

    def curves(make):
        return [psnr.psnr_curve_at(make, images, sigmas, **run)["output_psnr"] for images in (test, train[::4])]

    reference = np.array(curves(lambda sigma: Float64Optimum(train, sigma)))
    fp32 = np.array(curves(lambda sigma: EmpiricalDenoiser(train, sigma, candidates=candidates)))
    np.testing.assert_allclose(fp32, reference, rtol=0, atol=1e-3)
    assert reference[1, 1] < 95  # the training images at σ = 0.1 are not simply returned (PSNR cap 100 dB)
    naive = np.array(curves(lambda sigma: Float64Optimum(train, sigma, torch.float32)))
    assert np.abs(naive - reference).max() > 1e-2  # the plain float32 expansion misses by far more


def test_posterior_covariance_keeps_only_the_images_that_carry_weight():
    train = torch.cat([_images(1, size=4, seed=5), _images(400, size=4, seed=6) + 3.0]).double()  # 400 far away
    y, sigma = train[0] + 0.01, 0.2
    den = EmpiricalDenoiser(train, sigma, chunk=64)
    w = den.weights(y[None])[0]
    assert w[0] > 1 - 1e-12 and torch.allclose(den(y[None])[0], train[0], atol=1e-9)
    full = (train.flatten(1) * w[:, None]).T @ train.flatten(1) - torch.outer(
        w @ train.flatten(1), w @ train.flatten(1)
    )
    assert torch.allclose(posterior_covariance(den, y), full, atol=1e-12)


def test_geometry_of_a_non_symmetric_matrix_against_numpy():
    J = torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    g = jacobian.geometry(J)
    values, vectors = np.linalg.eigh((J.numpy() + J.numpy().T) / 2)
    np.testing.assert_allclose(g.eigenvalues.numpy(), values[::-1], atol=1e-12)  # descending
    assert g.eigenvectors.shape == (10, 8)  # keep=8 by default
    np.testing.assert_allclose(np.abs(np.sum(g.eigenvectors.numpy() * vectors[:, ::-1][:, :8], axis=0)), 1, atol=1e-9)
    assert g.trace == pytest.approx(float(np.trace(J.numpy())))
    assert g.asymmetry == pytest.approx(np.linalg.norm(J.numpy() - J.numpy().T) / np.linalg.norm(J.numpy()))
    assert jacobian.geometry(1e-4 * J).asymmetry == pytest.approx(g.asymmetry)  # a ratio: scale-free
    assert jacobian.geometry(torch.zeros(3, 3)).asymmetry == 0.0  # no 0/0
    single = J.float()  # evaluation's Jacobians are float32: the eigenproblem is still solved in float64
    exact = np.linalg.eigvalsh((single.double().numpy() + single.double().numpy().T) / 2)[::-1]
    assert jacobian.geometry(single).eigenvalues.dtype == torch.float64
    np.testing.assert_allclose(jacobian.geometry(single).eigenvalues.numpy(), exact, rtol=0, atol=1e-12)


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
    assert math.isfinite(calpha.small_noise_slope(x, [1, 2, 3, 4], window=(25.0, 45.0)))
    assert calpha.small_noise_slope([30.0], [20.0]) is None  # one noise level has no slope
    # only the levels inside the window count: a saturated point at 50 dB input is left out
    assert calpha.small_noise_slope([*x, 50.0], [5 + 0.75 * v for v in x] + [0.0]) == pytest.approx(0.75)
    assert calpha.small_noise_slope([10.0, 45.0], [5.0, 30.0]) is None  # fewer than two levels in the window
