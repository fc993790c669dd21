"""The report: summary tables with the other-split control, optional columns, and figures across n."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from gdm import figures, lifecycle
from gdm.cells import Files, expand_pairs, report_dir
from gdm.report import make_report, markdown_table, summary_csv, summary_row
from gdm.results import PairResults

CURVE = {"sigma": [0.1, 0.5], "input_psnr": [20.0, 6.0], "output_psnr": [24.0, 15.0]}
OPTIMAL_CURVE = {"sigma": [0.1, 0.5], "input_psnr": [20.0, 6.0], "output_psnr": [30.0, 12.0]}


def full_results(n: int) -> dict:
    """A pair's results.json with every optional key an evaluation can write."""
    jacobian = {f"image0_sigma{s:g}": {split: {"trace": 10.0 + n + (split == "B"), "asymmetry": 0.01,
                                              "eigenvalues": [1.0, 0.5, 1e-3, -1e-4], "homogeneity_error": 1e-6,
                                              "optimal": {"trace": 2.0, "eigenvalues": [1.0, 0.0, 0.0, 0.0],
                                                          "relative_difference": 0.5}}
                                       for split in "AB"} for s in (0.1, 0.5)}
    return {"dataset": "disks", "n": n, "ab_cosine_median": 0.991, "nearest_cosine_median": 0.995,
            "nearest_other_cosine_median": 0.993, "ab_correlation_median": 0.61, "nearest_correlation_median": 0.9,
            "nearest_other_correlation_median": 0.42, "memorized_fraction": 0.75, "memorized_fraction_other": 0.0,
            "psnr_gap": 1.5, "diverged_A": 0, "diverged_B": 2,
            "psnr": {s: {"train": CURVE, "test": CURVE} for s in "AB"},
            "psnr_optimal": {s: {"train": OPTIMAL_CURVE, "test": OPTIMAL_CURVE} for s in "AB"},
            "jacobian": jacobian, "calpha_slope": {"A": 0.6, "B": None}, "calpha_optimal_slope": 2 / 3}


def minimal_results(n: int) -> dict:
    """What an old run, or one with every sample diverged, may hold: only dataset, n and psnr."""
    return {"dataset": "disks", "n": n, "ab_correlation_median": None,
            "psnr": {s: {"train": CURVE, "test": CURVE} for s in "AB"}}


