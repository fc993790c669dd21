"""The library functions the grid driver calls, injectable so tests can swap in tiny stand-ins.

`fit` and `evaluate` travel inside the jobs; None means "import the real one inside the job", which
keeps torch out of the driver's pickles. Stand-ins must be picklable for the local and slurm executors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _prepare(data, data_dir: Path, *, progress: bool = False) -> dict:
    from gdm.data.prepare import prepare_dataset

    return prepare_dataset(data, data_dir, progress=progress)


def _verify(data_dir: Path) -> dict:
    from gdm.data.store import verify_data

    return verify_data(data_dir)


def _report(cfg) -> Path:
    from gdm.report import make_report

    return make_report(cfg)


@dataclass(frozen=True)
class GridSteps:
    prepare: Callable[..., dict] = _prepare  # prepare_dataset(data, data_dir, progress=)
    verify: Callable[..., dict] | None = _verify  # verify_data(data_dir): shards and caches, once, before fan-out
    fit: Callable[..., Path] | None = None  # fit_cell(cfg, cell, progress=, plugins=)
    evaluate: Callable[..., dict] | None = None  # eval_pair(cfg, pair, progress=)
    report: Callable[..., Path] | None = _report  # make_report(cfg); None: no report
