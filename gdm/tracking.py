"""W&B run identity: one run per cell (job_type=train) and per eval pair (job_type=eval).

Run ids are deterministic (derived from the experiment and the cell), so a requeued job resumes the
same run. The mode comes from the config (offline by default: runs are written under the run
directory with no network); the API key is never read, logged or stored here — W&B takes it from
its own environment at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdm.config import ExperimentConfig, to_dict


def wandb_kwargs(cfg: ExperimentConfig, *, run_id: str, name: str, job_type: str, group: str) -> dict[str, Any]:
    """Arguments for `wandb.init` (and Lightning's WandbLogger) for one run of this experiment."""
    directory = cfg.run_dir / "wandb_runs"
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "project": cfg.wandb.project,
        "entity": cfg.wandb.entity,
        "id": run_id,
        "name": name,
        "group": f"{cfg.name}/{group}",
        "job_type": job_type,
        "mode": cfg.wandb.mode,
        "dir": str(directory.resolve()),
        "resume": "allow",
        "config": to_dict(cfg),
    }


def offline_run_dirs(cfg: ExperimentConfig) -> list[Path]:
    """The offline run folders written for this experiment (wandb/offline-run-*)."""
    return sorted((cfg.run_dir / "wandb_runs" / "wandb").glob("offline-run-*"))
