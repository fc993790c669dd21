"""Import photographs (CelebA, LSUN bedrooms, any folder) as grayscale uint8 arrays (docs/SCIENCE.md, Data).

A source is a folder of images (searched recursively) or a .zip of them; files are taken in sorted
order of their relative names, so the import is deterministic. Each image is cropped, resized with
PIL's bicubic filter on the RGB image, and turned gray as the float mean of R, G, B, then rounded.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from gdm.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CELEBA_SIZE = (178, 218)  # (width, height) of img_align_celeba
CHUNK = 512  # images decoded per batch of threads (bounds the memory of encoded bytes in flight)


def list_images(source: Path) -> list[str]:
    """Sorted relative names of the image files in a folder or zip; DataError if missing or empty."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"image source {source} does not exist; set datasets.<name>.source to a folder or .zip")
    if source.is_dir():
        names = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        with _open_zip(source) as archive:
            names = [n for n in archive.namelist() if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    if not names:
        raise DataError(f"image source {source} holds no images ({', '.join(IMAGE_SUFFIXES)}); check the path")
    return sorted(names)


def listing_sha256(source: Path, names: list[str]) -> str:
    """Checksum of the source listing: names and sizes (plus CRCs for a zip), to detect a changed source."""
    digest = hashlib.sha256()
    if Path(source).is_dir():
        for name in names:
            digest.update(f"{name}\t{(Path(source) / name).stat().st_size}\n".encode())
    else:
        with _open_zip(source) as archive:
            for name in names:
                info = archive.getinfo(name)
                digest.update(f"{name}\t{info.file_size}\t{info.CRC}\n".encode())
    return digest.hexdigest()


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"image source {source} is neither a folder nor a readable .zip ({err})") from err


def read_encoded(source: Path, names: list[str]) -> Iterator[tuple[str, bytes]]:
    """Yield (name, encoded bytes) in order, from the folder or zip."""
    if Path(source).is_dir():
        for name in names:
            yield name, (Path(source) / name).read_bytes()
        return
    with _open_zip(source) as archive:
        for name in names:
            yield name, archive.read(name)


def crop_celeba(image: Image.Image, name: str) -> Image.Image:
    """Rows 29:-29 and columns 9:-9 of the 178x218 aligned face: a 160x160 square (docs/SCIENCE.md)."""
    if image.size != CELEBA_SIZE:
        raise DataError(f"{name}: size {image.size}, expected {CELEBA_SIZE} (img_align_celeba); use family 'folder'")
    width, height = image.size
    return image.crop((9, 29, width - 9, height - 29))


def crop_top_left(image: Image.Image, name: str, side: int = 256) -> Image.Image:
    """The top-left side x side square (LSUN bedrooms have their short side 256)."""
    if min(image.size) < side:
        raise DataError(f"{name}: size {image.size} is smaller than the {side}x{side} LSUN crop")
    return image.crop((0, 0, side, side))


def crop_centre(image: Image.Image, name: str) -> Image.Image:
    """The largest centred square."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


CROPS: dict[str, Callable[[Image.Image, str], Image.Image]] = {
    "celeba": crop_celeba,
    "lsun": crop_top_left,
    "folder": crop_centre,
}


def decode_gray(data: bytes, name: str, crop: Callable, size: int) -> np.ndarray:
    """Decode, crop, bicubic-resize (RGB) to size x size, gray = round(mean(R, G, B)) as uint8."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # forces the full decode: a truncated file raises here
            rgb = crop(image.convert("RGB"), name).resize((size, size), Image.BICUBIC)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"{name}: unreadable or truncated image ({err}); remove or replace the file") from err
    return np.round(np.asarray(rgb, dtype=np.float64).mean(axis=2)).astype(np.uint8)


def import_photos(source: Path, crop: str, size: int, *, progress: bool = False, threads: int = 4):
    """All images of `source` as uint8 [N, size, size], and the source listing's sha256.

    crop is a key of CROPS. Decoding runs in `threads` threads (PIL releases the GIL while decoding).
    """
    names = list_images(source)
    images = np.empty((len(names), size, size), dtype=np.uint8)
    decode = CROPS[crop]
    bar = tqdm(total=len(names), desc=f"import {Path(source).name}", unit="img", disable=not progress)
    encoded = read_encoded(source, names)
    with ThreadPoolExecutor(max(1, threads)) as pool, bar:
        for start in range(0, len(names), CHUNK):
            chunk = [next(encoded) for _ in range(min(CHUNK, len(names) - start))]
            images[start : start + len(chunk)] = list(
                pool.map(lambda item: decode_gray(item[1], item[0], decode, size), chunk)
            )
            bar.update(len(chunk))
    return images, listing_sha256(source, names)
