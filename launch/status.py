"""`gdm status`: one row per cell and eval pair — state, job, training step, last error."""

from __future__ import annotations

import json
from pathlib import Path

from gdm.cells import expand_cells, expand_pairs, read_status
from gdm.config import ExperimentConfig

COLUMNS = ("kind", "id", "state", "job_id", "array_task_id", "step", "error")


def last_step(directory: Path) -> int | None:
    """The step of the newest line of metrics.jsonl (training writes one every log_every steps)."""
    path = directory / "metrics.jsonl"
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


def _row(kind: str, item_id: str, directory: Path) -> dict:
    record = read_status(directory)
    step = record.get("step")
    return {"kind": kind, "id": item_id, "state": record["state"], "job_id": record.get("job_id"),
            "array_task_id": record.get("array_task_id"), "step": step if step is not None else last_step(directory),
            "error": record.get("error")}


def status_rows(cfg: ExperimentConfig) -> list[dict]:
    """A row per training cell, then per eval pair, in `gdm cells` order."""
    rows = [_row("train", c.cell_id, c.directory(cfg)) for c in expand_cells(cfg)]
    return rows + [_row("eval", p.pair_id, p.directory(cfg)) for p in expand_pairs(cfg)]


def _cell_text(value, width: int = 60) -> str:
    text = "-" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


def format_status(rows: list[dict]) -> str:
    """An aligned table of `rows` with a count per state at the end."""
    table = [[c.replace("_", " ") for c in COLUMNS]] + [[_cell_text(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip() for line in table]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no cells")
    return "\n".join(lines)
