"""`gdm status`: one row per cell and eval pair of the current settings — state, job, step, error.

States come from gdm.lifecycle: "running" means a live process holds the folder's lease now, so a
dead job never shows as running. `--all` lists every folder on disk, older settings included.
"""

from __future__ import annotations

import json
from pathlib import Path

from gdm import lifecycle
from gdm.cells import Files, expand_cells, expand_pairs, item_folders
from gdm.config import ExperimentConfig
from launch import owners

COLUMNS = ("kind", "id", "state", "job_id", "step", "flags", "error")


def last_step(directory: Path) -> int | None:
    """The step of the newest line of metrics.jsonl (training writes one every log_every steps)."""
    path = directory / Files.METRICS
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue  # a line cut short by a killed job
        if step is not None:
            return int(step)
    return None


def _row(kind: str, item_id: str, directory: Path, queued: set[str] | None, ownership: lifecycle.Ownership,
         error: str | None = None) -> dict:
    status = lifecycle.status(directory, queued, ownership)
    step = status.step if status.step is not None else last_step(directory)
    return {"kind": kind, "id": item_id, "state": status.state.value, "job_id": status.job_id, "step": step,
            "flags": ", ".join(status.flags) or None, "error": status.error or error}


def status_rows(cfg: ExperimentConfig, queued: set[str] | None = None) -> list[dict]:
    """A row per training cell, then per eval pair, in `gdm cells` order (current settings only)."""
    cells, ownership = expand_cells(cfg), owners.ownership(cfg)
    rows = [_row("train", c.cell_id, c.directory(cfg), queued, ownership) for c in cells]
    failed = {r["id"] for r in rows if r["state"] == lifecycle.State.FAILED.value}
    for pair in expand_pairs(cfg):
        blocked = [c.cell_id for c in pair.cells if c.cell_id in failed]
        note = f"waits on failed cell {', '.join(blocked)}" if blocked else None
        rows.append(_row("eval", pair.pair_id, pair.directory(cfg), queued, ownership, note))
    return rows


def all_folder_rows(cfg: ExperimentConfig) -> list[dict]:
    """Every cell and pair folder on disk with its state, and whether the current settings use it."""
    current = {c.cell_id for c in expand_cells(cfg)} | {p.pair_id for p in expand_pairs(cfg)}
    rows, ownership = [], owners.ownership(cfg)
    for directory in item_folders(cfg):
        item_id = directory.relative_to(cfg.run_dir).as_posix()
        kind = "eval" if "-eval-" in directory.name else "train"
        row = _row(kind, item_id, directory, None, ownership)
        flags = [None if item_id in current else "older settings", row["flags"]]
        rows.append({**row, "flags": ", ".join(f for f in flags if f) or None})
    return rows


def _cell_text(value, width: int = 60) -> str:
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_status(rows: list[dict]) -> str:
    """An aligned table of `rows` (long errors cut to a column), each failure's error in full below it, and a
    count per state at the end."""
    table = [[c.replace("_", " ") for c in COLUMNS]] + [[_cell_text(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip() for line in table]
    failures = [f"{r['id']}: {r['error']}" for r in rows if r["state"] == "failed" and r.get("error")]
    lines += ["", "errors (in full):", *failures, ""] if failures else []
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)
