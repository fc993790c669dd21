"""Thin wrappers of the SLURM commands the driver needs: squeue, scancel, scontrol.

Accounting (sacct) may be disabled — it is on the local test cluster — so liveness comes from squeue.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable

DEFAULT_MAX_ARRAY_SIZE = 1000


def _run(args: list[str]) -> str | None:
    """stdout of a SLURM command, or None when SLURM is absent or the command fails."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return done.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices run 0..MaxArraySize-1), or 1000 if unknown."""
    text = _run(["scontrol", "show", "config"]) or ""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def live_job_ids() -> set[str] | None:
    """Ids of this user's queued or running jobs (array tasks as `A_T`); None if squeue failed."""
    text = _run(["squeue", "--me", "-h", "-r", "-o", "%i"])
    return None if text is None else {line.strip() for line in text.splitlines() if line.strip()}


def job_ids_named(names: Iterable[str]) -> list[str] | None:
    """Ids of this user's queued or running jobs with one of `names`; None if squeue failed."""
    text = _run(["squeue", "--me", "-h", "-o", "%i", f"--name={','.join(names)}"])
    if text is None:
        return None
    # pending array tasks are listed as `A_[2-3%2]`; scancel takes the array A itself for them
    ids = {line.strip().split("_[")[0] for line in text.splitlines() if line.strip()}
    return sorted(ids)


def cancel(job_ids: Iterable[str]) -> None:
    ids = [str(job_id) for job_id in job_ids]
    if ids:
        _run(["scancel", *ids])


def available() -> bool:
    return shutil.which("sbatch") is not None and _run(["sinfo", "-h"]) is not None
