"""Synthetic families: determinism, float storage, parameters that reproduce images, spectra, the authors'
C^α construction and disk radii, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from gdm.config import DataConfig
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES
from gdm.data.synthetic import calpha, disks, sines


def make(family: str, count: int = 6, seed: int = 3, size: int = 16, **params):
    data = DataConfig(family=family, image_size=size, params=params)
    return FAMILIES[family].generate(data, count, seed)


@pytest.mark.parametrize("family", ["disks", "calpha", "sines", "grf", "rescaled"])
def test_synthetic_is_deterministic_given_seed(family):
    first, again, other = make(family), make(family), make(family, seed=4)
    assert first.images.dtype == np.float32 and first.images.shape == (6, 16, 16)  # stored unquantised
    assert 0.0 <= first.images.min() and first.images.max() <= 1.0
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def test_disk_params_reproduce_images():
    made = make("disks", count=20, size=24)
    assert made.params.shape == (20, 5)
    np.testing.assert_allclose(disks.render(made.params, 24), made.images, atol=1e-5, rtol=0)  # float32 params
    cx, cy, radius = made.params[:, 0], made.params[:, 1], made.params[:, 2]
    assert np.all(radius <= np.minimum(cx, cy)) and np.all(cx + radius <= 24)  # disk inside the image


def test_disk_is_antialiased():
    image = disks.render(np.array([[8.0, 8.0, 4.3, 1.0, 0.0]]), 16)[0]
    edge = image[(image > 0) & (image < 1)]
    assert edge.size > 0 and np.isclose(image[8, 8], 1.0) and image[0, 0] == 0.0


def test_sines_params_reproduce_images():
    made = make("sines", count=5, frequency=[2.0, 5.0])
    np.testing.assert_allclose(sines.render(made.params, 16), made.images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_calpha_contour_spectrum_decays_with_alpha(alpha):
    size = 128
    params = {**calpha.DEFAULTS, "alpha": alpha}
    heights = calpha.contour_signal(np.random.default_rng(0), 400, size, params)  # before rounding to rows
    power = (np.abs(np.fft.rfft(heights - heights.mean(axis=1, keepdims=True), axis=1)) ** 2).mean(axis=0)
    k = np.arange(2, size // 4)
    slope = np.polyfit(np.log(k), np.log(power[k]), 1)[0]
    assert abs(slope + 2 * alpha) < 0.15, slope  # amplitudes ~ |k|^-alpha: power ~ |k|^-2 alpha


def test_calpha_backgrounds_span_the_authors_ranges():
    below, above = calpha.backgrounds(np.random.default_rng(0), 200, 16, 2.0)
    bright = np.where(below.max(axis=(1, 2)) > above.max(axis=(1, 2)), 0, 1)  # which side holds [u, 1]
    highs, lows = np.stack([below, above])[bright, np.arange(200)], np.stack([above, below])[bright, np.arange(200)]
    np.testing.assert_allclose(highs.max(axis=(1, 2)), 1.0) and np.testing.assert_allclose(lows.min(axis=(1, 2)), 0.0)
    u, u_dark = highs.min(axis=(1, 2)), lows.max(axis=(1, 2))  # u, u' ~ U(0, 1): they overlap about half the time
    assert 0.35 < np.mean(u < u_dark) < 0.65 and 0.4 < u.mean() < 0.6 and 0.35 < np.mean(bright) < 0.65


def test_calpha_mask_is_rounded_to_rows_and_box_blurred():
    heights = np.array([[3.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
    hard = calpha.edge_mask(heights, 6, 1)[0]
    assert hard[:3, 0].tolist() == [0, 0, 0] and hard[3:, 0].tolist() == [1, 1, 1]  # 1{row >= C(column)}
    soft = calpha.edge_mask(heights, 6, 2)[0]  # the authors' 2×2 box: mean of rows i−1, i and columns j−1, j
    assert soft[3, 1] == 0.5 and soft[5, 2] == 0.75 and soft[3, 2] == 0.25 and soft[4, 4] == 0.0
    assert set(np.unique(soft)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    rounded = calpha.contours(np.random.default_rng(1), 50, 32, calpha.DEFAULTS)
    assert np.array_equal(rounded, np.round(rounded)) and rounded.min() >= 0 and rounded.max() <= 32


def test_disk_radii_default_to_the_authors_3_to_38_pixels_at_80():
    made = make("disks", count=400, size=80)
    radius = made.params[:, 2]
    assert radius.min() >= 3.0 and radius.max() <= 38.0 and radius.max() > 35.0 and radius.min() < 4.0


def test_grf_mean_and_spread():
    made = make("grf", count=50, size=32)
    pixels = made.images
    assert abs(pixels.mean() - 0.5) < 0.03 and 0.1 < pixels.std() < 0.2


def test_shuffled_is_one_fixed_permutation_of_base():
    base = make("disks", count=4)
    shuffled = make("shuffled", count=4, base="disks", permutation_seed=1)
    order = np.random.default_rng(1).permutation(16 * 16)
    np.testing.assert_array_equal(shuffled.images.reshape(4, -1), base.images.reshape(4, -1)[:, order])
    np.testing.assert_array_equal(shuffled.params, base.params)


def test_rescaled_is_one_image_times_factors():
    made = make("rescaled", count=5, size=16, base="disks", factor=[0.2, 0.9])
    base = make("disks", count=1, seed=0).images[0].astype(float)
    expected = np.clip(made.params[:, 0, None, None].astype(float) * base, 0, 1)
    np.testing.assert_allclose(made.images, expected, atol=1e-6, rtol=0)  # float32 factors and pixels


def test_unknown_param_names_key_and_allowed():
    with pytest.raises(DataError, match=r"datasets\.<name>\.params\.radus.*allowed keys: intensity, radius"):
        make("disks", radus=[0.1, 0.2])
    with pytest.raises(DataError, match="params.base is 'nope'"):
        make("shuffled", base="nope")


def test_registry_has_all_families():
    assert set(FAMILIES) >= {"disks", "calpha", "shuffled", "rescaled", "sines", "grf", "celeba", "lsun", "folder",
                             "patches"}
