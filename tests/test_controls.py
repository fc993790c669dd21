"""The controls on data with known answers: Wiener PSNR, cross-seed baseline, realism distances, verdicts, C^α slope."""

from __future__ import annotations

import math

import pytest
import torch

from gdm.analysis import calpha, controls, psnr, similarity
from gdm.analysis.controls import PairEvidence


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian_images(count: int, seed: int, side: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images from N(μ, C) with a known, non-diagonal C = U diag(λ) Uᵀ; returns (images, μ, λ)."""
    d = side * side
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=_generator(100), dtype=torch.float64))
    eigenvalues = 0.02 / torch.arange(1, d + 1, dtype=torch.float64) ** 0.5
    mean = 0.5 + 0.1 * torch.rand(d, generator=_generator(101), dtype=torch.float64)
    z = torch.randn(count, d, generator=_generator(seed), dtype=torch.float64)
    images = mean + (z * eigenvalues.sqrt()) @ basis.T
    return images.float().view(count, 1, side, side), mean, eigenvalues


def test_wiener_denoiser_is_the_closed_form_linear_estimator():
    images, _, _ = _gaussian_images(3000, seed=1, side=6)
    model = controls.fit_gaussian(images.split(1000))
    flat = images.flatten(1).double()
    torch.testing.assert_close(model.mean, flat.mean(0))
    covariance = torch.cov(flat.T, correction=0)
    y = images[:4] + 0.2 * torch.randn(images[:4].shape, generator=_generator(2))
    centred = (y.flatten(1).double() - model.mean).T
    expected = model.mean[:, None] + covariance @ torch.linalg.solve(
        covariance + 0.04 * torch.eye(36, dtype=torch.float64), centred
    )
    torch.testing.assert_close(
        controls.WienerDenoiser(model, 0.2)(y).flatten(1).double(), expected.T.float().double(), atol=1e-5, rtol=0
    )


def test_gaussian_reference_on_gaussian_data_equals_the_closed_form_wiener_psnr():
    pool, mean, eigenvalues = _gaussian_images(40_000, seed=3)
    test, _, _ = _gaussian_images(2000, seed=4)
    model = controls.fit_gaussian(pool.split(8192))
    sigmas = [0.05, 0.1, 0.2, 0.4]
    curves = controls.gaussian_psnr_curves(model, {"A": pool[:2000]}, test, sigmas, images=2000, seed=0,
                                           batch_size=1000, device="cpu")["A"]
    truth = controls.GaussianModel(mean, eigenvalues, torch.eye(len(mean), dtype=torch.float64), (1, 16, 16))
    expected = [controls.wiener_psnr(truth, s) for s in sigmas]
    assert curves["test"]["output_psnr"] == pytest.approx(expected, abs=0.05)
    assert curves["train"]["output_psnr"] == pytest.approx(expected, abs=0.05)
    assert all(o > i + 3 for o, i in zip(curves["test"]["output_psnr"], curves["test"]["input_psnr"], strict=True))


def test_cross_seed_baseline_of_independent_noise_is_zero_and_skips_the_same_seed():
    a, b = (torch.randn(64, 1, 16, 16, generator=_generator(s)) for s in (5, 6))
    for measure in ("cosine", "correlation"):
        values = controls.cross_seed(measure, a, b)
        assert values.shape == (64 * 63,)
        assert abs(float(values.median())) < 0.01 and float(values.abs().max()) < 0.35
    same = controls.cross_seed("correlation", a, a)  # B = A: only the diagonal (excluded) would be 1
    assert float(same.max()) < 0.35 and float(similarity.paired("correlation", a, a).min()) == pytest.approx(1.0)
    per_seed = controls.cross_seed_per_seed(controls.cross_seed("correlation", a, b))
    assert per_seed.shape == (64,) and float(per_seed.abs().max()) < 0.05
    assert controls.cross_seed("correlation", a[:1], b[:1]).numel() == 0


def _smooth_images(count: int, seed: int, side: int = 16) -> torch.Tensor:
    """Images with a 1/|k|² power spectrum around 0.5 (natural-image-like second-order statistics)."""
    frequency = torch.fft.fftfreq(side) * side
    radius = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    gain = torch.where(radius > 0, 1 / radius.clamp_min(1e-9), torch.zeros(()))
    field = torch.fft.ifft2(torch.fft.fft2(torch.randn(count, 1, side, side, generator=_generator(seed))) * gain).real
    return 0.5 + 0.12 * field / field.std()


def test_realism_distances_vanish_for_a_set_against_itself_and_are_large_for_noise():
    held_out = controls.realism_profile(_smooth_images(256, seed=7))
    again = controls.realism_distances(held_out, held_out)
    assert again == {"contrast_distance": 0.0, "spectrum_distance_db": 0.0, "histogram_distance": 0.0}
    fresh = controls.realism_distances(controls.realism_profile(_smooth_images(256, seed=8)), held_out)
    assert (
        fresh["contrast_distance"] < 0.05 and fresh["spectrum_distance_db"] < 0.5 and fresh["histogram_distance"] < 0.01
    )
    noise = 0.5 + 0.5 * torch.randn(256, 1, 16, 16, generator=_generator(9))
    far = controls.realism_distances(controls.realism_profile(noise), held_out)
    assert far["contrast_distance"] > 2.0 and far["spectrum_distance_db"] > 10.0 and far["histogram_distance"] > 0.2
    flat = controls.realism_distances(controls.realism_profile(torch.full((8, 1, 16, 16), 0.5)), held_out)
    assert flat["contrast_distance"] == pytest.approx(1.0)  # no contrast at all: 100 % off


def test_radial_spectrum_puts_a_cosine_on_its_ring():
    rows = torch.arange(16, dtype=torch.float64)
    wave = torch.cos(2 * math.pi * 3 * rows / 16)[None, None, :, None].expand(1, 1, 16, 16)
    spectrum = controls.radial_power_spectrum(wave)
    assert spectrum.shape == (8,) and int(spectrum.argmax()) == 2  # ring r = 3 is index 2
    assert float(spectrum[2]) > 1e6 * float(spectrum[[0, 1, 3, 4, 5, 6, 7]].max() + 1e-30)


def _evidence(**changes) -> PairEvidence:
    """A pair that generalizes; each test changes what it needs."""
    fields = {"memorized_fraction": 0.0, "agreement": 0.8, "nearest": 0.7, "cross_seed": 0.02,
              "gaussian_margins_db": ((0.9, 1.2), (0.8, 1.5)), "gaps_db": (0.1, 0.2)}
    return PairEvidence(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "generalizing"),
        ({"memorized_fraction": 0.97, "agreement": 0.3, "nearest": 0.99, "gaps_db": (20.0, 18.0)}, "memorizing"),
        # two equally underfit smoothers: they agree, train = test, but both are below the linear filter
        (
            {"agreement": 0.9, "nearest": 0.5, "cross_seed": 0.6, "gaussian_margins_db": ((-6.0, -3.0), (-5.0, -2.0))},
            "underfit",
        ),
        ({"agreement": 0.4, "nearest": 0.84}, "transitional"),  # agreement below the nearest training image
        ({"agreement": 0.5, "nearest": 0.3, "cross_seed": 0.6}, "transitional"),  # agreement no better than other seeds
        ({"gaps_db": (0.1, 0.5)}, "transitional"),  # the gap must be below GAP_DB for every model
        (
            {"gaussian_margins_db": ((0.9, -0.1), (0.8, 1.5))},
            "transitional",
        ),  # below the reference at one σ of the band
        ({"gaussian_margins_db": ((-3.0, -2.0), (-3.0, -2.0)), "gaps_db": (4.0, 5.0)}, "transitional"),  # overfitting
        ({"gaussian_margins_db": ()}, "generalizing"),  # no Gaussian reference measured: that condition is not checked
        ({"agreement": None, "memorized_fraction": None}, "transitional"),  # every sample diverged
    ],
)
def test_each_verdict_arises_on_a_constructed_case(changes, expected):
    assert controls.verdict(_evidence(**changes)) == expected


def test_verdict_checks_say_what_they_could_not_decide():
    checks = controls.verdict_checks(_evidence(gaussian_margins_db=(), cross_seed=None))
    assert checks["at_or_above_gaussian"] is None and checks["below_gaussian"] is None
    assert checks["agreement_above_cross_seed"] is None and checks["small_gap"] is True


def test_band_margins_keep_the_sigmas_inside_the_band():
    model = {"sigma": [0.02, 0.05, 0.1, 0.4, 0.8], "output_psnr": [30.0, 28.0, 25.0, 18.0, 12.0]}
    reference = {"sigma": model["sigma"], "output_psnr": [31.0, 27.0, 25.5, 17.0, 13.0]}
    assert controls.band_margins(model, reference) == pytest.approx((1.0, -0.5, 1.0))


def _power_law_field(count: int, side: int, alpha: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic Gaussian fields with power |k|^(−2(α+1)) around 0.5, pixel std 0.15, and each mode's variance."""
    frequency = torch.fft.fftfreq(side, dtype=torch.float64) * side
    radius = torch.sqrt(frequency[:, None] ** 2 + frequency[None, :] ** 2)
    amplitude = torch.where(radius > 0, radius.clamp_min(1e-9) ** -(alpha + 1), torch.zeros((), dtype=torch.float64))
    scale = 0.15 / float(amplitude.pow(2).mean().sqrt())  # pixel variance = (1/D) Σ_k |a_k|² for unit white noise
    white = torch.randn(count, 1, side, side, generator=_generator(seed), dtype=torch.float64)
    field = torch.fft.ifft2(torch.fft.fft2(white) * amplitude * scale).real
    return (0.5 + field).float(), (amplitude * scale).pow(2)


def _fourier_wiener(mode_variance: torch.Tensor, sigma: float):
    """The exact MMSE denoiser of those fields at noise σ: a per-frequency gain P_k / (P_k + σ²)."""
    gain = mode_variance / (mode_variance + sigma**2)

    def denoise(y: torch.Tensor) -> torch.Tensor:
        return (0.5 + torch.fft.ifft2(torch.fft.fft2(y.double() - 0.5) * gain).real).float()

    return denoise


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0, 5.0])
def test_calpha_slope_of_an_ideal_denoiser_recovers_alpha_over_alpha_plus_one(alpha):
    # A 2-D Gaussian field with power |k|^(−2(α+1)) has Wiener MSE ∝ σ^(2α/(α+1)): the C^α rate, exactly.
    images, mode_variance = _power_law_field(32, 128, alpha, seed=int(alpha))
    sigmas = [0.5, 0.2, 0.1, 0.07, 0.05, 0.035, 0.025, 0.018, 0.01, 0.004, 0.002, 0.001]
    curve = psnr.psnr_curve_at(lambda s: _fourier_wiener(mode_variance, s), images, sigmas, seed=0, batch_size=8)
    slope = calpha.small_noise_slope(curve["input_psnr"], curve["output_psnr"])
    assert slope == pytest.approx(calpha.optimal_slope(alpha), abs=0.02)
