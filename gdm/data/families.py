"""Registry of dataset families by name: `FAMILIES[data.family].generate(data, count, seed)`.

A family turns a DataConfig (its `params` dict checked against documented defaults) into images
[N, H, W] with values x in [0, 1] and, for parametric families, their generating parameters [N, P].
Synthetic families and photo patches give float32 images, stored as they are (no quantisation: 8-bit
storage would cap a denoiser's measurable PSNR at 58.9 dB); imported photos (celeba, lsun, folder) are
uint8 = round(255 x) like their source files (gdm.data.pixels). Synthetic families are deterministic
given the seed. Photo families read `DataConfig.source` (patches: scikit-image's photographs by
default), deduplicate, and return every image kept (at least `count`); the split then picks test and
pool from them. Wrappers (shuffled, rescaled) apply a transform to the images of params.base.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdm.config import ConfigError, DataConfig
from gdm.data import dedup, patches, photos
from gdm.data.errors import DataError
from gdm.data.generated import Generated
from gdm.data.pixels import to_stored, to_unit
from gdm.data.synthetic import calpha, disks, grf, sines, transforms


@dataclass(frozen=True)
class Family:
    """A named dataset family: documented parameter defaults and a function making its images."""

    name: str
    summary: str  # one line: what the images are
    defaults: Mapping[str, Any]  # every allowed key of DataConfig.params with its default
    make: Callable[..., Generated]  # make(data, params, count, seed, progress=, device=) -> Generated
    photo: bool = False  # True: images are read from DataConfig.source
    wraps_base: bool = False  # True: params["base"] names another family whose images are transformed
    param_names: tuple[str, ...] = field(default=())  # columns of the params array, if any
    # checksum of the files read, for families with an embedded default source
    source_listing: Callable[[DataConfig, dict], str] | None = None

    def resolve_params(self, data: DataConfig, key: str = "datasets.<name>") -> dict:
        """Defaults overridden by data.params; DataError naming `<key>.params.<k>` for an unknown k."""
        allowed = dict(self.defaults)
        if self.wraps_base:  # a wrapper also forwards its base family's parameters
            allowed = {**base_family(data.params.get("base", self.defaults["base"])).defaults, **allowed}
        for name in data.params:
            if name not in allowed:
                raise DataError(
                    f"config key '{key}.params.{name}' is unknown for family {self.name!r}; "
                    f"allowed keys: {', '.join(sorted(allowed))}"
                )
        return {**allowed, **dict(data.params)}

    def uses_source(self, data: DataConfig) -> bool:
        """Whether the images come from DataConfig.source (a photo family, or a wrapper of one)."""
        if self.wraps_base:
            return base_family(self.resolve_params(data)["base"]).uses_source(data)
        return self.photo

    def generate(self, data: DataConfig, count: int, seed: int, *, progress: bool = False, device="cpu") -> Generated:
        """Make the family's images for `data` (count images; photo families: all kept, at least count)."""
        return self.make(data, self.resolve_params(data), count, seed, progress=progress, device=device)


def base_family(name: str) -> Family:
    """The family a wrapper transforms; DataError if unknown or itself a wrapper."""
    if name not in FAMILIES or FAMILIES[name].wraps_base:
        allowed = ", ".join(sorted(k for k, v in FAMILIES.items() if not v.wraps_base))
        raise DataError(f"params.base is {name!r}; allowed base families: {allowed}")
    return FAMILIES[name]


SYNTH_CHUNK = 1024  # images synthesised at a time (bounds float64 memory); part of the seed -> images map


def _synthetic(module) -> Callable[..., Generated]:
    """Wrap a synthetic module's generate(rng, count, size, params) -> (float images, params), in chunks."""

    def make(data: DataConfig, params: dict, count: int, seed: int, **_: Any) -> Generated:
        if count < 1:
            raise DataError(f"{count} images requested from family {data.family!r}; ask for at least 1")
        rng = np.random.default_rng(seed)
        chunks = [
            module.generate(rng, min(SYNTH_CHUNK, count - start), data.image_size, params)
            for start in range(0, count, SYNTH_CHUNK)
        ]
        images = np.concatenate([to_stored(images) for images, _ in chunks])
        values = None if chunks[0][1] is None else np.concatenate([values for _, values in chunks])
        return Generated(images, values, {})

    return make


def _photo(crop: str) -> Callable[..., Generated]:
    """Import data.source with `crop`, then drop near-duplicates (dedup.py)."""

    def make(data: DataConfig, params: dict, count: int, seed: int, *, progress=False, device="cpu") -> Generated:
        if not data.source:
            raise DataError(f"family {crop!r} needs datasets.<name>.source: the folder or .zip of its images")
        images, listing = photos.import_photos(Path(data.source), crop, data.image_size, progress=progress)
        kept, removed = dedup.deduplicate(images, threshold=params["dedup_threshold"], device=device, progress=progress)
        info = {"source_images": len(images), "deduplicated": removed, "source_listing_sha256": listing}
        return Generated(images[kept], None, info)

    return make


