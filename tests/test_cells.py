"""Cells: deterministic ids and directories, hashing of exactly the result-changing settings, state."""

from __future__ import annotations

from gdm.cells import CellState, expand_cells, expand_pairs, mark_done, read_status, settings_hash, write_status
from gdm.config import load_config


def test_grid_expansion(tiny_config):
    cells = expand_cells(tiny_config)
    assert [(c.dataset, c.n, c.split) for c in cells] == [("disks", 1, "A"), ("disks", 1, "B"),
                                                          ("disks", 4, "A"), ("disks", 4, "B")]
    pairs = expand_pairs(tiny_config)
    assert [(p.n, [c.split for c in p.cells]) for p in pairs] == [(1, ["A", "B"]), (4, ["A", "B"])]


def test_ids_are_deterministic_and_depend_on_training_settings_only(tiny_overrides):
    base = load_config(None, tiny_overrides)
    again = load_config(None, tiny_overrides)
    assert [c.cell_id for c in expand_cells(base)] == [c.cell_id for c in expand_cells(again)]
    assert expand_cells(base)[0].wandb_id(base) == expand_cells(again)[0].wandb_id(again)
    # Evaluation and logging settings leave the trained cells shared …
    eval_only = load_config(None, [*tiny_overrides, "eval.num_samples=8", "trainer.log_every=1"])
    assert settings_hash(eval_only, "disks") == settings_hash(base, "disks")
    # … while anything that changes the weights gives a new directory.
    for change in ("trainer.max_steps=7", "model.channels=4", "datasets.disks.seed=1", "trainer.lr=0.01"):
        other = load_config(None, [*tiny_overrides, change])
        assert settings_hash(other, "disks") != settings_hash(base, "disks"), change


def test_cell_directory_layout(tiny_config):
    cell = expand_cells(tiny_config)[2]
    assert cell.directory(tiny_config).relative_to(tiny_config.run_dir).as_posix() == \
        f"disks/n000004-A-{cell.settings_hash}"


def test_state_machine_on_disk(tiny_config):
    directory = expand_cells(tiny_config)[0].directory(tiny_config)
    assert read_status(directory)["state"] == CellState.PENDING.value
    write_status(directory, state=CellState.RUNNING.value, job_id="42", step=3)
    assert read_status(directory) == {"state": "running", "job_id": "42", "step": 3}
    write_status(directory, state=CellState.FAILED.value, error="boom")
    assert read_status(directory)["error"] == "boom"
    mark_done(directory, step=6)
    status = read_status(directory)
    assert status["state"] == "done" and status["error"] is None and status["job_id"] == "42"
    (directory / "status.json").write_text("{ truncated")
    assert read_status(directory)["state"] == "done"  # DONE wins over a damaged status record
