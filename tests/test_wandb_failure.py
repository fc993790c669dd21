"""W&B can fail without costing anything: an online eval or report run that cannot reach W&B (a refused
address, or no API key) is written offline instead, within a bounded time, with one warning naming `gdm sync`."""

from __future__ import annotations

import logging
import time

import pytest
from helpers import prepared, tiny_config, train_owned

from gdm.config import load_config
from gdm.wandb_log import log_report, offline_run_dirs

ROWS = [{"dataset": "disks", "n": 1, "verdict": "memorizing"}]


@pytest.fixture
def no_wandb_server(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc key of the machine's user
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: connection refused
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    import wandb

    wandb.teardown()


@pytest.mark.parametrize("api_key", ["x" * 40, None], ids=["dummy-key-no-network", "no-key"])
def test_an_unreachable_wandb_leaves_an_offline_run_and_one_warning(tmp_path, monkeypatch, caplog, no_wandb_server,
                                                                    api_key):
    if api_key:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    cfg = load_config(None, [f"root={tmp_path / 'runs'}", "wandb.mode=online", "wandb.init_timeout_s=2"])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gdm.wandb_log"):
        log_report(cfg, ROWS, [])
    assert time.monotonic() - started < 90
    warned = [r.getMessage() for r in caplog.records if r.name == "gdm.wandb_log"]
    assert len(warned) == 1 and "gdm sync" in warned[0] and "W&B online failed" in warned[0]
    assert len(offline_run_dirs(cfg)) == 1  # what `gdm sync` uploads later


def test_training_with_an_unreachable_wandb_ends_done_with_an_offline_run(tmp_path, caplog, no_wandb_server,
                                                                           tiny_root):
    from gdm import lifecycle
    from gdm.cells import expand_cells
    cfg = prepared(tiny_config(tiny_root, "wandb.mode=online", "wandb.init_timeout_s=2", "trainer.max_steps=2"))
    cell = expand_cells(cfg)[0]
    with caplog.at_level(logging.WARNING, logger="gdm.wandb_log"):
        train_owned(cfg, cell)
    assert lifecycle.is_done(cell.directory(cfg))
    assert any("gdm sync" in r.getMessage() for r in caplog.records if r.name == "gdm.wandb_log")
    assert len(offline_run_dirs(cfg)) == 1
