"""Shared fixtures: a tiny experiment config that trains and evaluates in seconds on a CPU, rooted in the
test's tmp_path. Plain helper functions live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import helpers
import pytest

os.environ.setdefault("WANDB_SILENT", "true")  # tests only: keep W&B quiet; runs are offline anyway


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    """Where the tiny experiment of `tiny_overrides` and `tiny_config` keeps its runs."""
    return tmp_path / "runs"


@pytest.fixture
def tiny_overrides(tiny_root) -> list[str]:
    """Overrides of the schema defaults for a tiny, fast experiment rooted in tiny_root (for the CLI)."""
    return [*helpers.TINY_OVERRIDES, f"root={tiny_root}"]


@pytest.fixture
def tiny_config(tiny_root):
    return helpers.tiny_config(tiny_root)