def records(*results: dict) -> list[PairResults]:
    """The typed records the report reads, of hand-written results.json dicts."""
    return [PairResults.from_json(r) for r in results]


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Every matplotlib figure the figure helpers save, kept for inspection after the PNG is written."""
    kept, save = [], figures.save

    def keep(fig, path):
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(figures, "save", keep)
    return kept


def test_markdown_shows_the_other_split_control_and_dashes_for_missing():
    table = markdown_table(records(full_results(4), minimal_results(16))).splitlines()
    header = [h.strip() for h in table[0].strip("|").split("|")]
    full = dict(zip(header, (c.strip() for c in table[2].strip("|").split("|")), strict=True))
    empty = dict(zip(header, (c.strip() for c in table[3].strip("|").split("|")), strict=True))
    assert full["nearest correlation, other split"] == "0.420" and full["memorized, other split"] == "0.00"
    assert full["C^α slope / optimal α/(α+1)"] == "0.600/0.667"  # mean over the splits that have a slope
    assert full["Jacobian trace (eff. dim.)"] == "14.5" and full["diverged A/B"] == "0/2"
    assert empty["n"] == "16" and empty["nearest correlation, other split"] == "–" and empty["A–B correlation"] == "–"
    assert empty["C^α slope / optimal α/(α+1)"] == "–/–" and empty["diverged A/B"] == "–/–"


def test_markdown_drops_optional_columns_no_row_has():
    header = markdown_table(records(minimal_results(1))).splitlines()[0]
    assert "other split" in header and "memorized" in header
    assert "C^α" not in header and "Jacobian" not in header


def test_csv_has_control_and_derived_columns():
    rows = list(csv.DictReader(io.StringIO(summary_csv(records(full_results(4), minimal_results(16))))))
    assert float(rows[0]["nearest_other_correlation_median"]) == 0.42
    assert float(rows[0]["nearest_other_cosine_median"]) == 0.993
    assert float(rows[0]["jacobian_trace_mean"]) == pytest.approx(14.5)
    assert float(rows[0]["jacobian_trace_optimal_mean"]) == 2.0
    assert float(rows[0]["calpha_slope_mean"]) == pytest.approx(0.6)
    assert rows[1]["nearest_other_correlation_median"] == "" and rows[1]["jacobian_trace_mean"] == ""


def test_summary_row_ignores_non_finite_slopes():
    results = {**minimal_results(1), "calpha_slope": {"A": float("nan"), "B": 0.5}}
    assert summary_row(PairResults.from_json(results))["calpha_slope_mean"] == 0.5


def test_histogram_range_follows_the_data():
    low, high = figures.histogram_range([0.990, 0.995, 0.992])
    assert 0.985 < low < 0.990 and 0.995 < high < 1.0
    single_low, single_high = figures.histogram_range([0.99])
    assert single_low < 0.99 < single_high
    assert figures.histogram_range([]) == (0.0, 1.0)
    assert figures.histogram_range([None, float("nan"), 2.0]) == pytest.approx((2.0 - 2e-3, 2.0 + 2e-3))


def test_histograms_resolve_nearby_cosines_into_separate_bins(tmp_path, drawn):
    values = [0.990, 0.991, 0.993, 0.995]
    path = figures.histograms({"n = 1": {"A–B": values}, "n = 4": {"A–B": [0.994]}}, "cosine", tmp_path / "h.png")
    assert path.stat().st_size > 0
    bars = drawn[0].axes[0].patches
    assert len(bars) == figures.HISTOGRAM_BINS
    assert sum(bar.get_height() > 0 for bar in bars) == len(values)  # a fixed (-1, 1) range gave one bin
    assert bars[0].get_x() < 0.990 and bars[-1].get_x() + bars[-1].get_width() > 0.995


def test_histograms_survive_single_values_and_empty_series(tmp_path):
    assert figures.histograms({"n = 1": {"A–B": [0.5], "nearest": []}}, "cosine", tmp_path / "a.png").stat().st_size > 0
    assert figures.histograms({"n = 1": {"A–B": []}}, "cosine", tmp_path / "b.png").stat().st_size > 0


def test_psnr_references_are_dashed_in_their_curves_colour(tmp_path, drawn):
    curves = {"n=1 train": CURVE, "n=1 test": CURVE}
    figures.psnr_curves(curves, tmp_path / "p.png", references={"n=1 test": OPTIMAL_CURVE}, reference_label="optimal")
    lines = drawn[0].axes[0].get_lines()
    solid = {line.get_label(): line for line in lines if line.get_linestyle() == "-"}
    dashed = [line for line in lines if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == OPTIMAL_CURVE["output_psnr"]
    assert dashed[0].get_color() == solid["n=1 test"].get_color()
    assert "optimal" in [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    figures.psnr_curves(curves, tmp_path / "q.png")  # existing callers: no references, no dashed lines
    assert not [line for line in drawn[1].axes[0].get_lines() if line.get_linestyle() == "--"]


def test_psnr_reference_above_the_models_scale_sits_on_the_top_edge_marked(tmp_path, drawn):
    curve = {"input_psnr": [10.0, 20.0], "output_psnr": [18.0, 25.0]}
    perfect = {"input_psnr": [10.0, 20.0], "output_psnr": [30.0, 100.0]}  # the memorizer on its own images
    figures.psnr_curves({"A train": curve}, tmp_path / "p.png", references={"A train": perfect})
    ax = drawn[0].axes[0]
    top = ax.get_ylim()[1]
    assert top == pytest.approx(25.0 + 15.0)  # the model's scale, not 100 dB
    dashed = next(line for line in ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata()))
    assert list(dashed.get_ydata()) == [30.0, top]
    (marks,) = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert list(marks.get_xdata()) == [20.0] and list(marks.get_ydata()) == [top]


def test_spectra_on_log_y_keep_positive_eigenvalues_at_their_ranks(tmp_path, drawn):
    figures.spectra({"n = 1": [1.0, 0.0, 0.1, -0.2]}, tmp_path / "s.png", logx=False, logy=True)
    (line,) = drawn[0].axes[0].get_lines()
    assert list(line.get_xdata()) == [1, 3] and drawn[0].axes[0].get_yscale() == "log"


def write_fake_run(cfg, results_for) -> None:
    """Done pair directories (results.json, samples.pt, DONE) as evaluation leaves them, without training."""
    for pair in expand_pairs(cfg):
        directory = pair.directory(cfg)
        directory.mkdir(parents=True)
        (directory / "results.json").write_text(json.dumps(results_for(pair.n)))
        similarities = {  # 4 seeds: one A–B value each; nearest: A's 4 samples, then B's
            f"{kind}_correlation": torch.linspace(0.3, 0.9, 4 * size) for kind, size in
            (("ab", 1), ("nearest", 2), ("nearest_other", 2))
        }
        torch.save({"valid": torch.zeros(4, dtype=torch.bool), **similarities}, directory / "samples.pt")
        lifecycle.finish(directory, outputs=(Files.RESULTS, Files.SAMPLES))  # DONE with their checksums


def test_report_of_a_fake_run_has_table_and_figures(tiny_config):
    write_fake_run(tiny_config, full_results)
    report = make_report(tiny_config)
    table = (report / "summary.md").read_text()
    assert all(f"| disks | {n} |" in table for n in tiny_config.n_train) and "0.420" in table
    for name in ("correlation_vs_n", "similarity_hist", "psnr_A", "psnr_B", "spectra_vs_n", "jacobian_trace_vs_n",
                 "calpha_slope_vs_n"):
        path = report / f"disks_{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_without_optional_results_skips_their_figures(tiny_config):
    write_fake_run(tiny_config, minimal_results)
    report = make_report(tiny_config)
    assert (report / "disks_psnr_A.png").stat().st_size > 0 and "| – |" in (report / "summary.md").read_text()
    assert not any(
        (report / f"disks_{name}.png").exists() for name in ("spectra_vs_n", "jacobian_trace_vs_n", "calpha_slope_vs_n")
    )


GAUSSIAN_CURVE = {"sigma": [0.1, 0.5], "input_psnr": [20.0, 6.0], "output_psnr": [23.0, 14.0]}


def controls_results(n: int) -> dict:
    """full_results plus what the controls add: cross-seed, novelty, Gaussian reference, realism, verdict."""
    return {**full_results(n), "cross_seed_correlation_median": 0.02, "novelty_correlation_median": 0.78,
            "cross_seed_cosine_median": 0.97, "novelty_cosine_median": 0.99,
            "psnr_gaussian": {s: {"train": GAUSSIAN_CURVE, "test": GAUSSIAN_CURVE} for s in "AB"},
            "gaussian_margin_db_min_A": 1.0, "gaussian_margin_db_min_B": -0.25, "gaussian_margin_db_mean_A": 1.0,
            "gaussian_margin_db_mean_B": 0.5, "contrast_A": 0.05, "contrast_B": 0.06, "contrast_test": 0.057,
            "contrast_distance_A": 0.12, "contrast_distance_B": 0.05, "spectrum_distance_db_A": 2.5,
            "spectrum_distance_db_B": 1.5, "histogram_distance_A": 0.01, "histogram_distance_B": 0.02,
            "verdict": "generalizing" if n > 1 else "memorizing"}


def write_fake_run_with_controls(cfg) -> None:
    write_fake_run(cfg, controls_results)
    for pair in expand_pairs(cfg):
        path = pair.directory(cfg) / "samples.pt"
        arrays = torch.load(path, weights_only=True)
        arrays |= {
            "cross_seed_correlation": torch.linspace(-0.1, 0.1, 12),
            "novelty_correlation": torch.linspace(0.5, 0.9, 6),
        }
        for name in ("A", "B", "test"):
            arrays |= {
                f"realism_contrast_{name}": torch.rand(4),
                f"realism_spectrum_{name}": torch.tensor([1.0, 0.3, 0.1]),
                f"realism_histogram_{name}": torch.rand(48),
            }
        torch.save(arrays, path)
        lifecycle.finish(pair.directory(cfg), outputs=(Files.RESULTS, Files.SAMPLES))


def test_report_refuses_a_hand_edited_results_file_naming_it(tiny_config):
    """A published number is the one evaluation wrote: the report checks each pair's files against the
    checksums in its DONE and refuses (and sets aside) a results.json edited afterwards."""
    write_fake_run(tiny_config, full_results)
    pair = expand_pairs(tiny_config)[-1]
    results = pair.directory(tiny_config) / Files.RESULTS
    edited = json.loads(results.read_text()) | {"verdict": "generalizing"}
    results.write_text(json.dumps(edited))
    with pytest.raises(lifecycle.IntegrityError, match=f"{results} does not match the checksum"):
        make_report(tiny_config)
    assert not (report_dir(tiny_config) / "summary.csv").exists()  # nothing published from it
    assert not lifecycle.is_done(pair.directory(tiny_config))  # the next `gdm run` evaluates the pair again


def test_markdown_and_csv_show_the_controls_and_the_verdict():
    table = markdown_table(records(controls_results(1), controls_results(4), minimal_results(16))).splitlines()
    header = [h.strip() for h in table[0].strip("|").split("|")]
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in table[2:5]]
    assert [c["verdict"] for c in cells] == ["memorizing", "generalizing", "–"]
    assert (
        cells[1]["A–B correlation, other seeds"] == "0.020"
        and cells[1]["held-out–nearest correlation (novelty)"] == "0.780"
    )
    assert cells[1]["test − Gaussian ref. (dB), min A/B"] == "1.00/-0.25"
    assert cells[1]["contrast A/B/held-out"] == "0.050/0.060/0.057" and cells[2]["spectrum dist. A/B (dB)"] == "–/–"
    rows = list(csv.DictReader(io.StringIO(summary_csv(records(controls_results(4), minimal_results(16))))))
    assert rows[0]["verdict"] == "generalizing" and float(rows[0]["histogram_distance_B"]) == 0.02
    assert rows[1]["verdict"] == "" and rows[1]["cross_seed_correlation_median"] == ""
    assert "verdict" not in markdown_table(records(minimal_results(1))).splitlines()[0]  # old runs: no empty column


def test_report_draws_the_controls_across_n(tiny_config, drawn):
    write_fake_run_with_controls(tiny_config)
    report = make_report(tiny_config)
    for name in ("controls_vs_n", "realism_vs_n", "similarity_hist", "psnr_A", "correlation_vs_n"):
        assert (report / f"disks_{name}.png").read_bytes()[:4] == b"\x89PNG", name
    labels = {t.get_text() for fig in drawn for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"A–B, other seeds", "held-out–nearest train", "Gaussian (Wiener) reference", "held-out",
            "A–B, different seeds (median)", "Gaussian reference"} <= labels
    assert "| generalizing |" in (report / "summary.md").read_text()


def test_report_of_runs_without_controls_skips_their_figures(tiny_config):
    write_fake_run(tiny_config, full_results)
    report = make_report(tiny_config)
    assert not (report / "disks_controls_vs_n.png").exists() and not (report / "disks_realism_vs_n.png").exists()


def _seed_arrays(measure: str, nearest: list[float], agreement: list[float]) -> dict:
    """samples.pt's headline arrays for K valid seeds: nearest (A's K then B's K) and A–B agreement."""
    return {f"nearest_{measure}": torch.tensor(nearest, dtype=torch.float64),
            f"ab_{measure}": torch.tensor(agreement, dtype=torch.float64)}


