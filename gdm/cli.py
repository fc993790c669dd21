"""gdm: does a diffusion model memorize its training set or generalize? For each training-set size n it
trains two denoisers on disjoint halves (A and B) of the data, samples both from the same seeds and measures
how alike their samples are, how close they come to training images, and how well they denoise.

    gdm run configs/quickstart.yaml                     # the whole grid: data → train → eval → report
    gdm run configs/quickstart.yaml trainer.max_steps=50
    gdm run configs/celeba80.yaml --dry-run             # the plan and its cost; submits nothing
    gdm status configs/quickstart.yaml                  # pending / running / done / failed per cell
    gdm report configs/quickstart.yaml                  # figures and tables from what is done
    gdm train configs/quickstart.yaml --cell-index 3    # one cell (what a SLURM array task runs)
    gdm eval configs/quickstart.yaml --pair-index 1     # one (dataset, n) pair

Every command takes a config file and dotted KEY=VALUE overrides; `gdm COMMAND --help` explains its options.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

from gdm.config import ConfigError, ExperimentConfig

OVERRIDES_HELP = ("more YAML files merged over the first (a cluster profile: launch.*, wandb.*), then config "
                  "overrides as dotted key=value pairs, e.g. my_cluster.yaml trainer.max_steps=50 'n_train=[1,10]' "
                  "wandb.mode=disabled")


# Commands that show progress bars: only they take --no-progress.
_PROGRESS = ("run", "refine", "train", "eval", "prepare")


def _add_common(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("config", help="experiment YAML file, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", metavar="[PROFILE.yaml] KEY=VALUE", help=OVERRIDES_HELP)
    if command in _PROGRESS:
        parser.add_argument("--no-progress", dest="progress", action="store_false",
                            help="hide progress bars (for logs and batch jobs)")


def _index_option(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    parser.add_argument(f"--{name}-index", type=int, default=None, dest="index",
                        help=f"position of the {what} in `gdm cells` order; defaults to $SLURM_ARRAY_TASK_ID "
                             "inside a SLURM array task")
    parser.add_argument(f"--{name}", default=None, dest="item_id",
                        help=f"the {what} by id as `gdm cells` prints it (alternative to --{name}-index)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"gdm {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {
        "run": "run the whole grid: prepare data, train every cell not done, evaluate each pair as soon as both "
               "of its cells are done, then write the report. Idempotent: a second run skips what is done.",
        "refine": "run the grid, then add training-set sizes between the largest n that memorizes and the smallest "
                  "larger n that does not (their geometric midpoint) and run again, until the transition n* is "
                  "bracketed within --resolution; done cells are reused. Prints the refined n_train",
        "train": "train one cell in this process (resumes from its last.ckpt); what a SLURM array task runs",
        "eval": "evaluate one (dataset, n) pair in this process; both of its cells must be done",
        "status": "print the state, job id, step and last error of every cell and eval pair",
        "report": "write figures and tables across the pairs evaluated so far to runs/<name>/report/",
        "prepare": "prepare (generate or import) every dataset of the config as webdataset shards",
        "cells": "list the cells and eval pairs with their array indices (for sbatch --array ranges)",
        "cancel": "cancel the experiment's jobs: scancel on SLURM (jobs named gdm-<experiment>-<kind>), the local "
                  "jobs by their own pids otherwise; what they finished stays done, the rest resumes on the next run",
        "sync": "upload every offline W&B run of the experiment (`wandb sync` on each; needs WANDB_API_KEY "
                "in the environment, which gdm never reads)",
    }
    for name, text in commands.items():
        command = sub.add_parser(name, help=text, description=text)
        _add_common(command, name)
        if name == "train":
            _index_option(command, "cell", "cell")
        if name == "eval":
            _index_option(command, "pair", "eval pair")
        if name == "run":
            command.add_argument("--detach", action="store_true",
                                 help="SLURM only: submit every job with its dependencies (prepare → training array "
                                      "→ each pair after its cells → the report after every pair) and exit; follow "
                                      "with `gdm status`, stop with `gdm cancel`")
            command.add_argument(
                "--dry-run",
                action="store_true",
                help="print the plan: cells and pairs to do and done, the jobs with their resources, "
                "device-hours per cell and in total, and the disk; submits nothing",
            )
            command.add_argument("--verbose", action="store_true",
                                 help="with --dry-run: print the resolved config (YAML) before the plan")
        if name == "refine":
            command.add_argument("--resolution", type=float, default=2.0,
                                 help="stop when n_high / n_low of every bracket is at most this (default 2)")
            command.add_argument("--max-rounds", type=int, default=4,
                                 help="run the grid at most this many times (default 4)")
        if name == "sync":
            command.add_argument("--dry-run", action="store_true", help="list the runs that would be synced")
        if name == "status":
            command.add_argument("--all", action="store_true", dest="all_folders",
                                 help="list every cell and pair folder on disk, those of older settings included "
                                      "(marked 'older settings'); by default only the current settings' are shown")
    return parser


def _version() -> str:
    """The installed gdm's version (its package metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gdm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if ("=" not in item and not _is_yaml(item)) or item.startswith("-")]
    if unknown:  # overrides may follow options (`gdm run CONFIG --dry-run key=value`); anything else is an error
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    words = [*args.overrides, *extra]
    files = [args.config, *(w for w in words if _is_yaml(w))]
    args.overrides = [w for w in words if not _is_yaml(w)]
    try:
        from gdm.experiment import load_experiment  # here: `gdm --help` stays free of torch

        cfg = load_experiment(files, args.overrides, need_source=args.command in _READ_SOURCE)
        _adopt_older_folders(cfg, args.command)
        return COMMANDS[args.command](cfg, args)
    except ConfigError as err:
        print(f"gdm: config error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as err:  # OSError: no space, read-only storage, permissions
        print(f"gdm {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1


def _is_yaml(word: str) -> bool:
    """A further config file (merged over the first), as opposed to a key=value override."""
    return "=" not in word and word.endswith((".yaml", ".yml"))


# Commands that read the data source itself; the others need only the run folder (and work without the data).
_READ_SOURCE = ("run", "refine", "prepare")
# Commands that write the run folder: they first rename folders of an older naming (gdm.migrate).
_MIGRATE = ("run", "refine", "train", "eval", "status", "report")


def _adopt_older_folders(cfg: ExperimentConfig, command: str) -> None:
    """Rename folders named by an older gdm to today's names, so they are recognised, never retrained."""
    from gdm.migrate import migrate_folders

    if command in _MIGRATE and cfg.run_dir.exists():
        for old, new in migrate_folders(cfg):
            print(f"gdm: renamed {old} -> {new} (named by an older gdm; same settings)", file=sys.stderr)


def _one_line(err: BaseException) -> str:
    """The error as one line, naming the file where the OS gave one."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _run(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.config import to_yaml

    if args.dry_run:
        from launch.plan import format_plan, make_plan

        if args.verbose:
            print(to_yaml(cfg))
        print(format_plan(cfg, make_plan(cfg)))
        return 0
    if args.detach:
        from launch.grid import submit_detached

        jobs = submit_detached(cfg)
        print(f"gdm run {cfg.name}: submitted prepare {jobs['prepare']}, {len(jobs['train'])} training tasks, "
              f"{len(jobs['eval'])} evaluations, report {jobs['report']}; `gdm status` follows them, "
              "`gdm cancel` stops them")
        return 0
    from launch.grid import run_grid

    summary = run_grid(cfg, progress=args.progress)  # ends with gdm.report.make_report
    report_dir = cfg.run_dir / "report"
    print(_format_summary(summary, cfg, report_dir))
    return 1 if summary.get("failed") else 0


def _refine(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from launch.grid import run_grid
    from launch.refine import refine

    final, brackets = refine(cfg, lambda c: run_grid(c, progress=args.progress), resolution=args.resolution,
                             max_rounds=args.max_rounds)
    print(f"gdm refine {cfg.name}: n_train is now {final.n_train} (put it in the config to keep it)")
    print("\n".join(b.describe() for b in brackets))
    print(f"report: {final.run_dir / 'report'}")
    return 0


def _format_summary(summary: dict, cfg: ExperimentConfig, report_dir) -> str:
    counts = ", ".join(f"{key} {len(v) if isinstance(v, (list, tuple)) else v}" for key, v in summary.items())
    return f"gdm run {cfg.name}: {counts}\nrun directory: {cfg.run_dir}\nreport: {report_dir}"


def _pick(items: list, args: argparse.Namespace, get_id: Callable, what: str):
    """The item named by --X-index / --X (or $SLURM_ARRAY_TASK_ID), with a clear error otherwise."""
    if args.item_id is not None:
        matches = [item for item in items if get_id(item) == args.item_id]
        if not matches:
            raise ValueError(f"no {what} with id {args.item_id!r}; `gdm cells CONFIG` lists them")
        return matches[0]
    index = args.index if args.index is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        raise ValueError(f"give --{what}-index or --{what} (or run inside a SLURM array task)")
    index = int(index)
    if not 0 <= index < len(items):
        raise ValueError(
            f"--{what}-index {index} is out of range: this config has {len(items)} {what}s (0…{len(items) - 1})"
        )
    return items[index]


def _train(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.cells import expand_cells
    from launch.task import run_train_task

    cell = _pick(expand_cells(cfg), args, lambda c: c.cell_id, "cell")
    return _until_stopped(cell.cell_id, lambda: run_train_task(cfg, cell, progress=args.progress))


def _eval(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.cells import expand_pairs
    from launch.task import run_eval_task

    pair = _pick(expand_pairs(cfg), args, lambda p: p.pair_id, "pair")
    return _until_stopped(pair.pair_id, lambda: run_eval_task(cfg, pair, progress=args.progress))


# Exit status of a job stopped by a signal before its item was done: 128 + SIGTERM, the shell's convention, so
# SLURM's afterok and any script read it as a failure.
_STOPPED_EXIT = 143


def _until_stopped(item_id: str, work: Callable) -> int:
    """Run one item's task; a stop before it is done (Lightning's SIGTERMException is a SystemExit without a
    code, which Python turns into exit 0) exits non-zero instead. Its last.ckpt stays: a rerun resumes."""
    try:
        outcome = work()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise
        print(f"{item_id}: stopped by a signal before it was done; rerun to resume", file=sys.stderr)
        return _STOPPED_EXIT
    return _report_outcome(item_id, outcome)


def _report_outcome(item_id: str, outcome) -> int:
    """One line on what happened; 0 also when another live process owns the item (it is not a failure)."""
    texts = {"done": "done", "already_done": "already done; nothing to do",
             "busy": "owned by another live process (see `gdm status`); not started here"}
    print(f"{item_id}: {texts[outcome.value]}")
    return 0


def _status(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from launch import slurm
    from launch.status import all_folder_rows, format_status, status_rows

    if args.all_folders:
        print(format_status(all_folder_rows(cfg)))
        return 0
    queued = slurm.live_job_ids() if cfg.launch.executor == "slurm" else None
    print(format_status(status_rows(cfg, queued)))
    return 0


def _report(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.report import make_report
    from launch.owners import ownership

    print(f"report written to {make_report(cfg, ownership(cfg))}")
    return 0


def _prepare(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.cells import data_dir
    from gdm.data.prepare import prepare_dataset

    for name, data in cfg.datasets.items():
        manifest = prepare_dataset(data, data_dir(cfg, name), progress=args.progress)
        print(
            f"{name}: {manifest.get('test_size')} test + {manifest.get('pool_size')} pool images "
            f"in {data_dir(cfg, name)}"
        )
    return 0


def _cells(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from gdm.cells import expand_cells, expand_pairs
    from launch.executors import job_name

    cells, pairs = expand_cells(cfg), expand_pairs(cfg)
    # -J: the job name `gdm cancel` looks for, so hand-submitted arrays are cancelled with the rest.
    print(f"# {len(cells)} training cells: sbatch -J {job_name(cfg.name, 'train')} --array=0-{len(cells) - 1} "
          "slurm/train_array.sbatch CONFIG")
    print("\n".join(f"{i}\t{cell.cell_id}" for i, cell in enumerate(cells)))
    print(f"# {len(pairs)} eval pairs: sbatch -J {job_name(cfg.name, 'eval')} --array=0-{len(pairs) - 1} "
          "slurm/eval_array.sbatch CONFIG")
    print("\n".join(f"{i}\t{pair.pair_id}" for i, pair in enumerate(pairs)))
    return 0


def _cancel(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    from launch.grid import cancel_experiment

    cancelled = cancel_experiment(cfg)
    print(
        "\n".join([f"cancelled {what}" for what in cancelled] + [f"gdm cancel {cfg.name}: {len(cancelled)} cancelled"])
    )
    return 0


def _sync(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    """`wandb sync` of every offline run of the experiment, in one call."""
    import shutil
    import subprocess

    from gdm.wandb_log import offline_run_dirs

    runs = offline_run_dirs(cfg)
    if not runs:
        print(f"no offline W&B runs under {cfg.run_dir}")
        return 0
    wandb = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    command = [wandb, "sync", *(["--dry-run"] if args.dry_run else []), *map(str, runs)]
    done = subprocess.run(command, capture_output=True, text=True)
    print((done.stdout + done.stderr).strip())
    print(f"gdm sync {cfg.name}: {len(runs)} offline runs {'listed' if args.dry_run else 'synced'}"
          + ("" if done.returncode == 0 else f" with errors (wandb exit code {done.returncode})"))
    return 0 if done.returncode == 0 else 1


COMMANDS: dict[str, Callable[[ExperimentConfig, argparse.Namespace], int]] = {
    "run": _run, "refine": _refine, "train": _train, "eval": _eval, "status": _status,
    "report": _report, "prepare": _prepare, "cells": _cells, "sync": _sync, "cancel": _cancel,
}


if __name__ == "__main__":
    sys.exit(main())
