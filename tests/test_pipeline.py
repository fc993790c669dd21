"""The whole pipeline, real at every step, on a tiny config: data → cells → eval pairs → report, twice."""

from __future__ import annotations

import json
import time

import pytest
import torch

from gdm.cells import expand_cells, expand_pairs
from gdm.config import load_config
from gdm.tracking import offline_run_dirs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from conftest import TINY_OVERRIDES

    from launch.grid import run_grid

    root = tmp_path_factory.mktemp("pipeline")
    cfg = load_config(None, [*TINY_OVERRIDES, f"root={root / 'runs'}", "eval.jacobian.enabled=true",
                             "eval.jacobian.num_images=1", "eval.jacobian.chunk=64"])
    summary = run_grid(cfg, progress=False)
    return cfg, summary


def test_every_cell_has_a_checkpoint_and_model(finished):
    cfg, summary = finished
    assert not summary["failed"]
    for cell in expand_cells(cfg):
        directory = cell.directory(cfg)
        assert (directory / "DONE").exists() and (directory / "last.ckpt").exists()
        state = torch.load(directory / "model.pt", weights_only=True)
        assert state["image_size"] == 16


def test_every_pair_has_finite_results_figures_and_samples(finished):
    cfg, _ = finished
    for pair in expand_pairs(cfg):
        directory = pair.directory(cfg)
        results = json.loads((directory / "results.json").read_text())
        assert results["n"] == pair.n and results["num_samples"] + max(results["diverged_A"], results["diverged_B"]) >= 1
        for key in ("ab_cosine_median", "ab_correlation_median", "nearest_correlation_median", "psnr_gap"):
            assert results[key] is None or -1e9 < results[key] < 1e9, key
        assert set(results["psnr"]["A"]) == {"train", "test"}
        assert len(results["psnr"]["A"]["train"]["output_psnr"]) == len(cfg.eval.psnr_sigmas)
        geometry = next(iter(results["jacobian"].values()))["A"]
        assert geometry["homogeneity_error"] < 1e-3  # f(y) = J y for the bias-free UNet
        arrays = torch.load(directory / "samples.pt", weights_only=True)
        assert arrays["samples_A"].shape == (cfg.eval.num_samples, 1, 16, 16)
        for name in ("samples.png", "psnr.png", "similarity_hist.png", "eigen_spectra.png", "results.csv"):
            assert (directory / name).stat().st_size > 0, name


def test_nearest_training_image_is_in_the_own_split(finished):
    cfg, _ = finished
    from gdm.analysis.similarity import correlation_matrix
    from gdm.data.store import load_split

    pair = expand_pairs(cfg)[-1]
    arrays = torch.load(pair.directory(cfg) / "samples.pt", weights_only=True)
    train = load_split(cfg.run_dir / "data" / pair.dataset, "A", pair.n)
    valid = arrays["valid"]
    best = correlation_matrix(arrays["samples_A"][valid], train).max(1)
    assert torch.equal(arrays["nearest_index_A_correlation"], best.indices)


def test_wandb_offline_runs_hold_train_and_eval_metrics(finished):
    cfg, _ = finished
    runs = offline_run_dirs(cfg)
    ids = {c.wandb_id(cfg) for c in expand_cells(cfg)} | {p.wandb_id(cfg) for p in expand_pairs(cfg)}
    assert ids <= {r.name.rsplit("-", 1)[-1] for r in runs}
    eval_run = next(r for r in runs if r.name.endswith(expand_pairs(cfg)[0].wandb_id(cfg)))
    blob = b"".join(p.read_bytes() for p in eval_run.glob("*.wandb"))
    assert b"ab_correlation_median" in blob and b"eval" in blob


def test_report_and_resolved_config(finished):
    cfg, _ = finished
    report = cfg.run_dir / "report"
    table = (report / "summary.md").read_text()
    assert all(f"| disks | {n} |" in table for n in cfg.n_train)
    for name in ("disks_samples_vs_n.png", "disks_correlation_vs_n.png", "disks_psnr_A.png", "disks_similarity_hist.png"):
        assert (report / name).stat().st_size > 0, name
    assert load_config(cfg.run_dir / "config.yaml").trainer.max_steps == cfg.trainer.max_steps


def test_second_run_retrains_nothing(finished):
    cfg, _ = finished
    from launch.grid import run_grid

    stamps = {c.cell_id: (c.directory(cfg) / "model.pt").stat().st_mtime_ns for c in expand_cells(cfg)}
    start = time.monotonic()
    summary = run_grid(cfg, progress=False)
    assert not summary["trained"] and not summary["evaluated"]
    assert stamps == {c.cell_id: (c.directory(cfg) / "model.pt").stat().st_mtime_ns for c in expand_cells(cfg)}
    assert time.monotonic() - start < 30
