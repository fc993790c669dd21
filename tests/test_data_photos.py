"""Photo import (CelebA-shaped folder and zip of real JPEGs) and near-duplicate removal."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from gdm.config import DataConfig
from gdm.data.dedup import deduplicate
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES
from gdm.data.photos import import_photos


def face_like(rng: np.random.Generator, width: int = 178, height: int = 218) -> Image.Image:
    """A smooth random RGB picture (gradients + blobs), so JPEG and bicubic behave as on photos."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)]
    rgb = 127.5 + 120 * np.stack(channels, axis=2) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_jpegs(folder, count: int, seed: int = 0, **size) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [folder / f"{i + 1:06d}.jpg" for i in range(count)]
    for path in paths:
        face_like(rng, **size).save(path, quality=90)
    return paths


def expected_gray(path, box, size) -> np.ndarray:
    """Direct PIL computation: crop, bicubic resize of the RGB image, float mean of R, G, B, round."""
    rgb = Image.open(path).convert("RGB").crop(box).resize((size, size), Image.BICUBIC)
    return np.round(np.asarray(rgb, dtype=np.float64).mean(axis=2)).astype(np.uint8)


def test_celeba_folder_and_zip_match_direct_pil(tmp_path):
    paths = write_jpegs(tmp_path / "img_align_celeba", 5)
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in paths:
            handle.write(path, f"img_align_celeba/{path.name}")
    expected = np.stack([expected_gray(p, (9, 29, 169, 189), 20) for p in paths])
    for source in (tmp_path / "img_align_celeba", archive):
        images, listing = import_photos(source, "celeba", 20)
        assert images.dtype == np.uint8 and images.shape == (5, 20, 20)
        np.testing.assert_array_equal(images, expected)
        assert len(listing) == 64


def test_lsun_and_folder_crops(tmp_path):
    paths = write_jpegs(tmp_path / "lsun", 2, width=300, height=260)
    images, _ = import_photos(tmp_path / "lsun", "lsun", 16)
    np.testing.assert_array_equal(images[1], expected_gray(paths[1], (0, 0, 256, 256), 16))
    images, _ = import_photos(tmp_path / "lsun", "folder", 16)
    np.testing.assert_array_equal(images[0], expected_gray(paths[0], (20, 0, 280, 260), 16))


def test_bad_sources_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        import_photos(tmp_path / "absent", "celeba", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        import_photos(tmp_path / "empty", "celeba", 16)
    paths = write_jpegs(tmp_path / "faces", 3)
    paths[1].write_bytes(paths[1].read_bytes()[:2000])  # truncated JPEG
    with pytest.raises(DataError, match="000002.jpg.*truncated"):
        import_photos(tmp_path / "faces", "celeba", 16)
    write_jpegs(tmp_path / "wrong", 1, width=100, height=100)
    with pytest.raises(DataError, match=r"000001.jpg: size \(100, 100\)"):
        import_photos(tmp_path / "wrong", "celeba", 16)


def test_family_without_source_is_refused():
    with pytest.raises(DataError, match="needs datasets.<name>.source"):
        FAMILIES["celeba"].generate(DataConfig(family="celeba", image_size=16), 4, 0)


def test_dedup_drops_the_later_of_planted_near_duplicates():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 40, 40)).astype(np.float32)
    images[17] = 0.5 * images[4] + 60 + rng.normal(0, 2, (40, 40))  # affine copy + noise: |corr| ~ 1
    images[25] = 255 - images[9]  # negative: |corr| = 1
    images[12] = images[21]  # earlier copy of a later image: 21 is dropped, 12 kept
    kept, removed = deduplicate(np.clip(images, 0, 255).astype(np.uint8), chunk=8)
    assert removed == 3
    assert set(range(30)) - set(kept.tolist()) == {17, 21, 25}
    assert {4, 9, 12} <= set(kept.tolist())


def test_photo_family_deduplicates(tmp_path):
    paths = write_jpegs(tmp_path / "faces", 4, seed=1)
    paths[3].write_bytes(paths[0].read_bytes())  # an exact duplicate, later in sorted order
    made = FAMILIES["celeba"].generate(DataConfig(family="celeba", image_size=20, source=str(tmp_path / "faces")), 3, 0)
    assert made.info["deduplicated"] == 1 and made.info["source_images"] == 4 and len(made.images) == 3
