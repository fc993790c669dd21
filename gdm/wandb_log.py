"""Every W&B call of gdm: run identity, config and tags, evaluation tables and plots, the report run,
model artifacts, and where offline runs live.

One run per cell (job_type=train), per eval pair (job_type=eval) and per report (job_type=report),
all grouped by experiment. Each run's config says which item it is (dataset, n, split, id, settings
hash) next to the settings its hash stands for, and its tags repeat the keys researchers filter on,
so runs group and filter by n in the UI. Run ids are deterministic, so a requeued job resumes the same
run. The mode comes from the config (offline by default: runs are written under the run folder with
no network). The API key is never read, logged or stored here: W&B takes it from its own environment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gdm.cells import Cell, EvalPair, Item, item_settings, wandb_dir, wandb_run_id
from gdm.config import ExperimentConfig, to_dict

JOB_TYPES = ("train", "eval", "report")

log = logging.getLogger(__name__)


def item_keys(item: Item | None) -> dict[str, Any]:
    """The keys of a cell or pair that a dashboard groups and filters on."""
    if item is None:
        return {}
    keys: dict[str, Any] = {"dataset": item.dataset, "n": item.n, "item_id": item.item_id,
                            "settings_hash": item.settings_hash}
    if isinstance(item, Cell):
        keys["split"] = item.split
    else:
        keys["cells"] = {c.split: c.cell_id for c in item.cells}
    return keys


def run_kwargs(cfg: ExperimentConfig, item: Item | None, job_type: str) -> dict[str, Any]:
    """Arguments for `wandb.init` (and Lightning's WandbLogger) for one run of this experiment."""
    assert job_type in JOB_TYPES, job_type
    directory = wandb_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    keys = item_keys(item)
    tags = [cfg.name, job_type] + [f"{k}={keys[k]}" for k in ("dataset", "n", "split") if k in keys]
    config = {"experiment": cfg.name, **keys, "config": to_dict(cfg)}
    if item is not None:
        config["settings"] = item_settings(cfg, item)
    return {"project": cfg.wandb.project, "entity": cfg.wandb.entity, "id": wandb_run_id(cfg, item),
            "name": item.item_id if item is not None else f"{cfg.name}/report", "group": cfg.name,
            "job_type": job_type, "tags": tags, "mode": cfg.wandb.mode, "dir": str(directory.resolve()),
            "resume": "allow", "config": config}


def start_run(cfg: ExperimentConfig, item: Item | None, job_type: str) -> Any:
    """wandb.init of one eval or report run, bounded by wandb.init_timeout_s. When online fails (no API key,
    no network, a server error) the run is written offline instead, with one warning naming `gdm sync`: the
    results are on disk already, and nothing W&B does can cost them."""
    import wandb

    kwargs = run_kwargs(cfg, item, job_type) | {"settings": wandb.Settings(init_timeout=cfg.wandb.init_timeout_s)}
    try:
        return wandb.init(**kwargs)
    except Exception as err:  # wandb.errors.CommError, UsageError (no key), AuthenticationError, timeouts
        if kwargs["mode"] != "online":
            raise
        offline_instead(kwargs, err)
        return wandb.init(**kwargs)


def offline_instead(init_kwargs: dict[str, Any], err: Exception) -> None:
    """After a failed online wandb.init: tear its service down, switch `init_kwargs` to offline, warn once."""
    import wandb

    wandb.teardown()
    init_kwargs["mode"] = "offline"
    log.warning("W&B online failed for %s (%s: %s); logged offline under %s instead. Check the API key "
                "(`wandb login`) and the network, then upload with `gdm sync CONFIG`", init_kwargs["name"],
                type(err).__name__, " ".join(str(err).split())[:200], init_kwargs["dir"])


def train_logger(cfg: ExperimentConfig, cell: Cell):
    """Lightning's WandbLogger for the cell's training run."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.loggers.logger import rank_zero_experiment

    class OfflineOnFailure(WandbLogger):
        """Lightning's WandbLogger whose run, if online fails, is written offline (see `start_run`)."""

        @property
        @rank_zero_experiment
        def experiment(self) -> Any:
            try:
                return super().experiment
            except Exception as err:
                if self._wandb_init.get("mode") != "online":
                    raise
                offline_instead(self._wandb_init, err)
                return super().experiment

    kwargs = run_kwargs(cfg, cell, "train")
    settings = wandb.Settings(init_timeout=cfg.wandb.init_timeout_s)
    return OfflineOnFailure(save_dir=kwargs.pop("dir"), settings=settings, **kwargs)


def active_run(trainer) -> Any | None:
    """The W&B run of a trainer's WandbLogger on this rank, if one was started."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    return wandb.run if any(isinstance(lg, WandbLogger) for lg in trainer.loggers) else None


def finish_run(run: Any | None, ok: bool) -> None:
    """Finish a run so an offline run is flushed to disk (also when training failed)."""
    if run is not None:
        run.finish(exit_code=0 if ok else 1)


def log_model(cfg: ExperimentConfig, run: Any, cell: Cell, path: Path, sha256: str) -> None:
    """model.pt as a W&B artifact: a reference to its path by default, the file itself with wandb.upload_models."""
    import wandb

    artifact = wandb.Artifact(f"model-{cell.wandb_id(cfg)}", type="model",
                              metadata={**item_keys(cell), "sha256": sha256})
    if cfg.wandb.upload_models:
        artifact.add_file(str(path), name=path.name)
    else:
        artifact.add_reference(Path(path).resolve().as_uri(), name=path.name, checksum=False)
    run.log_artifact(artifact, aliases=["latest", cell.settings_hash])


def psnr_table(curves: dict[str, dict]) -> Any:
    """One row per (curve, σ): curves such as "A test", "optimal A test", "gaussian A test"."""
    import wandb

    rows = [[label, sigma, inp, out] for label, c in curves.items()
            for sigma, inp, out in zip(c["sigma"], c["input_psnr"], c["output_psnr"], strict=True)]
    return wandb.Table(columns=["curve", "sigma", "input_psnr", "output_psnr"], data=rows)


def log_eval(cfg: ExperimentConfig, pair: EvalPair, scalars: dict, curves: dict[str, dict],
             per_seed: dict[str, list], figures: dict[str, Path], samples: dict[str, Any]) -> None:
    """The pair's eval run: summary scalars, per-σ PSNR table of `curves` (label → PSNR curve, see
    gdm.results.PairResults.psnr_curves) with a line plot, per-seed table, samples and figures as images."""
    import wandb

    run = start_run(cfg, pair, "eval")
    try:
        run.summary.update(scalars)
        table = psnr_table(curves)
        images = {f"samples/{s}": [wandb.Image(x[0].clamp(0, 1).numpy()) for x in batch[: cfg.eval.grid_samples]]
                  for s, batch in samples.items()}
        run.log({f"eval/{k}": v for k, v in scalars.items()}
                | {f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()} | images
                | {"eval/psnr": table, "eval/psnr_plot": wandb.plot.line(table, "sigma", "output_psnr", stroke="curve",
                                                                       title=f"{pair.pair_id}: PSNR per σ")}
                | {"eval/per_seed": wandb.Table(columns=list(per_seed),
                                                data=[list(r) for r in zip(*per_seed.values(), strict=True)])})
    finally:
        run.finish()


def log_report(cfg: ExperimentConfig, rows: list[dict], figures: list[Path]) -> None:
    """The report run: the summary table across n and every figure of the report."""
    import wandb

    run = start_run(cfg, None, "report")
    try:
        columns = list(dict.fromkeys(c for row in rows for c in row)) or ["dataset", "n"]  # older rows lack some
        run.log({"report/summary": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])}
                | {f"report/{p.stem}": wandb.Image(str(p)) for p in figures})
    finally:
        run.finish()


def offline_run_dirs(cfg: ExperimentConfig) -> list[Path]:
    """The offline run folders written for this experiment (wandb/offline-run-*)."""
    return sorted((wandb_dir(cfg) / "wandb").glob("offline-run-*"))