def test_transition_points_lie_between_the_last_memorizing_and_first_generalizing_n(tiny_config, tmp_path):
    """Copies at n = 1 and 10 (nearest 0.99, agreement 0.5), new samples from n = 100 on (nearest 0.6,
    agreement 0.8): both transition points fall in (10, 100) with intervals inside the grid; one size alone
    has none."""
    from gdm.report import _transition, transition_section

    m, k = tiny_config.eval.similarity, 16
    copying = _seed_arrays(m, [0.99] * 2 * k, [0.5] * k)
    new = _seed_arrays(m, [0.6] * 2 * k, [0.8] * k)
    arrays = {1: [copying], 10: [copying], 100: [new], 1000: [new]}  # n → each training replicate's samples.pt
    found = _transition(tiny_config, "disks", arrays, tmp_path)
    for key in ("memorization_n_star", "agreement_n_star"):
        assert 10 < found[key]["estimate"] < 100 and 1 <= found[key]["low"] <= found[key]["high"] <= 1000, found
    assert json.loads((tmp_path / "disks_transition.json").read_text()) == found
    assert (tmp_path / "disks_transition.png").stat().st_size > 0
    section = transition_section({"disks": found})
    assert "n* (memorized fraction = 1/2)" in section and "[" in section
    assert _transition(tiny_config, "disks", {100: [new]}, tmp_path) is None
    never = {n: [copying] for n in (1, 10, 100)}
    assert transition_section({"disks": _transition(tiny_config, "disks", never, tmp_path)}).count(
        "not bracketed by the grid") == 2  # always memorizing: no crossing inside the grid


