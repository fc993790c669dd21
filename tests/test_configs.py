"""Every shipped config loads and validates, and a tiny override of each runs end to end (issue 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdm.config import load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
PHOTO_FAMILIES = {"celeba", "lsun", "folder", "shuffled"}


def _photo_folder(root: Path, count: int = 24) -> Path:
    """A folder of CelebA-shaped (218×178) RGB JPEGs with smooth random content."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        low = rng.integers(0, 256, size=(7, 6, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((178, 218), Image.BICUBIC)
        image.save(root / f"{i:06d}.jpg", quality=95)
    return root


def _tiny(cfg_path: Path, tmp_path: Path) -> list[str]:
    """Overrides that keep the config's families and image sizes but shrink every budget."""
    cfg = load_config(cfg_path)
    overrides = [f"root={tmp_path / 'runs'}", "n_train=[1]", "launch.executor=inprocess", "wandb.mode=offline"]
    overrides += ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    overrides += ["trainer.channels_last=false", "trainer.checkpoint_every=1", "trainer.val_every=0"]
    overrides += ["trainer.lr_halve_every=0", "model.channels=4", "model.layers=3"]
    overrides += ["sampler.max_steps=3", "eval.num_samples=2", "eval.batch_size=2", "eval.psnr_images=2"]
    overrides += ["eval.psnr_sigmas=[0.1]", "eval.grid_samples=1", "eval.jacobian.num_images=1"]
    overrides += ["eval.jacobian.sigmas=[0.1]", "eval.jacobian.chunk=1024"]
    for name, data in cfg.datasets.items():
        key = f"datasets.{name}"
        overrides += [f"{key}.pool_size=8", f"{key}.test_size=4", f"{key}.shard_size=8"]
        if data.family in PHOTO_FAMILIES:
            overrides.append(f"{key}.source={_photo_folder(tmp_path / 'photos')}")
    return overrides


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.datasets and cfg.n_train
    assert cfg.trainer.max_steps > 0


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_tiny_run_end_to_end(path, tmp_path):
    from launch.grid import run_grid

    cfg = load_config(path, _tiny(path, tmp_path))
    run_grid(cfg, progress=False)
    for dataset in cfg.datasets:
        results = cfg.run_dir / dataset / "n000001-eval" / "results.json"
        assert results.is_file(), f"{path.name}: no results at {results}"
