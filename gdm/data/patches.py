"""Photo patches: grayscale p×p tiles cut from photographs at one or more scales (docs/SCIENCE.md, Data).

Each photograph is read as gray = mean(R, G, B) / 255 in float, resized by every factor of
params.scales (PIL bicubic, antialiased when shrinking), and cut into non-overlapping p×p tiles on a
grid anchored at its top-left corner (p = DataConfig.image_size; a remainder narrower than p is left
out). Near-flat tiles, whose pixel standard deviation is below params.min_std, are dropped: they carry
no structure and would let any denoiser score well by returning their mean. Near-duplicates are then
removed as for the other photo families (dedup.py). Files are taken in sorted order, scales in the
order given, tiles in raster order, so the result is deterministic; patches are float32 in [0, 1].

Without DataConfig.source the photographs are those scikit-image ships inside its installed package
(PHOTOGRAPHS, read as plain files from its data folder; nothing is downloaded). The manifest records
every file read with its sha256 and the patches it gave.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gdm.data import dedup, photos
from gdm.data.errors import DataError
from gdm.data.generated import Generated
from gdm.io import file_sha256, stable_hash

# The photographs among scikit-image's bundled images (not the drawings, logos and test patterns).
PHOTOGRAPHS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)

DEFAULTS = {
    # photographs to read (names relative to the source); None: every image of DataConfig.source, or PHOTOGRAPHS
    # without a source
    "files": None,
    "scales": [1.0, 0.5],  # each photograph is resized by each of these factors before it is cut into patches
    "min_std": 0.01,  # contrast threshold: patches whose pixel standard deviation is below this are dropped
    "dedup_threshold": 0.95,  # drop the later patch of a pair with |corr| > this (dedup.py); 1 keeps all
}


def embedded_source() -> Path:
    """scikit-image's data folder inside the installed package (its wheel ships the photographs)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise DataError("family 'patches' without datasets.<name>.source reads scikit-image's bundled photographs; "
                        "install scikit-image or set datasets.<name>.source to a folder of photographs")
    return Path(spec.origin).parent / "data"


def source_files(source: str | None, files: list[str] | None) -> tuple[Path, list[str]]:
    """(folder, sorted relative names) of the photographs to read; DataError naming a missing file."""
    folder = Path(source) if source else embedded_source()
    if files is None and source:
        return folder, photos.list_images(folder)
    names = sorted(files if files is not None else PHOTOGRAPHS)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"family 'patches': {', '.join(missing)} not found in {folder}; fix params.files or the source")
    return folder, names


def read_gray(path: Path) -> np.ndarray:
    """float64 [H, W] in [0, 1]: the mean of R, G, B over 255 (gray, palette and RGBA files alike)."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"{path}: unreadable image ({err}); remove it or list other params.files") from err
    return rgb.mean(axis=2) / 255.0


def rescaled(gray: np.ndarray, scale: float) -> np.ndarray:
    """The image resized by `scale` (PIL bicubic on float pixels), clipped to [0, 1]."""
    if scale == 1.0:
        return gray
    height, width = gray.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(gray.astype(np.float32), mode="F").resize(size, Image.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def tiles(image: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size×size tiles [N, size, size] in raster order (a narrower remainder is left out)."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    grid = image[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return grid.transpose(0, 2, 1, 3).reshape(rows * cols, size, size)


def contrasted(patches: np.ndarray, min_std: float) -> np.ndarray:
    """The patches whose pixel standard deviation is at least min_std."""
    return patches[patches.std(axis=(1, 2)) >= min_std]


def listing_sha256(data, params: dict) -> str:
    """Checksum of the files read (names and sha256s): a changed photograph is refused by prepare."""
    folder, names = source_files(data.source, params["files"])
    return listing_of([(name, file_sha256(folder / name)) for name in names])


def listing_of(files: list[tuple[str, str]]) -> str:
    """The one checksum of a patch source: the stable hash of its [name, file sha256] pairs, in read order
    (what `make` records in the manifest and `listing_sha256` recomputes to check the source)."""
    return stable_hash([[name, digest] for name, digest in files])


def make(data, params: dict, count: int, seed: int, *, progress: bool = False, device="cpu"):
    """Every kept patch (float32 [N, p, p]) with the source files and their checksums in `info`."""
    folder, names = source_files(data.source, params["files"])
    parts, records = [], []
    for name in names:
        gray = read_gray(folder / name)
        kept = [contrasted(tiles(rescaled(gray, float(s)), data.image_size), float(params["min_std"]))
                for s in params["scales"]]
        parts.extend(kept)
        records.append({"name": name, "sha256": file_sha256(folder / name), "patches": int(sum(map(len, kept)))})
    images = (
        np.concatenate(parts).astype(np.float32)
        if parts
        else np.zeros((0, data.image_size, data.image_size), np.float32)
    )
    if len(images) == 0:
        raise DataError(f"family 'patches': no patch of {data.image_size}x{data.image_size} in {folder} has std "
                        f">= {params['min_std']}; lower params.min_std or the image size")
    kept, removed = dedup.deduplicate(
        images, threshold=float(params["dedup_threshold"]), device=device, progress=progress
    )
    info = {"source_images": len(names), "deduplicated": removed, "source_files": records,
            "source_listing_sha256": listing_of([(r["name"], r["sha256"]) for r in records])}
    return Generated(images[kept], None, info)
