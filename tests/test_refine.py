"""`gdm refine`: sizes are added at the geometric midpoint of the transition's bracket until it is narrow."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gdm import lifecycle
from gdm.cells import Files, expand_pairs
from gdm.io import atomic_write_json
from gdm.results import PairResults
from launch.refine import Bracket, bracket, midpoint, refine

N_STAR = 37  # the stand-in models memorize below this size and generalize from it on


class StandInGrid:
    """Runs a config's grid as far as refine reads it: every pair not done gets a results.json whose memorized
    fraction is 1 below N_STAR and 0 from it on, and DONE; it records the sizes each run was asked for."""

    def __init__(self):
        self.grids: list[list[int]] = []
        self.evaluated: list[int] = []

    def __call__(self, cfg) -> dict:
        self.grids.append(list(cfg.n_train))
        for pair in expand_pairs(cfg):
            directory = pair.directory(cfg)
            if lifecycle.is_done(directory):
                continue
            directory.mkdir(parents=True, exist_ok=True)
            results = PairResults(dataset=pair.dataset, n=pair.n, psnr={},
                                  memorized_fraction=1.0 if pair.n < N_STAR else 0.0)
            atomic_write_json(directory / Files.RESULTS, results.to_json())
            lifecycle.finish(directory, outputs=(Files.RESULTS,))
            self.evaluated.append(pair.n)
        return {"failed": []}


def test_refine_bisects_in_log_n_until_the_bracket_is_within_the_resolution(tiny_config):
    cfg, grid = replace(tiny_config, n_train=[1, 100]), StandInGrid()
    final, brackets = refine(cfg, grid, resolution=2.0)
    # (1, 100) → 10 → (10, 100) → 32 → (32, 100) → 57 → (32, 57): 1.78 ≤ 2
    assert grid.grids == [[1, 100], [1, 10, 100], [1, 10, 32, 100], [1, 10, 32, 57, 100]]
    assert final.n_train == [1, 10, 32, 57, 100] and grid.evaluated == [1, 100, 10, 32, 57]  # done pairs reused
    assert brackets == [Bracket("disks", 32, 57)] and brackets[0].width() <= 2.0
    assert "n* between 32 and 57" in brackets[0].describe()


def test_refine_stops_after_max_rounds_and_refuses_a_resolution_of_one(tiny_config):
    cfg, grid = replace(tiny_config, n_train=[1, 100]), StandInGrid()
    final, brackets = refine(cfg, grid, resolution=1.01, max_rounds=2)
    assert len(grid.grids) == 2 and final.n_train == [1, 10, 100] and brackets == [Bracket("disks", 10, 100)]
    with pytest.raises(ValueError, match="--resolution is 1"):
        refine(cfg, grid, resolution=1.0)


def test_an_unbracketed_transition_adds_nothing_and_says_why(tiny_config):
    cfg = replace(tiny_config, n_train=[40, 100])  # every size generalizes: the transition lies below the grid
    grid = StandInGrid()
    final, brackets = refine(cfg, grid)
    assert final.n_train == [40, 100] and len(grid.grids) == 1
    assert brackets == [Bracket("disks", None, 40)] and "not bracketed" in brackets[0].describe()
    assert bracket(cfg, "disks") == brackets[0] and midpoint(brackets[0], 2.0) is None
    assert midpoint(Bracket("disks", 4, 5), 1.1) is None  # no integer strictly inside
