"""Synthetic families: determinism, parameters that reproduce images, spectra, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from gdm.config import DataConfig
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES
from gdm.data.pixels import to_uint8
from gdm.data.synthetic import calpha, disks, sines


def make(family: str, count: int = 6, seed: int = 3, size: int = 16, **params):
    data = DataConfig(family=family, image_size=size, params=params)
    return FAMILIES[family].generate(data, count, seed)


@pytest.mark.parametrize("family", ["disks", "calpha", "sines", "grf", "rescaled"])
def test_synthetic_is_deterministic_given_seed(family):
    first, again, other = make(family), make(family), make(family, seed=4)
    assert first.images.dtype == np.uint8 and first.images.shape == (6, 16, 16)
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.images, other.images)


def test_disk_params_reproduce_images():
    made = make("disks", count=20, size=24)
    assert made.params.shape == (20, 5)
    np.testing.assert_array_equal(to_uint8(disks.render(made.params, 24)), made.images)
    cx, cy, radius = made.params[:, 0], made.params[:, 1], made.params[:, 2]
    assert np.all(radius <= np.minimum(cx, cy)) and np.all(cx + radius <= 24)  # disk inside the image


def test_disk_is_antialiased():
    image = disks.render(np.array([[8.0, 8.0, 4.3, 1.0, 0.0]]), 16)[0]
    edge = image[(image > 0) & (image < 1)]
    assert edge.size > 0 and np.isclose(image[8, 8], 1.0) and image[0, 0] == 0.0


def test_sines_params_reproduce_images():
    made = make("sines", count=5, frequency=[2.0, 5.0])
    np.testing.assert_array_equal(to_uint8(sines.render(made.params, 16)), made.images)


@pytest.mark.parametrize("alpha", [1.0, 3.0])
def test_calpha_contour_spectrum_decays_with_alpha(alpha):
    size = 128
    params = {**calpha.DEFAULTS, "alpha": alpha}
    heights = calpha.contours(np.random.default_rng(0), 400, size, params)
    power = (np.abs(np.fft.rfft(heights - heights.mean(axis=1, keepdims=True), axis=1)) ** 2).mean(axis=0)
    k = np.arange(2, size // 4)
    slope = np.polyfit(np.log(k), np.log(power[k]), 1)[0]
    assert abs(slope + 2 * alpha) < 0.15, slope  # amplitudes ~ |k|^-alpha: power ~ |k|^-2 alpha


def test_calpha_two_sides_differ():
    made = make("calpha", count=4, size=32, alpha=2.0)
    top, bottom = made.images[:, :4].mean(axis=(1, 2)), made.images[:, -4:].mean(axis=(1, 2))
    assert np.all(np.abs(top.astype(float) - bottom) > 10)


def test_grf_mean_and_spread():
    made = make("grf", count=50, size=32)
    pixels = made.images / 255.0
    assert abs(pixels.mean() - 0.5) < 0.03 and 0.1 < pixels.std() < 0.2


def test_shuffled_is_one_fixed_permutation_of_base():
    base = make("disks", count=4)
    shuffled = make("shuffled", count=4, base="disks", permutation_seed=1)
    order = np.random.default_rng(1).permutation(16 * 16)
    np.testing.assert_array_equal(shuffled.images.reshape(4, -1), base.images.reshape(4, -1)[:, order])
    np.testing.assert_array_equal(shuffled.params, base.params)


def test_rescaled_is_one_image_times_factors():
    made = make("rescaled", count=5, size=16, base="disks", factor=[0.2, 0.9])
    base = make("disks", count=1, seed=0).images[0] / 255.0
    expected = to_uint8(made.params[:, 0, None, None].astype(float) * base)
    assert np.abs(made.images.astype(int) - expected).max() <= 1  # base image itself is quantised once


def test_unknown_param_names_key_and_allowed():
    with pytest.raises(DataError, match=r"datasets\.<name>\.params\.radus.*allowed keys: intensity, radius"):
        make("disks", radus=[0.1, 0.2])
    with pytest.raises(DataError, match="params.base is 'nope'"):
        make("shuffled", base="nope")


def test_registry_has_all_families():
    assert set(FAMILIES) >= {"disks", "calpha", "shuffled", "rescaled", "sines", "grf", "celeba", "lsun", "folder"}
