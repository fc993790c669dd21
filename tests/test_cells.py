"""Cells: deterministic ids and directories, hashing of exactly the result-changing settings, state."""

from __future__ import annotations

import json

from gdm.cells import (
    cell_settings,
    expand_cells,
    expand_pairs,
    item_settings,
    pair_settings,
    settings_hash,
    wandb_run_id,
)
from gdm.config import load_config
from gdm.io import stable_hash


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


def test_pair_ids_carry_their_cells_and_eval_settings(tiny_overrides):
    base = load_config(None, tiny_overrides)
    pair = expand_pairs(base)[0]
    assert pair.pair_id == f"disks/n000001-eval-{pair.settings_hash}"
    assert pair.settings_hash == stable_hash(pair_settings(base, pair.cells), 8)
    assert pair_settings(base, pair.cells)["cells"] == {
        "A": pair.cells[0].settings_hash,
        "B": pair.cells[1].settings_hash,
    }
    # every setting that changes a pair's numbers gives a new pair folder …
    for change in (
        "eval.num_samples=6",
        "sampler.h0=0.1",
        "eval.psnr_sigmas=[0.2]",
        "trainer.max_steps=7",
        "eval.seed=3",
    ):
        other = expand_pairs(load_config(None, [*tiny_overrides, change]))[0]
        assert other.pair_id != pair.pair_id, change
    # … and figure-only settings do not
    assert expand_pairs(load_config(None, [*tiny_overrides, "eval.grid_samples=1"]))[0].pair_id == pair.pair_id


def test_stable_hash_is_canonical_json():
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    import hashlib

    assert (
        stable_hash({"a": 1}, 12)
        == hashlib.sha256(json.dumps({"a": 1}, separators=(",", ":")).encode()).hexdigest()[:12]
    )
    assert stable_hash("text") == hashlib.sha256(b"text").hexdigest()


def test_wandb_run_ids_have_one_home_and_keep_their_values(tiny_config):
    """Cells, pairs, the report and wandb_log take their run ids from cells.wandb_run_id; the ids are those of
    earlier releases (a moved id would start a new run instead of resuming a requeued job's)."""
    from gdm.wandb_log import run_kwargs

    cfg = tiny_config
    items = [*expand_cells(cfg), *expand_pairs(cfg)]
    ids = {item.item_id: item.wandb_id(cfg) for item in items} | {"report": wandb_run_id(cfg, None)}
    assert len(set(ids.values())) == len(ids) and all(len(i) == 16 for i in ids.values())
    cell, pair = expand_cells(cfg)[0], expand_pairs(cfg)[0]
    assert ids[cell.cell_id] == stable_hash(f"tiny/{cell.cell_id}/train", 16)
    assert ids[pair.pair_id] == stable_hash(f"tiny/{pair.pair_id}", 16)
    assert ids["report"] == stable_hash("tiny/report", 16)
    assert run_kwargs(cfg, cell, "train")["id"] == ids[cell.cell_id] and run_kwargs(cfg, None, "report")["id"] == \
        ids["report"]


def test_replicate_zero_keeps_todays_ids_and_later_replicates_get_their_own(tiny_overrides):
    today = load_config(None, tiny_overrides)
    replicated = load_config(None, [*tiny_overrides, "trainer.replicates=3"])
    cells, pairs = expand_cells(replicated), expand_pairs(replicated)
    assert len(cells) == 3 * len(expand_cells(today)) and len(pairs) == 3 * len(expand_pairs(today))
    # replicate 0 comes first, with today's ids, hashes and settings (trainer.replicates is never hashed)
    first = [c for c in cells if c.replicate == 0]
    assert [c.cell_id for c in first] == [c.cell_id for c in expand_cells(today)]
    assert [p.pair_id for p in pairs if p.replicate == 0] == [p.pair_id for p in expand_pairs(today)]
    assert cell_settings(replicated, "disks") == cell_settings(today, "disks")
    # replicates r ≥ 1: their own ids and folders, both cells of a pair of one replicate
    assert len({c.cell_id for c in cells}) == len(cells) and len({p.pair_id for p in pairs}) == len(pairs)
    later = next(c for c in cells if c.replicate == 2)
    assert later.cell_id == f"disks/n000001-A-r2-{later.settings_hash}"
    assert item_settings(replicated, later)["replicate"] == 2
    pair = next(p for p in pairs if p.replicate == 1)
    assert pair.pair_id == f"disks/n000001-eval-r1-{pair.settings_hash}"
    assert {c.replicate for c in pair.cells} == {1} and [c.split for c in pair.cells] == ["A", "B"]
