"""Identity v1: a cell's name survives a data move and a gdm release adding a neutral setting; a change that
matters gives new folders; folders of the previous naming are recognised; commands without the data work."""

from __future__ import annotations

import dataclasses
import json

from gdm.cells import Files, expand_cells, expand_pairs
from gdm.cli import main
from gdm.config import TrainerConfig, load_config, to_dict
from gdm.io import stable_hash
from gdm.migrate import migrate_folders

FOLDER = ["datasets={}", "datasets.photos.family=folder", "datasets.photos.image_size=16",
          "datasets.photos.pool_size=8", "datasets.photos.test_size=4"]


def _ids(cfg) -> list[str]:
    return [c.cell_id for c in expand_cells(cfg)] + [p.pair_id for p in expand_pairs(cfg)]


def _today_cell_hash(cfg, dataset: str) -> str:
    """The cell hash of the release before identity v1, kept here verbatim: the whole dataset section."""
    neutral = ("log_every", "val_every", "num_workers", "checkpoint_every", "compile", "accelerator")
    later = ("threads", "loss_weighting", "loss_weight_floor", "loss_weight_power", "precise_bn_batches",
             "keep_models_at", "replicates")  # trainer keys added after that release
    trainer = {k: v for k, v in to_dict(cfg.trainer).items() if k not in neutral and k not in later}
    return stable_hash({"data": to_dict(cfg.datasets[dataset]), "model": to_dict(cfg.model), "trainer": trainer}, 8)


def test_moved_source_keeps_every_id(tiny_overrides, tmp_path):
    a = load_config(None, [*tiny_overrides, *FOLDER, f"datasets.photos.source={tmp_path / 'a'}"])
    b = load_config(None, [*tiny_overrides, *FOLDER, f"datasets.photos.source={tmp_path / 'b'}"])
    assert _ids(a) == _ids(b)


def test_new_neutral_setting_keeps_every_hash_and_lr_changes_them(tiny_config):
    later = dataclasses.make_dataclass("Later", [("warmup", int, dataclasses.field(default=0))], bases=(TrainerConfig,))
    newer = dataclasses.replace(tiny_config, trainer=later(**to_dict(tiny_config.trainer)))
    assert _ids(newer) == _ids(tiny_config)
    off_default = dataclasses.replace(tiny_config, trainer=later(**to_dict(tiny_config.trainer), warmup=5))
    assert set(_ids(off_default)).isdisjoint(_ids(tiny_config))
    lr = dataclasses.replace(tiny_config, trainer=dataclasses.replace(tiny_config.trainer, lr=5e-4))
    assert set(_ids(lr)).isdisjoint(_ids(tiny_config))


def test_folder_of_previous_release_is_recognised(tiny_config):
    cell = expand_cells(tiny_config)[0]
    today = _today_cell_hash(tiny_config, cell.dataset)
    old = tiny_config.run_dir / cell.dataset / f"n{cell.n:06d}-{cell.split}-{today}"
    old.mkdir(parents=True)
    (old / Files.SETTINGS).write_text("{}")
    (old / Files.DONE).write_text(json.dumps({"weights": "kept"}))
    moved = migrate_folders(tiny_config)
    assert (old, cell.directory(tiny_config)) in moved
    assert json.loads((cell.directory(tiny_config) / Files.DONE).read_text()) == {"weights": "kept"}


def test_commands_work_without_the_source(tiny_overrides, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    args = [str(config), *tiny_overrides, *FOLDER, f"datasets.photos.source={tmp_path / 'gone'}"]
    for command in ("cells", "status", "cancel"):
        assert main([command, *args]) == 0, command
    assert main(["run", *args]) == 2  # the one command that reads the source refuses, naming the key
    assert "datasets.photos.source" in capsys.readouterr().err


def test_finished_run_survives_a_data_move(tiny_overrides, tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    from launch.grid import run_grid

    source = tmp_path / "photos"
    source.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):  # distinct textures: none is a near-duplicate of another
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(source / f"{i:02d}.png")
    overrides = [*tiny_overrides, "n_train=[1]", *FOLDER]
    cfg = load_config(None, [*overrides, f"datasets.photos.source={source}"])
    run_grid(cfg, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in cfg.run_dir.glob("*/n*/DONE")}
    moved = tmp_path / "scratch" / "photos"
    shutil.move(source, moved)
    again = load_config(None, [*overrides, f"datasets.photos.source={moved}"])
    run_grid(again, progress=False)
    assert stamps and {p: p.stat().st_mtime_ns for p in again.run_dir.glob("*/n*/DONE")} == stamps


def test_run_and_train_give_bit_identical_weights(tiny_overrides, tmp_path):
    import hashlib

    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    common = [str(config), *tiny_overrides, "n_train=[4]", "trainer.max_steps=4"]
    local = [*common, f"root={tmp_path / 'local'}", "launch.executor=local", "launch.train.cpus_per_task=1"]
    assert main(["run", *local]) == 0
    assert main(["prepare", *common]) == 0
    assert main(["train", *common, "--cell-index", "0"]) == 0
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.glob("*/tiny/*/n*-A-*/model.pt")}
    assert len(list(tmp_path.glob("*/tiny/*/n*-A-*/model.pt"))) == 2 and len(digests) == 1


def test_issue20_training_settings_at_their_defaults_keep_every_id(tiny_config, tiny_overrides):
    """loss weighting, precise BN and kept models are hashed only off their defaults (identity v1's rule)."""
    from gdm.cells import cell_settings

    assert not {"loss_weighting", "loss_weight_floor", "loss_weight_power", "precise_bn_batches",
                "keep_models_at"} & set(cell_settings(tiny_config, "disks")["trainer"])
    for setting in ("trainer.loss_weighting=inverse_sigma", "trainer.precise_bn_batches=4",
                    "trainer.keep_models_at=[3]"):
        changed = load_config(None, [*tiny_overrides, setting])
        assert set(_ids(changed)).isdisjoint(_ids(tiny_config)), setting
