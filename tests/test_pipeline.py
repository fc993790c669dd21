"""The whole pipeline, real at every step, on a tiny config: data → cells → eval pairs → report, twice."""

from __future__ import annotations

import json
import time

import numpy as np
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


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean-removed correlation of every row of a with every row of b (numpy, float64: independent of gdm)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a @ b.T) / np.outer(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_every_pair_has_strict_results_that_match_its_samples(finished):
    cfg, _ = finished
    for pair in expand_pairs(cfg):
        directory = pair.directory(cfg)

        def refuse(name):
            raise ValueError(f"results.json holds {name}")

        results = json.loads((directory / "results.json").read_text(), parse_constant=refuse)
        arrays = torch.load(directory / "samples.pt", weights_only=True)
        valid = ~(arrays["diverged_A"] | arrays["diverged_B"])
        assert results["n"] == pair.n and results["num_samples"] == len(valid) == cfg.eval.num_samples
        assert results["num_valid"] == int(valid.sum()) and torch.equal(arrays["valid"], valid)
        a, b = arrays["samples_A"][valid].numpy(), arrays["samples_B"][valid].numpy()
        if len(a):
            ab = np.diag(_correlation(a, b))
            assert results["ab_correlation_median"] == pytest.approx(float(torch.tensor(ab).median()), abs=1e-5)
        assert set(results["psnr"]["A"]) == {"train", "test"}
        assert results["psnr"]["A"]["train"]["sigma"] == cfg.eval.psnr_sigmas
        geometry = next(iter(results["jacobian"].values()))["A"]
        assert geometry["homogeneity_error"] < 1e-3  # f(y) = J y for the bias-free UNet
        assert arrays["samples_A"].shape == (cfg.eval.num_samples, 1, 16, 16)
        for name in ("samples.png", "psnr.png", "similarity_hist.png", "eigen_spectra.png"):
            width, height = _png_size(directory / name)
            assert width > 100 and height > 100, name
        row = (directory / "results.csv").read_text().splitlines()
        assert dict(zip(row[0].split(","), row[1].split(","), strict=True))["n"] == str(pair.n)


def test_nearest_training_image_is_the_most_correlated_in_each_split(finished):
    cfg, _ = finished
    from gdm.data.store import load_split

    for pair in expand_pairs(cfg):
        arrays = torch.load(pair.directory(cfg) / "samples.pt", weights_only=True)
        valid = arrays["valid"]
        for split in ("A", "B"):
            train = load_split(cfg.run_dir / "data" / pair.dataset, split, pair.n).numpy()
            scores = _correlation(arrays[f"samples_{split}"][valid].numpy(), train)
            assert np.array_equal(arrays[f"nearest_index_{split}_correlation"].numpy(), scores.argmax(1)), (pair.n, split)


def test_wandb_offline_runs_hold_train_and_eval_metrics(finished):
    cfg, _ = finished
    runs = offline_run_dirs(cfg)
    ids = {c.wandb_id(cfg) for c in expand_cells(cfg)} | {p.wandb_id(cfg) for p in expand_pairs(cfg)}
    assert ids == {r.name.rsplit("-", 1)[-1] for r in runs}  # one run per cell and per pair, no more
    pair = expand_pairs(cfg)[0]
    eval_run = next(r for r in runs if r.name.endswith(pair.wandb_id(cfg)))
    blob = b"".join(p.read_bytes() for p in eval_run.glob("*.wandb"))
    results = json.loads((pair.directory(cfg) / "results.json").read_text())
    assert pair.pair_id.encode() in blob and b"ab_correlation_median" in blob
    assert json.dumps(results["psnr_gap"]).encode() in blob  # the logged value is the stored one


def test_report_and_resolved_config(finished):
    cfg, _ = finished
    report = cfg.run_dir / "report"
    table = (report / "summary.md").read_text()
    assert all(f"| disks | {n} |" in table for n in cfg.n_train)
    for name in ("disks_samples_vs_n.png", "disks_correlation_vs_n.png", "disks_psnr_A.png", "disks_similarity_hist.png"):
        assert min(_png_size(report / name)) > 100, name
    rows = (report / "summary.csv").read_text().splitlines()
    header = rows[0].split(",")
    for line, pair in zip(rows[1:], expand_pairs(cfg), strict=True):  # the table holds what results.json holds
        row = dict(zip(header, line.split(","), strict=True))
        stored = json.loads((pair.directory(cfg) / "results.json").read_text())
        assert int(row["n"]) == pair.n and float(row["psnr_gap"]) == pytest.approx(stored["psnr_gap"])
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
