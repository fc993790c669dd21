"""The `gdm` command with every training held once at a step, for tests that signal a job in a subprocess or a
SLURM batch script (where no callback can be handed over):

    python tests/held_gdm.py HOLD_AT MARKERS gdm-args...     # e.g. ... 40 /tmp/held train CONFIG --cell-index 0

Each cell's training writes `MARKERS/<cell id>-rank<r>` at step HOLD_AT (after that step's checkpoint, when
trainer.checkpoint_every divides it) and holds there until SIGTERM (lightning_helpers.HoldOnce, until_sigterm),
so a test that waits for the file signals a job that is mid-training, however loaded the machine. A rerun
finds the file and trains on. Holding changes no weight. Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning_helpers import FitWith  # this script's folder (tests/) is first on sys.path

import launch.task
from gdm.cli import main

if __name__ == "__main__":
    hold_at, markers, *args = sys.argv[1:]
    fit = FitWith(hold_at=int(hold_at), markers=Path(markers), until_sigterm=True)
    launch.task._default_fit = lambda: fit  # what `gdm train` fits with (launch.task.run_train_task)
    sys.exit(main(args))
