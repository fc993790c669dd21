"""Photo patches: tiling, the contrast threshold, scales, the embedded scikit-image photographs, manifest checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdm.config import DataConfig
from gdm.data import patches
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES
from gdm.data.prepare import prepare_dataset
from gdm.data.store import load_split
from gdm.io import stable_hash


def test_tiles_are_non_overlapping_in_raster_order_and_drop_the_remainder():
    image = np.arange(10 * 13, dtype=float).reshape(10, 13)
    cut = patches.tiles(image, 4)
    assert cut.shape == (2 * 3, 4, 4)
    np.testing.assert_array_equal(cut[1], image[0:4, 4:8])  # second tile: same band, next columns
    np.testing.assert_array_equal(cut[3], image[4:8, 0:4])  # fourth: next band
    assert not np.isin(image[8:, :], cut).any() and not np.isin(image[:, 12], cut).any()


def test_contrast_threshold_drops_near_flat_patches():
    flat = np.full((4, 4), 0.5)
    faint = flat + 0.004 * np.array([[1, -1, 1, -1]] * 4)  # std 0.004
    textured = flat + 0.1 * np.array([[1, -1, 1, -1]] * 4)  # std 0.1
    kept = patches.contrasted(np.stack([flat, faint, textured]), min_std=0.01)
    assert len(kept) == 1 and np.array_equal(kept[0], textured)
    assert len(patches.contrasted(np.stack([flat, faint, textured]), min_std=0.003)) == 2


def _photos(folder, seed: int = 0) -> dict:
    """Two textured photographs (an RGB 40×36 and a gray 24×24) and a flat one, as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "a.png": rng.integers(0, 256, (36, 40, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 256, (24, 24), dtype=np.uint8),
        "flat.png": np.full((16, 16), 90, dtype=np.uint8),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(folder / name)
    return arrays


def test_patches_of_a_folder_at_two_scales(tmp_path):
    arrays = _photos(tmp_path / "photos")
    data = DataConfig(family="patches", image_size=8, source=str(tmp_path / "photos"),
                      params={"scales": [1.0, 0.5], "dedup_threshold": 1.0})
    made = FAMILIES["patches"].generate(data, 1, 0)
    # a.png: 4×5 tiles at scale 1 and 2×2 at ½ (18×20); b.png: 3×3 and 1×1 (12×12); flat.png: none survive
    assert made.images.dtype == np.float32 and made.images.shape == (20 + 4 + 9 + 1, 8, 8)
    gray = arrays["a.png"].astype(np.float64).mean(axis=2) / 255
    np.testing.assert_allclose(made.images[0], gray[:8, :8], atol=1e-6)  # first file, scale 1, first tile
    np.testing.assert_allclose(made.images[24], arrays["b.png"][:8, :8] / 255, atol=1e-6)
    records = made.info["source_files"]
    assert [r["name"] for r in records] == ["a.png", "b.png", "flat.png"] and [r["patches"] for r in records] == [
        24,
        10,
        0,
    ]
    assert records[1]["sha256"] == hashlib.sha256((tmp_path / "photos" / "b.png").read_bytes()).hexdigest()
    # what make records is what prepare recomputes to check the source: one checksum (patches.listing_of)
    listing = made.info["source_listing_sha256"]
    assert listing == patches.listing_sha256(data, {**patches.DEFAULTS, **data.params})
    assert listing == stable_hash([[r["name"], r["sha256"]] for r in records])  # the manifests already written


def test_prepared_patches_are_stored_as_float_and_a_changed_photo_is_refused(tmp_path):
    _photos(tmp_path / "photos")
    data = DataConfig(family="patches", image_size=8, source=str(tmp_path / "photos"), pool_size=20, test_size=4,
                      shard_size=8, params={"dedup_threshold": 1.0})
    manifest = prepare_dataset(data, tmp_path / "data")
    assert manifest["pixel_dtype"] == "float32" and manifest["params"]["min_std"] == 0.01
    assert {r["name"]: r["sha256"] for r in manifest["source_files"]}["a.png"] == hashlib.sha256(
        (tmp_path / "photos" / "a.png").read_bytes()
    ).hexdigest()
    made = FAMILIES["patches"].generate(data, 1, 0).images
    loaded = np.concatenate([load_split(tmp_path / "data", s).numpy()[:, 0] for s in ("test", "A", "B")])
    assert {x.tobytes() for x in loaded} <= {x.tobytes() for x in made}  # exact values, no 8-bit rounding
    assert prepare_dataset(data, tmp_path / "data") == manifest  # idempotent
    Image.fromarray(np.zeros((24, 24), dtype=np.uint8)).save(tmp_path / "photos" / "b.png")
    with pytest.raises(DataError, match="changed since"):
        prepare_dataset(data, tmp_path / "data")


def test_embedded_default_reads_scikit_image_photographs_from_the_installed_package(tmp_path):
    import skimage

    folder = patches.embedded_source()
    assert folder.parent == Path(skimage.__file__).parent
    assert all((folder / name).is_file() for name in patches.PHOTOGRAPHS)
    data = DataConfig(family="patches", image_size=32, params={"files": ["camera.png"], "scales": [1.0]})
    made = FAMILIES["patches"].generate(data, 1, 0)
    camera = np.asarray(Image.open(folder / "camera.png").convert("RGB"), dtype=np.float64).mean(axis=2) / 255
    expected = patches.contrasted(patches.tiles(camera, 32), 0.01)
    assert 0 < len(made.images) <= len(expected) <= 16 * 16
    assert {x.astype(np.float32).tobytes() for x in expected} >= {x.tobytes() for x in made.images}
    assert made.info["source_files"][0]["sha256"] == hashlib.sha256((folder / "camera.png").read_bytes()).hexdigest()


def test_missing_photograph_is_named():
    data = DataConfig(family="patches", image_size=16, params={"files": ["no_such_photo.png"]})
    with pytest.raises(DataError, match="no_such_photo.png not found"):
        FAMILIES["patches"].generate(data, 1, 0)