def _base_images(data: DataConfig, params: dict, count: int, seed: int, **kwargs: Any) -> Generated:
    """The images of params.base, made with the base's own parameters (the wrapper's keys removed)."""
    base = base_family(params["base"])
    base_params = {k: v for k, v in params.items() if k in base.defaults}
    return base.make(data, {**base.defaults, **base_params}, count, seed, **kwargs)


def _make_shuffled(data: DataConfig, params: dict, count: int, seed: int, **kwargs: Any) -> Generated:
    base = _base_images(data, params, count, seed, **kwargs)
    permutation = transforms.pixel_permutation(data.image_size, int(params["permutation_seed"]))
    return Generated(transforms.shuffle_pixels(base.images, permutation), base.params, base.info)


def _make_rescaled(data: DataConfig, params: dict, count: int, seed: int, **kwargs: Any) -> Generated:
    if base_family(params["base"]).photo:
        raise DataError(f"family 'rescaled' needs a synthetic params.base, not {params['base']!r}")
    image = to_unit(_base_images(data, params, 1, int(params["image_seed"]), **kwargs).images[0])
    images, scales = transforms.rescale(image, np.random.default_rng(seed), count, params["factor"])
    return Generated(to_stored(images), scales.astype(np.float32), {})


PHOTO_DEFAULTS = {"dedup_threshold": 0.95}  # drop the later image of a pair with |corr| > this (dedup.py)

FAMILIES: dict[str, Family] = {
    "disks": Family(
        "disks",
        "one anti-aliased disk on a flat background (5 params)",
        disks.DEFAULTS,
        _synthetic(disks),
        param_names=disks.PARAM_NAMES,
    ),
    "calpha": Family("calpha", "two C^beta regions split by a C^alpha contour", calpha.DEFAULTS, _synthetic(calpha)),
    "sines": Family(
        "sines",
        "2-D sine waves, random phase and contrast (4 params)",
        sines.DEFAULTS,
        _synthetic(sines),
        param_names=sines.PARAM_NAMES,
    ),
    "grf": Family("grf", "stationary Gaussian field, power ~ 1/|omega|^gamma", grf.DEFAULTS, _synthetic(grf)),
    "celeba": Family(
        "celeba", "CelebA aligned faces, crop 29:-29 x 9:-9, bicubic", PHOTO_DEFAULTS, _photo("celeba"), photo=True
    ),
    "lsun": Family("lsun", "LSUN images, top-left 256x256 crop, bicubic", PHOTO_DEFAULTS, _photo("lsun"), photo=True),
    "folder": Family(
        "folder",
        "any folder or zip of images, centre square crop, bicubic",
        PHOTO_DEFAULTS,
        _photo("folder"),
        photo=True,
    ),
    "patches": Family(
        "patches",
        "grayscale p x p patches of photographs at several scales, near-flat ones dropped (default: scikit-image's)",
        patches.DEFAULTS,
        patches.make,
        source_listing=patches.listing_sha256,
    ),
    "shuffled": Family(
        "shuffled",
        "params.base images under one fixed seeded pixel permutation",
        {"base": "celeba", "permutation_seed": 0},  # base family; seed of the permutation (same for all images)
        _make_shuffled,
        wraps_base=True,
    ),
    "rescaled": Family(
        "rescaled",
        "one image of params.base times random positive factors (1 param)",
        {"base": "disks", "image_seed": 0, "factor": [0.1, 1.0]},  # base; seed of its one image; factor range
        _make_rescaled,
        wraps_base=True,
        param_names=("factor",),
    ),
}


def check_dataset(data: DataConfig, key: str, *, need_source: bool = True) -> None:
    """The registry's checks of one dataset's settings, before any work: the family exists, its params
    resolve, and a family that reads photographs has a `<key>.source` that exists here, when need_source
    (commands that only read the run folder do without it, set or not: ConfigError names the key)."""
    if data.family not in FAMILIES:
        raise ConfigError(
            f"config key '{key}.family' is {data.family!r}; allowed values: {', '.join(sorted(FAMILIES))}"
        )
    family = FAMILIES[data.family]
    try:
        family.resolve_params(data, key=key)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not family.uses_source(data):
        return
    if not data.source and not need_source:  # the run folder's commands: cells are named without the path
        return
    if not data.source:
        raise ConfigError(f"config key '{key}.source' is not set; family {data.family!r} reads its images from a "
                          f"folder or .zip: pass {key}.source=/path/to/images")
    if need_source and not Path(data.source).exists():
        raise ConfigError(f"config key '{key}.source' is {data.source!r}, which does not exist; give the folder or "
                          ".zip holding the images")
