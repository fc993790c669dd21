"""Per-pair statistics on hand-made samples: diverged samples, the per-seed table, the memorizing reference."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import small_images, stand_in_pair

from gdm.analysis import controls, similarity
from gdm.analysis.optimal import optimal_geometry, optimal_psnr_curves
from gdm.cells import expand_pairs
from gdm.evaluate import pair_figures, summarize
from gdm.pair_records import Agreement, PairEvaluation, Realism
from gdm.sample import SampleResult


def _result(images, diverged):
    k = len(images)
    return SampleResult(images, torch.full((k,), 7), torch.tensor(diverged), torch.full((k,), 0.01))


def _pair_data(cfg):
    return stand_in_pair()


def _results(cfg, data, samples) -> tuple[dict, PairEvaluation]:
    """results.json's dict (PairResults.to_json) of `summarize`, and the per-sample records."""
    record, evaluation = summarize(cfg, expand_pairs(cfg)[0], data, samples, "cpu")
    return record.to_json(), evaluation


def _finite_or_none(value):
    if isinstance(value, dict):
        return all(_finite_or_none(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_or_none(v) for v in value)
    return value is None or isinstance(value, str) or math.isfinite(value)


def test_diverged_samples_are_counted_and_leave_every_statistic_finite(tiny_config):
    data = _pair_data(tiny_config)
    a = small_images(4, 4)
    a[1] = float("nan")  # a sample that blew up
    samples = {"A": _result(a, [False, True, False, False]), "B": _result(small_images(4, 5), [False] * 4)}
    results, evaluation = _results(tiny_config, data, samples)
    arrays = evaluation.arrays()
    assert results["diverged_A"] == 1 and results["diverged_B"] == 0
    assert arrays["valid"].tolist() == [True, False, True, True]
    assert len(arrays["ab_correlation"]) == 3 and _finite_or_none(results)
    assert results["ab_correlation_median"] is not None


def test_all_diverged_gives_none_not_nan(tiny_config):
    data = _pair_data(tiny_config)
    nan = torch.full((4, 1, 8, 8), float("nan"))
    samples = {"A": _result(nan, [True] * 4), "B": _result(small_images(4, 5), [False] * 4)}
    results, _ = _results(tiny_config, data, samples)
    assert results["ab_cosine_median"] is None and results["memorized_fraction"] is None
    assert _finite_or_none(results)


def _per_seed_columns(cfg, arrays: dict, measure: str) -> dict:
    """The per-seed W&B table of samples.pt-style arrays, read back through the typed record."""
    record = Agreement.from_arrays(arrays, measure, ["A", "B"])
    return PairEvaluation(arrays["valid"], {measure: record}, Realism({}, ())).per_seed_columns(cfg.eval.seed)


def test_samples_pt_arrays_round_trip_through_the_typed_records(tiny_config):
    """Every array evaluate writes to samples.pt is read back into the same record (one key definition)."""
    samples = {s: _result(small_images(5, 40 + i), [False, False, True, False, False]) for i, s in enumerate("AB")}
    _, evaluation = _results(tiny_config, _pair_data(tiny_config), samples)
    arrays = evaluation.arrays()
    assert arrays["valid"].tolist() == [True, True, False, True, True]
    for measure, record in evaluation.agreements.items():
        back = Agreement.from_arrays(arrays, measure, ["A", "B"])
        assert back.arrays().keys() == record.arrays().keys()
        assert all(torch.equal(back.arrays()[k], v) for k, v in record.arrays().items())
        assert len(back.nearest["A"]) == len(back.nearest["B"]) == 4  # the halves, split by model
        assert torch.equal(back.nearest["B"], record.nearest["B"]) and not torch.equal(
            back.nearest["A"], back.nearest["B"]
        )
    realism = {k for k in arrays if k.startswith("realism_")}
    assert realism == {Realism.key(kind, x) for kind in Realism.KINDS for x in ("test", "A", "B")}


def test_per_seed_columns_split_the_nearest_arrays_by_model(tiny_config):
    arrays = {"valid": torch.tensor([True, False, True]),
              "ab_cosine": torch.tensor([0.1, 0.2]),
              "nearest_cosine": torch.tensor([1.0, 2.0, 3.0, 4.0]),  # A's two samples, then B's
              "nearest_other_cosine": torch.tensor([5.0, 6.0, 7.0, 8.0]),
              "nearest_index_A_cosine": torch.tensor([3, 4]), "nearest_index_B_cosine": torch.tensor([0, 1])}
    columns = _per_seed_columns(tiny_config, arrays, "cosine")
    seed = tiny_config.eval.seed
    assert columns["seed"] == [seed, seed + 2]
    assert columns["nearest_A_cosine"] == [1.0, 2.0] and columns["nearest_B_cosine"] == [3.0, 4.0]
    assert columns["nearest_other_B_cosine"] == [7.0, 8.0] and columns["nearest_index_A_cosine"] == [3, 4]
    assert {len(c) for c in columns.values()} == {2}


def test_optimal_reference_memorizes_its_training_set():
    train, test = {"A": small_images(3, 1)}, small_images(3, 9)
    curves = optimal_psnr_curves(train, test, [0.02, 0.5], images=3, seed=0, batch_size=2, device="cpu")["A"]
    # at small noise the memorizer returns the training image itself: far above the input PSNR
    assert curves["train"]["output_psnr"][0] > curves["train"]["input_psnr"][0] + 40
    # and maps a test image to a training image: worse than leaving the small noise alone
    assert curves["test"]["output_psnr"][0] < curves["test"]["input_psnr"][0]
    assert curves["train"]["input_psnr"] != curves["test"]["input_psnr"]


def test_optimal_geometry_of_one_image_is_zero_and_compares_jacobians():
    one = small_images(1, 1).double()
    y = one[0] + 0.1 * torch.randn((1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    record = optimal_geometry(one, y, 0.1, torch.eye(64, dtype=torch.float64))
    assert record["trace"] == pytest.approx(0.0, abs=1e-9)  # one image: no posterior uncertainty
    assert record["relative_difference"] == pytest.approx(1.0)  # ‖I − 0‖ / ‖I‖: scaled by the model's J
    two = small_images(2, 1).double()
    y = two.mean(0)  # halfway: both images share the weight, Cov = ¼ (x₁ − x₂)(x₁ − x₂)ᵀ
    d = (two[0] - two[1]).reshape(-1)
    expected = torch.outer(d, d) / 4 / 0.5**2
    record = optimal_geometry(two, y, 0.5, expected)
    assert record["relative_difference"] == pytest.approx(0.0, abs=1e-9)
    assert record["trace"] == pytest.approx(float(d @ d) / 4 / 0.25, rel=1e-9)


def test_controls_and_verdict_enter_the_results(tiny_config):
    data = _pair_data(tiny_config)
    copies = {
        s: _result(data.train[s][[0, 1, 2, 3]].clone(), [False] * 4) for s in "AB"
    }  # every sample a training image
    results, evaluation = _results(tiny_config, data, copies)
    arrays = evaluation.arrays()
    assert results["verdict"] == "memorizing" and results["memorized_fraction"] == 1.0
    assert results["verdict_checks"]["memorized_majority"] == "pass"  # its whole interval is above 1/2
    assert results["verdict_decided_by"] == "memorized_majority"
    memorized = results["intervals"]["memorized"]
    assert memorized["low"] > 0.5 and memorized["estimate"] == results["memorized_fraction"] == 1.0
    assert results["memorized_fraction_l2"] == 1.0  # a copy is infinitely closer to its image than to any other
    assert results["reproducibility"] == 0.0  # A's copies are not B's copies
    assert set(results["psnr_gaussian_blind"]) == {"A", "B"}
    blind, oracle = (results[k]["A"]["test"] for k in ("psnr_gaussian_blind", "psnr_gaussian"))
    assert blind["input_psnr"] == oracle["input_psnr"] and blind["output_psnr"] != oracle["output_psnr"]  # same draws
    for split in "AB":  # per-image PSNR for a referee, their means the curves
        per_image = arrays[f"psnr_model_{split}_test"]
        assert per_image.shape == (len(tiny_config.eval.psnr_sigmas), min(len(data.test), tiny_config.eval.psnr_images))
        assert per_image.mean(1).tolist() == pytest.approx(results["psnr"][split]["test"]["output_psnr"])
    assert len(arrays["cross_seed_correlation"]) == 4 * 3 and len(arrays["novelty_correlation"]) == 2 * 6
    # A's copies and B's copies are different images: the cross-seed baseline is what unrelated images score
    assert results["cross_seed_correlation_median"] == pytest.approx(float(arrays["cross_seed_correlation"].median()))
    assert results["novelty_correlation_median"] < 0.95  # held-out images are not copies of training images
    assert set(results["psnr_gaussian"]) == {"A", "B"}
    assert results["psnr_gaussian"]["A"]["test"] == results["psnr_gaussian"]["B"]["test"]  # one pool, same draws
    assert results["psnr_gaussian"]["A"]["test"]["input_psnr"] == results["psnr"]["A"]["test"]["input_psnr"]
    assert results["contrast_distance_A"] == pytest.approx(
        abs(results["contrast_A"] / results["contrast_test"] - 1))
    assert results["spectrum_distance_db_A"] > 0 and results["histogram_distance_B"] > 0
    assert "gaussian_margin_db_min_A" in results and _finite_or_none(results)


def test_samples_that_are_the_held_out_images_have_zero_realism_distances(tiny_config):
    data = _pair_data(tiny_config)
    samples = {s: _result(data.test.clone(), [False] * 6) for s in "AB"}
    results, _ = _results(tiny_config, data, samples)
    assert results["realism"]["A"]["contrast_distance"] == pytest.approx(0.0, abs=1e-12)
    assert results["spectrum_distance_db_B"] == pytest.approx(0.0, abs=1e-9)
    assert results["histogram_distance_A"] == pytest.approx(0.0, abs=1e-12)
    assert results["cross_seed_correlation_median"] < results["ab_correlation_median"] == pytest.approx(1.0)


def test_without_the_gaussian_reference_the_verdict_skips_that_check(tiny_config):
    from dataclasses import replace

    cfg = replace(tiny_config, eval=replace(tiny_config.eval, gaussian_reference=False))
    samples = {s: _result(small_images(4, 10 + i), [False] * 4) for i, s in enumerate("AB")}
    results, _ = _results(cfg, _pair_data(cfg), samples)
    assert "psnr_gaussian" not in results and results["gaussian_margin_db_min_A"] is None
    assert "psnr_gaussian_blind" not in results and results["intervals"]["A"]["blind_gaussian_band_mean_db"] is None
    assert results["verdict_checks"]["at_or_above_gaussian"] == "pass"  # not measured: not checked
    assert results["verdict"] in controls.VERDICTS


def test_per_seed_columns_carry_the_cross_seed_control(tiny_config):
    a, b = small_images(3, 20), small_images(3, 21)
    arrays = {"valid": torch.tensor([True, True, True]), "ab_correlation": torch.zeros(3),
              "nearest_correlation": torch.zeros(6), "nearest_other_correlation": torch.zeros(6),
              "nearest_index_A_correlation": torch.zeros(3, dtype=torch.long),
              "nearest_index_B_correlation": torch.zeros(3, dtype=torch.long),
              "cross_seed_correlation": controls.cross_seed("correlation", a, b)}
    column = _per_seed_columns(tiny_config, arrays, "correlation")["cross_seed_correlation"]
    matrix = similarity.correlation_matrix(a, b)
    assert column[0] == pytest.approx(float(matrix[0, 1:].median()))  # seed 0 against B's seeds 1 and 2
    assert len(column) == 3


def test_pair_figures_draw_the_controls(tiny_config, monkeypatch):
    from gdm import figures

    drawn = []
    save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.append(fig) or save(fig, path))
    data = _pair_data(tiny_config)
    samples = {s: _result(small_images(4, 30 + i), [False] * 4) for i, s in enumerate("AB")}
    pair = expand_pairs(tiny_config)[0]
    results, evaluation = summarize(tiny_config, pair, data, samples, "cpu")
    pair.directory(tiny_config).mkdir(parents=True)
    paths = pair_figures(tiny_config, pair, results, evaluation, samples, data)
    assert {"samples", "similarity_hist", "psnr", "realism"} <= set(paths)
    assert all(paths[k].read_bytes()[:4] == b"\x89PNG" for k in paths)
    labels = {t.get_text() for fig in drawn for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"A–B, different seeds (control)", "held-out–nearest train (novelty)", "held-out", "samples A"} <= labels
    assert "Gaussian (Wiener) reference of the pool" in labels


def test_a_cell_deleted_during_its_pairs_evaluation_fails_the_pair_naming_it(tiny_config, monkeypatch):
    import shutil

    from gdm import evaluate, lifecycle
    from gdm.cells import Files
    from launch.grid import run_grid

    cfg = tiny_config
    run_grid(cfg, progress=False)
    pair = expand_pairs(cfg)[-1]
    lifecycle.reopen(pair.directory(cfg), "evaluate again for the test", aside=(Files.RESULTS,))
    victim = pair.cells[0]
    sample = evaluate._sample

    def sample_then_delete(*args, **kwargs):  # the operator removes the cell folder mid-evaluation
        shutil.rmtree(victim.directory(cfg), ignore_errors=True)
        return sample(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_sample", sample_then_delete)
    with pytest.raises(lifecycle.IntegrityError, match=f"cell {victim.cell_id} was deleted or reopened"):
        evaluate.eval_pair(cfg, pair)
    assert not lifecycle.is_done(pair.directory(cfg))
    monkeypatch.undo()
    run_grid(cfg, progress=False)  # retrains the cell, re-evaluates the pair
    assert lifecycle.is_done(victim.directory(cfg)) and lifecycle.is_done(pair.directory(cfg))
