"""Exit codes that tell the truth: a training job stopped by SIGTERM before its cell is done exits non-zero
(SLURM's afterok must not start the pair's evaluation), keeps its checkpoint, and a rerun resumes to the same
weights as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_for

from gdm.cells import Files, expand_cells
from gdm.cli import main
from gdm.config import load_config

STEPS = ["trainer.max_steps=400", "trainer.checkpoint_every=20", "trainer.log_every=10", "n_train=[4]"]
HOLD_AT = 40  # the job holds here, after its checkpoint of step 40, until SIGTERM
HELD_GDM = Path(__file__).with_name("held_gdm.py")


def _held_gdm(markers: Path, *args: str) -> subprocess.Popen:
    """`gdm ARGS` in a subprocess, its training held once at HOLD_AT (tests/held_gdm.py)."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HELD_GDM), str(HOLD_AT), str(markers), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_step(metrics: Path) -> int:
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return max((json.loads(line).get("step", 0) for line in lines), default=0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigterm_during_training_exits_non_zero_and_a_rerun_resumes_bit_identically(tiny_overrides, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    stopped = [str(config), *tiny_overrides, *STEPS]
    cfg = load_config(config, stopped[1:])
    assert main(["prepare", *stopped]) == 0
    cell = expand_cells(cfg)[0]
    folder, held = cell.directory(cfg), tmp_path / "held" / f"{cell.cell_id}-rank0"
    job = _held_gdm(tmp_path / "held", "train", *stopped, "--cell-index", "0", "--no-progress")
    # the state we need, not a fixed time or step count: the job holds mid-training, its step-40 checkpoint written
    wait_for(lambda: held.exists() or job.poll() is not None, 240, f"the training to hold at step {HOLD_AT}")
    assert job.poll() is None, job.communicate()[1]
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    assert "stopped by a signal before it was done" in err
    assert not (folder / Files.DONE).exists() and (folder / Files.LAST_CKPT).is_file()
    assert _last_step(folder / Files.METRICS) == HOLD_AT < 400  # stopped after the held step, far from the end

    assert main(["train", *stopped, "--cell-index", "0", "--no-progress"]) == 0  # resumes from last.ckpt
    assert (folder / Files.DONE).is_file()
    whole = [*stopped, f"root={tmp_path / 'whole'}"]
    assert main(["prepare", *whole]) == 0 and main(["train", *whole, "--cell-index", "0", "--no-progress"]) == 0
    whole_cfg = load_config(config, whole[1:])
    uninterrupted = expand_cells(whole_cfg)[0].directory(whole_cfg)
    assert _sha(folder / Files.MODEL) == _sha(uninterrupted / Files.MODEL)