def test_replicates_train_their_own_models_and_the_report_pools_them(tmp_path):
    """trainer.replicates=2 on the tiny grid at one n: two pairs, each with its own results.json, different
    weights for the two replicates of a cell, and one pooled report row (replicates = 2) with its verdict."""
    from helpers import saved_weights, tiny_config

    from launch.grid import run_grid

    cfg = tiny_config(tmp_path / "runs", "n_train=[4]", "trainer.replicates=2")
    assert not run_grid(cfg, progress=False)["failed"]
    pairs = expand_pairs(cfg)
    assert [p.replicate for p in pairs] == [0, 1] and all((p.directory(cfg) / "results.json").exists() for p in pairs)
    first, second = (saved_weights(p.cells[0].directory(cfg) / "model.pt") for p in pairs)
    assert any(not torch.equal(first[k], second[k]) for k in first)  # replicate 1 trains from its own seed
    rows = list(csv.DictReader(io.StringIO((cfg.run_dir / "report" / "summary.csv").read_text())))
    assert len(rows) == 1 and rows[0]["replicates"] == "2" and rows[0]["n"] == "4" and rows[0]["verdict"]
    table = (cfg.run_dir / "report" / "summary.md").read_text()
    assert "| dataset | n | replicates |" in table and "| disks | 4 | 2 |" in table
