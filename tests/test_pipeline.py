"""The whole pipeline, real at every step, on a tiny config: data → cells → eval pairs → report, twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config

from gdm import lifecycle
from gdm.cells import data_dir, expand_cells, expand_pairs
from gdm.config import load_config
from gdm.io import stable_hash
from gdm.results import PairResults
from gdm.wandb_log import offline_run_dirs


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from launch.grid import run_grid

    cfg = pipeline_config(tmp_path_factory.mktemp("pipeline"))
    summary = run_grid(cfg, progress=False)
    return cfg, summary


def pipeline_config(root):
    return tiny_config(Path(root) / "runs", "eval.jacobian.enabled=true", "eval.jacobian.num_images=1",
                       "eval.jacobian.chunk=64")


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
            train = load_split(data_dir(cfg, pair.dataset), split, pair.n).numpy()
            scores = _correlation(arrays[f"samples_{split}"][valid].numpy(), train)
            assert np.array_equal(arrays[f"nearest_index_{split}_correlation"].numpy(), scores.argmax(1)), (
                pair.n,
                split,
            )


def test_wandb_offline_runs_are_dashboard_ready(finished, capsys):
    """Read back from the offline run files: identity, keys, job types, PSNR tables, artifacts, the report."""
    from wandb_records import run_summary

    cfg, _ = finished
    runs = {r.name.rsplit("-", 1)[-1]: run_summary(next(r.glob("*.wandb"))) for r in offline_run_dirs(cfg)}
    items = [*expand_cells(cfg), *expand_pairs(cfg)]
    report_id = stable_hash(f"{cfg.name}/report", 16)
    assert set(runs) == {i.wandb_id(cfg) for i in items} | {report_id}  # one run per cell, pair and report
    for cell in expand_cells(cfg):
        run = runs[cell.wandb_id(cfg)]
        assert run["job_type"] == "train" and run["group"] == cfg.name and run["name"] == cell.cell_id
        assert {k: run["config"][k] for k in ("dataset", "n", "split", "item_id", "settings_hash")} == {
            "dataset": cell.dataset, "n": cell.n, "split": cell.split, "item_id": cell.cell_id,
            "settings_hash": cell.settings_hash}
        assert {f"n={cell.n}", f"split={cell.split}", "train"} <= set(run["tags"])
        assert "train/loss" in run["history"] and len(run["artifacts"]) == 1
        artifact = run["artifacts"][0]
        assert artifact.type == "model" and cell.settings_hash in artifact.aliases
        digest = lifecycle.done_record(cell.directory(cfg))["sha256"]["model.pt"]
        assert json.loads(artifact.metadata)["sha256"] == digest
    for pair in expand_pairs(cfg):
        run = runs[pair.wandb_id(cfg)]
        assert run["job_type"] == "eval" and run["config"]["n"] == pair.n and run["config"]["item_id"] == pair.pair_id
        table = {k.rsplit("/", 1)[1]: json.loads(v) for k, v in run["history"].items() if k.startswith("eval/psnr/")}
        assert table["_type"] == "table-file" and table["ncols"] == 4
        assert table["nrows"] == len(cfg.eval.psnr_sigmas) * len(PairResults.from_json(
            json.loads((pair.directory(cfg) / "results.json").read_text())).psnr_curves())
        assert any(k.startswith("samples/A") for k in run["history"])
        assert json.loads(run["history"]["eval/psnr_plot_table/_type"]) == "table-file"  # the line plot's data
        results = json.loads((pair.directory(cfg) / "results.json").read_text())
        assert json.loads(run["history"]["eval/psnr_gap"]) == pytest.approx(results["psnr_gap"])
    report = runs[report_id]
    assert report["job_type"] == "report" and json.loads(report["history"]["report/summary/nrows"]) == len(cfg.n_train)
    from gdm.cli import main

    assert main(["sync", "--dry-run", str(cfg.run_dir / "config.yaml"), f"root={cfg.root}"]) == 0
    out = capsys.readouterr().out
    assert f"{len(runs)} offline runs listed" in out and all(r.name in out for r in offline_run_dirs(cfg))


def test_report_and_resolved_config(finished):
    cfg, _ = finished
    report = cfg.run_dir / "report"
    table = (report / "summary.md").read_text()
    assert all(f"| disks | {n} |" in table for n in cfg.n_train)
    for name in (
        "disks_samples_vs_n.png",
        "disks_correlation_vs_n.png",
        "disks_psnr_A.png",
        "disks_similarity_hist.png",
    ):
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


def test_a_cells_final_validation_psnr_is_the_psnr_its_pair_reports(finished):
    """One PSNR per σ: training's final validation (status.json) and the evaluation (results.json) draw the
    same noise (eval.seed) on the same images, so they agree for every cell, σ and image set."""
    cfg, _ = finished
    for pair in expand_pairs(cfg):
        results = json.loads((pair.directory(cfg) / "results.json").read_text())
        for cell in pair.cells:
            validation = lifecycle.status(cell.directory(cfg)).record["validation_psnr"]
            for kind in ("train", "test"):
                curve = results["psnr"][cell.split][kind]
                logged = [validation[f"val/psnr_{kind}_sigma{sigma:g}"] for sigma in curve["sigma"]]
                assert logged == pytest.approx(curve["output_psnr"], abs=1e-4), (cell.cell_id, kind)


REFERENCE = Path(__file__).with_name("reference") / "tiny_results.json"


def numbers(value, path: str = "") -> dict[str, float]:
    """Every number of a results.json by its key path (lists by index), strings and nulls left out."""
    if isinstance(value, dict):
        return {k: v for key in sorted(value) for k, v in numbers(value[key], f"{path}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in numbers(item, f"{path}/{i}").items()}
    return {path: value} if isinstance(value, (int, float)) and not isinstance(value, bool) else {}


def pair_numbers(cfg) -> dict[str, dict[str, float]]:
    return {p.pair_id: numbers(json.loads((p.directory(cfg) / "results.json").read_text())) for p in expand_pairs(cfg)}


def test_results_are_bit_identical_to_the_committed_reference(finished):
    """A refactor must not move a number: every number of every pair's results.json equals the reference made
    by the code it was committed with (same config, same torch, CPU). A change that means to move numbers
    regenerates it (`python tests/test_pipeline.py`) and says why in its commit."""
    reference = json.loads(REFERENCE.read_text())
    ours = pair_numbers(finished[0])
    assert sorted(ours) == sorted(reference)  # the same pair ids: the same settings hashes
    for pair_id, values in reference.items():
        moved = {k: (v, ours[pair_id].get(k)) for k, v in values.items() if ours[pair_id].get(k) != v}
        assert not moved and len(ours[pair_id]) == len(values), (pair_id, moved)


if __name__ == "__main__":  # regenerate the reference (run from the repository root)
    import tempfile

    from launch.grid import run_grid

    with tempfile.TemporaryDirectory() as root:
        config = pipeline_config(root)
        run_grid(config, progress=False)
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(pair_numbers(config), indent=1, sort_keys=True) + "\n")
        print(f"wrote {REFERENCE}")
