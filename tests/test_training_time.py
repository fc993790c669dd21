"""The training-time axis: pairs evaluated at each kept step, and the (n, steps) plane in the report."""

from __future__ import annotations

import json

import torch
from helpers import tiny_config

from gdm import lifecycle
from gdm.cells import Files, expand_pairs


def test_kept_models_are_evaluated_as_pairs_of_their_own_and_drawn_over_n_and_steps(tmp_path):
    from launch.grid import run_grid

    cfg = tiny_config(tmp_path / "runs", "trainer.keep_models_at=[2,6]", "wandb.mode=disabled")
    pairs = expand_pairs(cfg)
    final, kept = [p for p in pairs if p.step is None], [p for p in pairs if p.step is not None]
    assert [p.n for p in final] == [1, 4] and [(p.n, p.step) for p in kept] == [(1, 2), (4, 2)]  # 6 = max_steps
    assert pairs[: len(final)] == final  # the final pairs keep their array indices
    assert len({p.pair_id for p in pairs}) == len(pairs) and "-eval-step0000002-" in kept[0].pair_id
    assert not run_grid(cfg, progress=False)["failed"]
    for pair in kept:
        results = json.loads((pair.directory(cfg) / Files.RESULTS).read_text())
        assert results["kept_step"] == 2 and results["n"] == pair.n
        assert lifecycle.done_intact(pair.directory(cfg))
    early, late = (torch.load(p.directory(cfg) / Files.SAMPLES, weights_only=True)["samples_A"]
                   for p in (kept[1], final[1]))
    assert not torch.equal(early, late)  # the models of step 2 are not the final ones
    assert "kept_step" not in json.loads((final[0].directory(cfg) / Files.RESULTS).read_text())
    report = cfg.run_dir / "report"
    assert (report / "disks_training_time.png").stat().st_size > 0
    rows = (report / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + len(final)  # the table is the final models'
