"""`gdm refine`: training-set sizes added where the transition is, until it is bracketed to a stated resolution.

The transition point n* is where the memorized fraction crosses 1/2 (docs/SCIENCE.md, Transition point). After
the grid of the config is done, each dataset's bracket is the largest evaluated n whose pair memorizes (memorized
fraction > 1/2) and the smallest larger n whose pair does not. While some bracket is wider than `resolution`
(n_high / n_low), refine adds its geometric midpoint to n_train and runs the grid again: done cells and pairs are
reused (a cell's folder does not depend on the other sizes of the grid), only the new sizes are trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from gdm import lifecycle
from gdm.analysis.controls import MEMORIZED_MAJORITY  # a pair memorizes above this share
from gdm.cells import Files, expand_pairs
from gdm.config import ExperimentConfig
from gdm.io import read_json
from gdm.results import PairResults


@dataclass(frozen=True)
class Bracket:
    """Where one dataset's transition lies among the evaluated sizes (None: no such size)."""

    dataset: str
    memorizing: int | None  # the largest n whose pair memorizes
    generalizing: int | None  # the smallest larger n whose pair does not

    def width(self) -> float | None:
        """n_high / n_low, or None when the grid does not bracket the transition."""
        if self.memorizing is None or self.generalizing is None:
            return None
        return self.generalizing / self.memorizing

    def describe(self) -> str:
        if self.width() is None:
            return (f"{self.dataset}: not bracketed (largest memorizing n: {self.memorizing}, smallest larger n that "
                    f"does not memorize: {self.generalizing}); add sizes to n_train beyond the grid's ends")
        return f"{self.dataset}: n* between {self.memorizing} and {self.generalizing} (×{self.width():.2f})"


def memorized_by_n(cfg: ExperimentConfig, dataset: str) -> dict[int, float]:
    """n → memorized fraction of the done pairs of `dataset`, averaged over its training replicates (pairs with no
    valid sample left out)."""
    found: dict[int, list[float]] = {}
    for pair in expand_pairs(cfg):
        if pair.dataset == dataset and pair.step is None and lifecycle.is_done(pair.directory(cfg)):
            results = PairResults.from_json(read_json(lifecycle.verify(pair.directory(cfg), Files.RESULTS)))
            if results.memorized_fraction is not None:
                found.setdefault(pair.n, []).append(results.memorized_fraction)
    return {n: sum(fractions) / len(fractions) for n, fractions in found.items()}


def bracket(cfg: ExperimentConfig, dataset: str) -> Bracket:
    """The bracket of `dataset`'s transition among its evaluated sizes."""
    fractions = memorized_by_n(cfg, dataset)
    memorizing = max((n for n, f in fractions.items() if f > MEMORIZED_MAJORITY), default=None)
    above = [n for n, f in fractions.items() if f <= MEMORIZED_MAJORITY and (memorizing is None or n > memorizing)]
    return Bracket(dataset, memorizing, min(above, default=None))


def midpoint(b: Bracket, resolution: float) -> int | None:
    """The size to add: the bracket's geometric midpoint, when it is wider than `resolution` and an integer lies
    strictly inside it; else None."""
    width = b.width()
    if width is None or width <= resolution:
        return None
    n = round(math.sqrt(b.memorizing * b.generalizing))
    return n if b.memorizing < n < b.generalizing else None


Runner = Callable[[ExperimentConfig], dict]  # runs a config's grid (launch.grid.run_grid), returns its summary


def refine(cfg: ExperimentConfig, run: Runner, *, resolution: float = 2.0,
           max_rounds: int = 4) -> tuple[ExperimentConfig, list[Bracket]]:
    """Run the grid, then add midpoints and run again until every bracket is at most `resolution` wide, cannot
    be split, or `max_rounds` grids have run; returns the final config (its n_train) and the brackets."""
    if resolution <= 1:
        raise ValueError(f"--resolution is {resolution}; it is n_high / n_low and must exceed 1 (e.g. 2)")
    for round_ in range(max_rounds):
        summary = run(cfg)
        if summary.get("failed"):
            raise RuntimeError(f"{len(summary['failed'])} item(s) failed ({', '.join(summary['failed'])}); "
                               "`gdm status` names the errors; fix them and run `gdm refine` again")
        brackets = [bracket(cfg, name) for name in sorted(cfg.datasets)]
        added = {n for b in brackets if (n := midpoint(b, resolution)) is not None} - set(cfg.n_train)
        if not added or round_ == max_rounds - 1:
            return cfg, brackets
        cfg = replace(cfg, n_train=sorted({*cfg.n_train, *added}))
    raise ValueError(f"--max-rounds is {max_rounds}; it must be at least 1")
