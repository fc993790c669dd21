"""The `gdm` command's surface: --version, help for every option, options only where they do something."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import pytest

from gdm.cli import build_parser, main
from launch.executors import job_name

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "configs" / "quickstart.yaml")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_is_the_installed_package(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"gdm {version('gdm')}"


def test_help_speaks_to_users_and_every_option_is_explained():
    parser = build_parser()
    assert "memorize" in parser.description and "parse typed options" not in parser.description
    for name, command in _subparsers(parser).items():
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"gdm {name} {action.dest} has no help"


@pytest.mark.parametrize("command", ["status", "report", "cells", "cancel", "sync"])
def test_no_progress_is_refused_where_nothing_shows_progress(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, QUICK, "--no-progress"])
    assert stop.value.code == 2 and "unrecognized arguments: --no-progress" in capsys.readouterr().err


def test_dry_run_prints_the_config_only_when_verbose(tmp_path, capsys):
    assert main(["run", QUICK, "--dry-run", f"root={tmp_path}"]) == 0
    plain = capsys.readouterr().out
    assert main(["run", QUICK, "--dry-run", "--verbose", f"root={tmp_path}"]) == 0
    verbose = capsys.readouterr().out
    assert "name: quickstart" not in plain.splitlines() and "name: quickstart" in verbose.splitlines()
    assert verbose.endswith(plain)  # the same plan, after the YAML
    assert not (tmp_path / "quickstart").exists()  # a dry run writes nothing


def test_cells_prints_sbatch_lines_with_the_names_cancel_finds(tmp_path, capsys):
    assert main(["cells", QUICK, f"root={tmp_path}"]) == 0
    comments = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert f"sbatch -J {job_name('quickstart', 'train')} --array=0-7 slurm/train_array.sbatch CONFIG" in comments[0]
    assert f"sbatch -J {job_name('quickstart', 'eval')} --array=0-3 slurm/eval_array.sbatch CONFIG" in comments[1]


def test_a_cluster_profile_composes_with_the_experiment(tmp_path, capsys):
    celeba, profile = str(REPO / "configs" / "celeba80.yaml"), str(REPO / "slurm" / "cluster.yaml")
    args = [celeba, profile, f"datasets.celeba.source={tmp_path}", f"root={tmp_path}", "launch.eval.partition=big"]
    assert main(["run", "--dry-run", "--verbose", *args]) == 0
    from gdm.experiment import load_experiment

    cfg = load_experiment([celeba, profile], args[2:], need_source=False)
    assert cfg.name == "celeba80" and cfg.launch.train.time_min == 2880  # the experiment's science and budget
    assert cfg.launch.train.partition == "gpu" and cfg.wandb.mode == "online"  # the profile's site settings
    assert cfg.launch.eval.partition == "big"  # overrides come last
    assert "partition gpu" in capsys.readouterr().out
    assert main(["status", celeba, str(tmp_path / "missing.yaml"), f"root={tmp_path}"]) == 2
    assert f"config file {tmp_path / 'missing.yaml'} does not exist" in capsys.readouterr().err
