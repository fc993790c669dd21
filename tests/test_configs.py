"""Every shipped config loads and validates, and a tiny override of each runs end to end (issue 7)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from gdm.config import ConfigError
from gdm.experiment import load_experiment

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
PHOTO_FAMILIES = {"celeba", "lsun", "folder", "shuffled"}


def _photo_folder(root: Path, count: int = 24, size: tuple[int, int] = (178, 218)) -> Path:
    """A folder of RGB JPEGs (CelebA-shaped 178×218 by default; LSUN's are 256 on the short side)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        low = rng.integers(0, 256, size=(7, 6, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize(size, Image.BICUBIC)
        image.save(root / f"{i:06d}.jpg", quality=95)
    return root


def _tiny(cfg_path: Path, tmp_path: Path) -> list[str]:
    """Overrides that keep the config's families and image sizes but shrink every budget."""
    cfg = OmegaConf.load(cfg_path)
    overrides = [f"root={tmp_path / 'runs'}", "n_train=[1]", "launch.executor=inprocess", "wandb.mode=offline"]
    overrides += ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    overrides += ["trainer.channels_last=false", "trainer.checkpoint_every=1", "trainer.val_every=0"]
    overrides += ["trainer.lr_halve_every=0", "trainer.keep_models_at=[]", "model.channels=4", "model.layers=3"]
    overrides += ["sampler.max_steps=3", "eval.num_samples=2", "eval.batch_size=2", "eval.psnr_images=2"]
    # The full Jacobian at 80×80 / 160×160 is a 6 400² / 25 600² eigenproblem: minutes and GBs on a CPU.
    # The Jacobian path is covered by tests/test_pipeline.py and tests/test_analysis.py at small sizes.
    overrides += ["eval.psnr_sigmas=[0.1]", "eval.grid_samples=1", "eval.jacobian.enabled=false"]
    # Likewise the Gaussian reference: its covariance is D × D (D = pixels), 5 GB in float64 at 160×160 before
    # its eigendecomposition. tests/test_controls.py covers it at small sizes; a tiny run keeps it at ≤ 32 px.
    if max(data.get("image_size", 32) for data in cfg.datasets.values()) > 32:
        overrides.append("eval.gaussian_reference=false")
    for name, data in cfg.datasets.items():
        key = f"datasets.{name}"
        overrides += [f"{key}.pool_size=8", f"{key}.test_size=4", f"{key}.shard_size=8"]
        if data.family in PHOTO_FAMILIES:
            size = (341, 256) if "lsun" in (data.family, (data.get("params") or {}).get("base")) else (178, 218)
            overrides.append(f"{key}.source={_photo_folder(tmp_path / f'photos_{name}', size=size)}")
    return overrides


def _photo_datasets(path: Path) -> list[str]:
    return [name for name, data in OmegaConf.load(path).datasets.items() if data.family in PHOTO_FAMILIES]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_validates(path, tmp_path):
    photos = _photo_datasets(path)
    if photos:  # a photo dataset needs its source at load time, and the error names the key
        with pytest.raises(ConfigError, match=f"'datasets.{photos[0]}.source' is not set"):
            load_experiment(path)
    cfg = load_experiment(path, [f"datasets.{name}.source={tmp_path}" for name in photos])
    assert cfg.name and cfg.datasets and cfg.n_train
    assert cfg.trainer.max_steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_tiny_run_end_to_end(path, tmp_path):
    from launch.grid import run_grid

    cfg = load_experiment(path, _tiny(path, tmp_path))
    run_grid(cfg, progress=False)
    from gdm.cells import expand_pairs
    from gdm.io import read_json

    pairs = expand_pairs(cfg)
    assert sorted(p.dataset for p in pairs) == sorted(cfg.datasets) and {p.n for p in pairs} == {1}
    for pair in pairs:
        results = read_json(pair.directory(cfg) / "results.json")
        assert results["dataset"] == pair.dataset and results["n"] == 1 and results["num_samples"] == 2
        for split in ("A", "B"):
            assert 0 <= results[f"diverged_{split}"] <= 2 and 0 <= results[f"median_steps_{split}"] <= 3
            for curve in results["psnr"][split].values():
                assert curve["sigma"] == [0.1]
                # Noise σ = 0.1 on images in [0, 1], no clipping: PSNR = −10 log10(σ² mean z²) ≈ 20 dB
                # (mean z² over D ≥ 256 pixels is within 1 ± 0.1 at 5 standard deviations).
                assert abs(curve["input_psnr"][0] - 20.0) < 1.5, (path.name, curve)
                assert math.isfinite(curve["output_psnr"][0])
        for measure in ("cosine", "correlation"):
            value = results[f"ab_{measure}_median"]  # None (JSON null) only when every sample diverged
            assert value is None or -1 - 1e-9 <= value <= 1 + 1e-9, (measure, value)
