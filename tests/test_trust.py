"""Results you can trust under everyday operations: changed settings, two drivers, a killed driver, a
diverged model, corrupt files, bad configs, read-only and full storage. Real runs of the `gdm` command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_same_weights, prepared, saved_weights, tiny_config, train_owned, wait_for

from gdm import lifecycle
from gdm.cells import Files, expand_cells, expand_pairs, item_folders, write_resolved_config
from gdm.cli import main
from gdm.config import load_config, to_yaml
from gdm.report import make_report

REPO = Path(__file__).resolve().parents[1]
SMALL = ["n_train=[1]", "wandb.mode=disabled"]
QUICK = str(REPO / "configs" / "quickstart.yaml")


def strict_json(path: Path):
    def refuse(name: str):
        raise ValueError(f"{path} holds the non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def gdm(*args: str, cwd: Path | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "WANDB_SILENT": "true", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for key in [k for k in env if k.startswith("SLURM_")]:
        del env[key]
    return subprocess.Popen([sys.executable, "-m", "gdm.cli", *args], cwd=cwd or REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def finished(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def weights(cfg, cell) -> dict:
    return saved_weights(cell.directory(cfg) / Files.MODEL)


def metrics_steps(directory: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (directory / Files.METRICS).read_text().splitlines()
            if "train/loss" in line]


# --- identity -----------------------------------------------------------------------------------

def test_changed_settings_never_leave_an_older_result_standing(tiny_overrides, capsys):
    first = [*tiny_overrides, *SMALL, "trainer.max_steps=3", "eval.num_samples=4"]
    second = [*tiny_overrides, *SMALL, "trainer.max_steps=4", "eval.num_samples=6"]
    assert main(["run", "--no-progress", QUICK, *first]) == 0
    old_pair = expand_pairs(load_config(QUICK, first))[0]
    assert main(["run", "--no-progress", QUICK, *second]) == 0
    cfg = load_config(QUICK, second)
    pair = expand_pairs(cfg)[0]
    assert pair.pair_id != old_pair.pair_id and pair.directory(cfg).name.startswith("n000001-eval-")
    results = strict_json(pair.directory(cfg) / Files.RESULTS)
    assert results["num_samples"] == 6 and results["pair"] == pair.pair_id
    assert strict_json(pair.directory(cfg) / Files.SETTINGS)["eval"]["num_samples"] == 6
    for cell in pair.cells:  # each folder describes itself
        assert strict_json(cell.directory(cfg) / Files.SETTINGS)["trainer"]["max_steps"] == 4
    report = cfg.run_dir / "report"
    assert list(strict_json(report / "inputs.json")["pairs"]) == [pair.pair_id]
    assert len((report / "summary.csv").read_text().splitlines()) == 2  # header and the current pair only
    capsys.readouterr()
    assert main(["status", QUICK, *second]) == 0
    shown = capsys.readouterr().out
    assert pair.pair_id in shown and old_pair.pair_id not in shown
    assert all(c.cell_id in shown for c in pair.cells) and shown.splitlines()[-1] == "3 done"
    assert main(["status", "--all", QUICK, *second]) == 0
    listing = capsys.readouterr().out
    assert old_pair.pair_id in listing and len(item_folders(cfg)) == 6  # older folders kept, untouched
    assert [line for line in listing.splitlines() if old_pair.pair_id in line][0].count("older settings") == 1

    # Two drivers of the same name at once: the first's driver starts again (its config.yaml) while the
    # second reports, then the first reports. Each report writes both configs under its lease: never a mix.
    first_cfg = load_config(QUICK, first)
    write_resolved_config(first_cfg)
    assert make_report(cfg) == report
    assert (cfg.run_dir / "config.yaml").read_text() == (report / "config.yaml").read_text() == to_yaml(cfg)
    make_report(first_cfg)
    assert (cfg.run_dir / "config.yaml").read_text() == (report / "config.yaml").read_text() == to_yaml(first_cfg)
    assert list(strict_json(report / "inputs.json")["pairs"]) == [old_pair.pair_id]


def test_duplicate_and_empty_sizes_and_missing_sources_are_refused_before_any_folder(tmp_path, capsys):
    root = tmp_path / "runs"
    cases = {
        "n_train=[1,1]": "'n_train'",
        "eval.num_samples=0": "'eval.num_samples'",
        "eval.batch_size=0": "'eval.batch_size'",
        "eval.psnr_images=0": "'eval.psnr_images'",
    }
    for override, key in cases.items():
        for command in ("run", "cells", "status"):
            assert main([command, QUICK, f"root={root}", override]) == 2
            assert key in capsys.readouterr().err, (command, override)
    celeba = str(REPO / "configs/celeba80.yaml")
    assert main(["run", "--dry-run", celeba, f"root={root}"]) == 2
    assert "'datasets.celeba.source' is not set" in capsys.readouterr().err
    assert main(["run", celeba, f"root={root}", f"datasets.celeba.source={tmp_path}/nowhere"]) == 2
    err = capsys.readouterr().err
    assert "'datasets.celeba.source'" in err and "does not exist" in err
    assert not root.exists()


# --- ownership ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_drivers_at_once_train_and_evaluate_each_item_once(tiny_overrides):
    overrides = [*tiny_overrides, "launch.executor=local", "launch.max_parallel=2", "launch.poll_seconds=0.2",
                 "trainer.max_steps=30", "trainer.log_every=1", "wandb.mode=offline"]
    drivers = [gdm("run", "--no-progress", QUICK, *overrides) for _ in range(2)]
    outputs = [finished(d, 600) for d in drivers]
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    cfg = load_config(QUICK, overrides)
    counts = [
        dict(part.rsplit(" ", 1) for part in out.splitlines()[0].split(": ", 1)[1].split(", ")) for _, out, _ in outputs
    ]
    assert sum(int(c["trained"]) for c in counts) == 4 and sum(int(c["evaluated"]) for c in counts) == 2
    for cell in expand_cells(cfg):
        assert metrics_steps(cell.directory(cfg)) == list(range(1, 31))  # each step once
    runs = [p.name for p in (cfg.run_dir / "wandb_runs" / "wandb").glob("offline-run-*")]
    for item in [*expand_cells(cfg), *expand_pairs(cfg)]:
        assert sum(name.endswith(item.wandb_id(cfg)) for name in runs) == 1, item.item_id  # one W&B run each


@pytest.mark.slow
def test_killed_driver_is_adopted_and_a_killed_group_resumes_bit_identically(tiny_overrides, tmp_path):
    common = [
        *tiny_overrides,
        *SMALL,
        "launch.poll_seconds=0.2",
        "trainer.max_steps=400",
        "trainer.checkpoint_every=20",
        "trainer.log_every=20",
    ]
    code, _, err = finished(gdm("run", "--no-progress", QUICK, *common, f"root={tmp_path / 'reference'}"), 600)
    assert code == 0, err[-3000:]
    reference = load_config(QUICK, [*common, f"root={tmp_path / 'reference'}"])

    for mode in ("driver", "group"):
        args = [*common, f"root={tmp_path / mode}", "launch.executor=local"]
        cfg = load_config(QUICK, args)
        cell = expand_cells(cfg)[0]
        driver = gdm("run", "--no-progress", QUICK, *args, start_new_session=True)
        wait_for(
            lambda c=cell, g=cfg: lifecycle.owner_alive(c.directory(g)) and (c.directory(g) / Files.LAST_CKPT).exists(),
            240,
            "a cell mid-training",
            poll=0.05,  # the cell trains for seconds only: catch it while it does
        )
        if mode == "driver":
            os.kill(driver.pid, signal.SIGKILL)  # its local job goes on as an orphan, still owning the cell
        else:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and its jobs
        driver.wait()
        if mode == "group":
            wait_for(lambda c=cell, g=cfg: not lifecycle.owner_alive(c.directory(g)), 30, "the lease to fall",
                     poll=0.05)
            status = lifecycle.status(cell.directory(cfg))
            assert status.state == lifecycle.State.PENDING and "died" in status.error  # no dead job shown running
        code, out, err = finished(gdm("run", "--no-progress", QUICK, *args), 600)
        assert code == 0, err[-3000:]
        if mode == "driver":  # the orphan finished the cell it owned; this driver waited for it
            assert "done_elsewhere 0" not in out.splitlines()[0], out
        for ours in expand_cells(cfg):
            theirs = next(c for c in expand_cells(reference) if (c.n, c.split) == (ours.n, ours.split))
            assert_same_weights(weights(cfg, ours), weights(reference, theirs))
            steps = metrics_steps(ours.directory(cfg))
            assert steps == sorted(set(steps)) and steps[-1] == 400  # never two trainings interleaved
        ours, theirs = expand_pairs(cfg)[0], expand_pairs(reference)[0]
        assert strict_json(ours.directory(cfg) / Files.RESULTS) == strict_json(
            theirs.directory(reference) / Files.RESULTS
        )


# --- numerical health ---------------------------------------------------------------------------

def test_diverging_training_fails_clearly_and_keeps_a_finite_resumable_checkpoint(tiny_root, tiny_overrides, capsys,
                                                                                  caplog):
    from gdm.training.fit import fit_cell

    bad = prepared(tiny_config(tiny_root, *SMALL, "trainer.lr=1e6", "trainer.checkpoint_every=1",
                               "trainer.max_steps=8"))
    cell = expand_cells(bad)[0]
    with pytest.raises(RuntimeError, match="NaN or infinite|loss is") as caught:
        fit_cell(bad, cell)
    assert "trainer.lr" in str(caught.value)  # says what to change
    kept = torch.load(cell.directory(bad) / Files.LAST_CKPT, weights_only=True)
    assert kept["global_step"] >= 1
    from gdm.training.health import non_finite_entries

    assert non_finite_entries({"w": kept["state_dict"], "opt": kept["optimizer_states"]}) == []
    assert not lifecycle.is_done(cell.directory(bad))
    # a rerun with a sane lr resumes from it (copied into the sane cell's folder: its own settings). One
    # update at lr 1e6 leaves weights of order 1e6: finite, so kept and loadable, and training goes on from
    # its step; whether such weights can still recover is the optimizer's business, not the checkpoint's.
    sane = tiny_config(tiny_root, *SMALL, "trainer.lr=1e-3", "trainer.checkpoint_every=1", "trainer.max_steps=8")
    target = expand_cells(sane)[0].directory(sane)
    target.mkdir(parents=True)
    (target / Files.LAST_CKPT).write_bytes((cell.directory(bad) / Files.LAST_CKPT).read_bytes())
    with caplog.at_level("WARNING", logger="gdm.training.fit"):
        try:
            fit_cell(sane, expand_cells(sane)[0])
            resumed_to = 8
        except RuntimeError as err:
            assert "NaN or infinite" in str(err) or "training loss is" in str(err)
            resumed_to = int(str(err).split("step ")[1].split()[0].strip("(),;"))
    assert "cannot be resumed" not in caplog.text and resumed_to > kept["global_step"]
    # through the driver: the cell fails and its pair is never evaluated
    capsys.readouterr()
    overrides = [*tiny_overrides, *SMALL, "trainer.lr=1e6", "trainer.checkpoint_every=1", "trainer.max_steps=8"]
    assert main(["run", "--no-progress", QUICK, *overrides]) == 1
    err = capsys.readouterr().err
    cfg = load_config(QUICK, overrides)
    failed = expand_cells(cfg)[0]
    assert f"{failed.cell_id} failed" in err and ("NaN or infinite" in err or "training loss is" in err), err
    assert lifecycle.status(failed.directory(cfg)).state == lifecycle.State.FAILED
    assert not (expand_pairs(cfg)[0].directory(cfg) / Files.RESULTS).exists()  # never evaluated


def test_a_resumed_checkpoint_takes_the_configs_lr(tiny_root):
    from gdm.training.fit import fit_cell

    first = prepared(tiny_config(tiny_root, *SMALL, "trainer.lr=1e-3", "trainer.max_steps=3",
                                 "trainer.checkpoint_every=3"))
    fit_cell(first, expand_cells(first)[0])
    second = tiny_config(tiny_root, *SMALL, "trainer.lr=4e-4", "trainer.max_steps=6", "trainer.checkpoint_every=3",
                         "trainer.lr_halve_every=4")
    target = expand_cells(second)[0].directory(second)
    target.mkdir(parents=True)
    (target / Files.LAST_CKPT).write_bytes((expand_cells(first)[0].directory(first) / Files.LAST_CKPT).read_bytes())
    fit_cell(second, expand_cells(second)[0])
    state = torch.load(target / Files.LAST_CKPT, weights_only=True)
    assert state["global_step"] == 6 and state["optimizer_states"][0]["param_groups"][0]["lr"] == 2e-4
    assert state["lr_schedulers"] == []  # 4e-4 halved once at step 4: lr is the step's closed form, no state


def test_a_model_that_does_not_denoise_is_flagged(tiny_root):
    from gdm.training.fit import fit_cell

    # lr 0 keeps the random initial weights: a network that does not denoise, with finite values
    cfg = prepared(tiny_config(tiny_root, *SMALL, "trainer.lr=1e-12", "trainer.max_steps=2",
                               "eval.psnr_sigmas=[0.02,0.05]"))
    cell = expand_cells(cfg)[0]
    assert fit_cell(cfg, cell).flags == ("does not denoise",)  # what the work returns for DONE
    train_owned(cfg, cell)  # through the owner, which writes it
    status = lifecycle.status(cell.directory(cfg))
    assert status.state == lifecycle.State.DONE and status.flags == ("does not denoise",)


# --- integrity ----------------------------------------------------------------------------------

def test_flipped_model_bytes_are_named_and_the_cell_is_retrained(tiny_overrides, capsys):
    args = [QUICK, *tiny_overrides, *SMALL]
    assert main(["run", "--no-progress", *args]) == 0
    cfg = load_config(*args[:1], args[1:])
    cell = expand_cells(cfg)[0]
    model = cell.directory(cfg) / Files.MODEL
    original = weights(cfg, cell)
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(b ^ 0xFF for b in raw[len(raw) // 2: len(raw) // 2 + 64])
    model.write_bytes(bytes(raw))
    capsys.readouterr()
    main(["status", *args])  # reads only: names the file and the fix, and leaves the folder as it is
    shown = capsys.readouterr().out.splitlines()
    assert " failed " in next(line for line in shown if line.startswith(f"train  {cell.cell_id}"))
    assert f"{cell.cell_id}: {model} does not match the checksum recorded when it was written: `gdm run` sets it " \
           "aside and makes it again" in shown
    assert lifecycle.is_done(cell.directory(cfg))
    assert main(["run", "--no-progress", *args, "eval.num_samples=6"]) == 0  # the driver checks what is done
    err = capsys.readouterr().err
    assert f"{cell.cell_id} is made again: {model} does not match the checksum" in err
    cfg6 = load_config(*args[:1], [*args[1:], "eval.num_samples=6"])
    assert_same_weights(weights(cfg, cell), original)  # retrained (resumed at its last step): the same weights
    assert strict_json(expand_pairs(cfg6)[0].directory(cfg6) / Files.RESULTS)["num_samples"] == 6
    assert len(list(cell.directory(cfg).glob("model.pt.bad-*"))) == 1  # the corrupt file is kept aside


def test_truncated_checkpoint_is_set_aside_and_training_recovers(tiny_root, caplog):
    from gdm.training.fit import fit_cell

    cfg = prepared(tiny_config(tiny_root, *SMALL))
    cell = expand_cells(cfg)[0]
    directory = train_owned(cfg, cell)
    original = weights(cfg, cell)
    for name in (Files.DONE, Files.MODEL):
        (directory / name).unlink()  # as if it never finished
    ckpt = directory / Files.LAST_CKPT
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with caplog.at_level("WARNING", logger="gdm.training.fit"):
        fit_cell(cfg, cell)
    assert f"{ckpt} cannot be resumed from" in caplog.text
    assert len(list(directory.glob("last.ckpt.bad-*"))) == 1
    assert_same_weights(weights(cfg, cell), original)  # started over, deterministically


def test_truncated_model_file_error_names_it(tmp_path):
    from gdm.training.model_file import load_denoiser

    path = tmp_path / "model.pt"
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=f"{path} cannot be loaded"):
        load_denoiser(path)


# --- storage ------------------------------------------------------------------------------------

def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _can_mount() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a read-only bind and a tiny tmpfs")
def test_read_only_storage_reruns_a_finished_run_and_names_the_path_otherwise(tiny_overrides, tmp_path, mounts, capsys):
    source, view = tmp_path / "storage", tmp_path / "readonly"
    source.mkdir()
    view.mkdir()
    args = [QUICK, *[o for o in tiny_overrides if not o.startswith("root=")], *SMALL]
    assert main(["run", "--no-progress", *args, f"root={source}"]) == 0
    _mount("--bind", str(source), str(view))
    mounts.append(view)
    _mount("-o", "remount,bind,ro", str(view))
    capsys.readouterr()
    assert main(["run", "--no-progress", *args, f"root={view}"]) == 0  # finished: nothing to write
    assert main(["status", *args, f"root={view}"]) == 0
    capsys.readouterr()
    assert main(["run", "--no-progress", *args, f"root={view}", "trainer.max_steps=7"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(view) in err and "Read-only file system" in err, err


@pytest.mark.skipif(not _can_mount(), reason="needs root to mount a read-only bind and a tiny tmpfs")
def test_a_full_disk_gives_one_line_naming_the_path(tiny_overrides, tmp_path, mounts, capsys):
    full = tmp_path / "full"
    full.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full))
    mounts.append(full)
    args = [QUICK, *[o for o in tiny_overrides if not o.startswith("root=")], *SMALL]
    capsys.readouterr()
    assert main(["run", "--no-progress", *args, f"root={full}"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(full) in err and "No space left on device" in err, err
