"""Every shipped config loads and validates, and a tiny override of each runs end to end (issue 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gdm.config import load_config

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
    cfg = load_config(cfg_path)
    overrides = [f"root={tmp_path / 'runs'}", "n_train=[1]", "launch.executor=inprocess", "wandb.mode=offline"]
    overrides += ["trainer.max_steps=2", "trainer.batch_size=2", "trainer.accelerator=cpu", "trainer.precision=32-true"]
    overrides += ["trainer.channels_last=false", "trainer.checkpoint_every=1", "trainer.val_every=0"]
    overrides += ["trainer.lr_halve_every=0", "model.channels=4", "model.layers=3"]
    overrides += ["sampler.max_steps=3", "eval.num_samples=2", "eval.batch_size=2", "eval.psnr_images=2"]
    # The full Jacobian at 80×80 / 160×160 is a 6 400² / 25 600² eigenproblem: minutes and GBs on a CPU.
    # The Jacobian path is covered by tests/test_pipeline.py and tests/test_analysis.py at small sizes.
    overrides += ["eval.psnr_sigmas=[0.1]", "eval.grid_samples=1", "eval.jacobian.enabled=false"]
    for name, data in cfg.datasets.items():
        key = f"datasets.{name}"
        overrides += [f"{key}.pool_size=8", f"{key}.test_size=4", f"{key}.shard_size=8"]
        if data.family in PHOTO_FAMILIES:
            size = (341, 256) if "lsun" in (data.family, data.params.get("base")) else (178, 218)
            overrides.append(f"{key}.source={_photo_folder(tmp_path / f'photos_{name}', size=size)}")
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
