"""Training: a step learns, NaN fails cleanly, resume == uninterrupted (bitwise), DDP, model.pt, W&B."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_weights, prepared, saved_weights, tiny_config, train_owned
from lightning_helpers import AtStep, RecordLr, Stop

from gdm import lifecycle
from gdm.cells import data_dir, expand_cells
from gdm.training.fit import fit_cell
from gdm.training.loss import NonFiniteLossError
from gdm.training.model_file import load_denoiser

REPO = Path(__file__).resolve().parents[1]
NO_WANDB = "wandb.mode=disabled"


def cell_of(cfg, n: int = 4):
    return next(c for c in expand_cells(cfg) if c.n == n and c.split == "A")


class PoisonWeights(AtStep):
    def act(self, trainer, module):
        next(module.net.parameters()).data.fill_(float("nan"))


def metrics_records(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def expected_validation_psnr(cfg, cell, directory: Path) -> dict[str, float]:
    """val/psnr_<train|test>_sigma<σ> recomputed in numpy from model.pt: 10 log10(1 / MSE) per image of
    f(x + σz) on the first eval.psnr_images training and test images, averaged; z drawn σ after σ from one
    generator seeded by eval.seed, as the pair's evaluation draws it."""
    from gdm.data.store import load_split

    denoiser, data = load_denoiser(directory / "model.pt"), data_dir(cfg, cell.dataset)
    batches = {"train": load_split(data, cell.split, cell.n)[: cfg.eval.psnr_images],
               "test": load_split(data, "test", cfg.eval.psnr_images)}
    expected = {}
    for name, x in batches.items():
        generator = torch.Generator().manual_seed(cfg.eval.seed)
        for sigma in cfg.eval.psnr_sigmas:
            z = torch.randn(x.shape, generator=generator)
            with torch.no_grad():
                denoised = denoiser(x + sigma * z).double().numpy()
            mse = ((denoised - x.double().numpy()) ** 2).mean(axis=(1, 2, 3))
            expected[f"val/psnr_{name}_sigma{sigma:g}"] = float(np.mean(10 * np.log10(1 / mse)))
    return expected


def assert_logged_steps_and_final_psnr(cfg, cell, directory: Path, logged_steps: list[int]) -> None:
    records = metrics_records(directory)
    losses = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in losses] == logged_steps
    assert all(math.isfinite(r["train/loss"]) and r["train/loss"] > 0 for r in losses)
    assert all(r["lr"] == cfg.trainer.lr for r in losses)  # trainer.lr_halve_every=0: constant
    final = [r for r in records if any(k.startswith("val/") for k in r)]
    assert [r["step"] for r in final] == [cfg.trainer.max_steps]
    expected = expected_validation_psnr(cfg, cell, directory)
    assert {k: v for k, v in final[0].items() if k.startswith("val/")} == pytest.approx(expected, abs=1e-3)


def test_training_changes_weights_and_writes_outputs(tmp_path):
    cfg = prepared(tiny_config(tmp_path, NO_WANDB, "trainer.max_steps=2", "trainer.log_every=1"))
    cell = cell_of(cfg)
    directory = train_owned(cfg, cell)
    model = torch.load(directory / "model.pt", weights_only=True)
    assert model["model"] == "bf_unet" and model["image_size"] == 16 and model["model_cfg"]["channels"] == 8
    from gdm.training.fit import build_cell_module

    initial = build_cell_module(cfg, cell)[0].net.state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in model["state_dict"].items())
    assert_logged_steps_and_final_psnr(cfg, cell, directory, [1, 2])
    assert lifecycle.status(directory).state.value == "done"


def test_model_file_round_trips_through_load_denoiser(tmp_path):
    cfg = prepared(tiny_config(tmp_path, NO_WANDB, "trainer.max_steps=1"))
    fit_cell(cfg, cell_of(cfg))
    directory = cell_of(cfg).directory(cfg)
    denoiser = load_denoiser(directory / "model.pt")
    payload = torch.load(directory / "model.pt", weights_only=True)
    from gdm.config import ModelConfig
    from gdm.models import build_model

    net = build_model(ModelConfig(**payload["model_cfg"]), 16)
    net.load_state_dict(payload["state_dict"])
    y = torch.rand(3, 1, 16, 16)
    assert not denoiser.training
    assert torch.equal(denoiser(y), y - net.eval()(y))
    assert torch.allclose(denoiser(2.5 * y), 2.5 * denoiser(y), rtol=1e-4, atol=1e-5)  # trained net still homogeneous


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    cfg = prepared(tiny_config(tmp_path, NO_WANDB))
    cell = cell_of(cfg)
    with pytest.raises(NonFiniteLossError, match="last good last.ckpt"):
        fit_cell(cfg, cell, callbacks=[PoisonWeights(at=4)])
    checkpoint = torch.load(cell.directory(cfg) / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    assert not (cell.directory(cfg) / "DONE").exists()


def straight_and_resumed(tmp_path: Path, *extra: str):
    """One cell trained twice with `extra`: straight through, and stopped at step 3 (last.ckpt at 3) then
    resumed; returns (straight config, resumed config, cell)."""
    straight = prepared(tiny_config(tmp_path / "straight", NO_WANDB, *extra))
    resumed = prepared(tiny_config(tmp_path / "resumed", NO_WANDB, *extra))
    cell = cell_of(straight)
    fit_cell(straight, cell)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        fit_cell(resumed, cell, callbacks=[Stop(at=3)])
    assert torch.load(cell.directory(resumed) / "last.ckpt", weights_only=True)["global_step"] == 3
    fit_cell(resumed, cell)
    return straight, resumed, cell


def test_resume_equals_uninterrupted_bitwise(tmp_path):
    # EMA and LR schedule must resume too
    straight, resumed, cell = straight_and_resumed(tmp_path, "trainer.ema_decay=0.5", "trainer.lr_halve_every=2")
    for name in ("last.ckpt", "model.pt"):
        assert_same_weights(saved_weights(cell.directory(straight) / name),
                            saved_weights(cell.directory(resumed) / name))


def test_step_s_uses_lr_times_a_half_to_the_s_over_k_also_after_a_resume_with_new_settings(tmp_path):
    """lr(s) = lr · 0.5^⌊s/k⌋ exactly (==) at every step, and in the records (the next step's rate); a run resumed
    from another run's last.ckpt with a lower trainer.lr and another trainer.lr_halve_every takes the config's."""
    first = prepared(tiny_config(tmp_path / "first", NO_WANDB, "trainer.lr=1e-3", "trainer.lr_halve_every=2",
                                 "trainer.max_steps=5", "trainer.checkpoint_every=5"))
    cell, used = cell_of(first), RecordLr()
    fit_cell(first, cell, callbacks=[used])
    assert used.lr == {s: [1e-3 * 0.5 ** (s // 2)] for s in range(5)}
    second = prepared(tiny_config(tmp_path / "second", NO_WANDB, "trainer.lr=3e-4", "trainer.lr_halve_every=3",
                                  "trainer.max_steps=9"))
    target = cell.directory(second)
    target.mkdir(parents=True)
    (target / "last.ckpt").write_bytes((cell.directory(first) / "last.ckpt").read_bytes())
    used = RecordLr()
    fit_cell(second, cell, callbacks=[used])
    assert used.lr == {s: [3e-4 * 0.5 ** (s // 3)] for s in range(5, 9)}  # 3e-4 / 2 at step 5, 3e-4 / 4 from 6
    logged = {r["step"]: r["lr"] for r in metrics_records(target) if "lr" in r}
    assert logged == {6: 7.5e-5, 8: 7.5e-5}  # trainer.log_every=2: records lr(6) and lr(8) from the resume on


def test_kept_models_are_saved_checksummed_and_loadable(tmp_path):
    """trainer.keep_models_at=[2]: two cells each leave model_step2.pt, model.pt's format, listed in DONE;
    it loads with weights_only=True and holds other weights than the final model."""
    cfg = prepared(tiny_config(tmp_path, NO_WANDB, "trainer.keep_models_at=[2]"))
    for cell in (c for c in expand_cells(cfg) if c.n == 4):
        directory = train_owned(cfg, cell)
        kept, final = (torch.load(directory / name, weights_only=True) for name in ("model_step2.pt", "model.pt"))
        assert kept.keys() == final.keys() and kept["model_cfg"] == final["model_cfg"]
        assert any(not torch.equal(v, final["state_dict"][k]) for k, v in kept["state_dict"].items())
        assert set(lifecycle.done_record(directory)["sha256"]) == {"model.pt", "model_step2.pt"}
        assert lifecycle.verify(directory, "model_step2.pt") == directory / "model_step2.pt"
        y = torch.rand(2, 1, 16, 16)
        assert not torch.equal(load_denoiser(directory / "model_step2.pt")(y), load_denoiser(directory)(y))


def test_precise_bn_resumes_bitwise_and_replaces_the_copied_statistics(tmp_path):
    """With EMA, precise BN and kept models, a run stopped at step 3 and resumed writes the same last.ckpt,
    model.pt and kept models as an uninterrupted one; the model saved at the last step is model.pt; its BN
    statistics are the EMA net's own, no longer the raw net's that update_ema copies."""
    straight, resumed, cell = straight_and_resumed(tmp_path, "trainer.ema_decay=0.5", "trainer.precise_bn_batches=3",
                                                   "trainer.keep_models_at=[2,6]")
    for name in ("last.ckpt", "model.pt", "model_step2.pt", "model_step6.pt"):
        assert_same_weights(saved_weights(cell.directory(straight) / name),
                            saved_weights(cell.directory(resumed) / name))
    directory = cell.directory(straight)
    assert_same_weights(saved_weights(directory / "model_step6.pt"), saved_weights(directory / "model.pt"))
    last, model = saved_weights(directory / "last.ckpt"), saved_weights(directory / "model.pt")
    statistics = [k for k in model if k.endswith("running_sd")]
    assert statistics and all(torch.equal(model[k], last[f"ema.{k}"]) for k in statistics)
    assert all(not torch.equal(model[k], last[f"net.{k}"]) for k in statistics)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    """A crash while last.ckpt is being written leaves the previous checkpoint intact."""
    from gdm.training.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)

    def crash(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        AtomicCheckpointIO().save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert AtomicCheckpointIO().load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics(tmp_path):
    from wandb_records import flushed_records

    from gdm.wandb_log import offline_run_dirs

    cfg = prepared(tiny_config(tmp_path, "wandb.mode=offline", "trainer.max_steps=2", "trainer.log_every=1"))
    cell = cell_of(cfg)
    train_owned(cfg, cell)  # its owner finishes the run (flushed to disk) once DONE is written
    runs = offline_run_dirs(cfg)
    assert len(runs) == 1 and runs[0].name.endswith(cell.wandb_id(cfg))
    records = flushed_records(runs[0])
    assert {r.run.run_id for r in records if r.HasField("run")} == {cell.wandb_id(cfg)}
    logged = sorted((i.key or "/".join(i.nested_key), json.loads(i.value_json))
                    for r in records if r.HasField("history") for i in r.history.item)
    logged = [(k, v) for k, v in logged if not k.startswith(("_", "trainer/"))]
    expected = sorted((k, v) for r in metrics_records(cell.directory(cfg)) for k, v in r.items() if k != "step")
    assert [k for k, _ in logged] == [k for k, _ in expected]  # every metric of metrics.jsonl, once each
    assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)  # with the same values


DDP_OVERRIDES = ["wandb.mode=disabled", "trainer.devices=2", "trainer.max_steps=4", "trainer.ema_decay=0.5"]
DDP_SCRIPT = """
import os, sys, torch, lightning as L
sys.path.insert(0, {tests!r})
from helpers import prepared, tiny_config
from gdm.cells import expand_cells
from gdm.training.fit import fit_cell
from launch.slurm import SlurmEnv
from launch.task import run_owned

class DumpWeights(L.Callback):
    def on_fit_end(self, trainer, module):
        torch.save(module.state_dict(), {out!r} + f"/rank{{trainer.global_rank}}.pt")

cfg = prepared(tiny_config({root!r}, *{extra!r}))
cell = [c for c in expand_cells(cfg) if c.n == 4][0]
rank = int(os.environ.get("LOCAL_RANK", 0))  # Lightning starts rank 1 as this script again
run_owned(cfg, cell, lambda: fit_cell(cfg, cell, callbacks=[DumpWeights()]), SlurmEnv(rank=rank, step_tasks=2))
"""


PRECISE_BN = ["trainer.precise_bn_batches=2", "trainer.keep_models_at=[2,4]"]  # all-reduces inside the steps


@pytest.mark.slow
@pytest.mark.parametrize("more", [[], PRECISE_BN], ids=["default", "precise_bn"])
def test_ddp_two_processes_end_with_identical_weights(tmp_path, more):
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path),
                                                        root=str(tmp_path / "runs"), extra=DDP_OVERRIDES + more)))
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # extend, not replace
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path, "WANDB_SILENT": "true"}
    for key in [k for k in env if k.startswith(("SLURM_", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))]:
        del env[key]  # a clean single-node launch, also when the tests run inside a SLURM job
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same_weights(rank0, rank1)
    cfg = tiny_config(tmp_path / "runs", NO_WANDB, *DDP_OVERRIDES, *more)
    directory = next(c for c in expand_cells(cfg) if c.n == 4).directory(cfg)
    status = lifecycle.status(directory)
    assert status.state == lifecycle.State.DONE and status.step == 4  # DONE written by rank 0's owner
    assert lifecycle.done_intact(directory) and not list(directory.glob("DONE.bad-*"))
    if more:  # model_step4.pt, written at the last step, is model.pt: one statistics computation, both ranks'
        assert_same_weights(saved_weights(directory / "model_step4.pt"), saved_weights(directory / "model.pt"))
    denoiser = load_denoiser(directory)
    y = torch.rand(2, 1, 16, 16)
    assert torch.allclose(denoiser(3 * y), 3 * denoiser(y), rtol=1e-4, atol=1e-5)  # still bias-free after DDP


def test_streaming_path_trains(tmp_path):
    cfg = prepared(tiny_config(tmp_path, NO_WANDB, "trainer.in_memory=false", "trainer.max_steps=2"))
    cell = cell_of(cfg)
    directory = train_owned(cfg, cell)
    assert lifecycle.status(directory).state.value == "done"
    assert_logged_steps_and_final_psnr(cfg, cell, directory, [2])  # trainer.log_every=2


NAN_SCRIPT = """
import json, os, sys, time, lightning as L
sys.path.insert(0, {tests!r})
from helpers import prepared, tiny_config
from gdm.cells import expand_cells
from gdm.training.fit import fit_cell
from launch.slurm import SlurmEnv
from launch.task import run_owned

class PoisonRankOne(L.Callback):  # a NaN in rank 1's weights only: its loss alone is NaN, before the backward
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 3 and trainer.global_rank == 1:
            next(module.net.parameters()).data.fill_(float("nan"))

cfg = tiny_config({root!r}, *{extra!r})
rank = int(os.environ.get("LOCAL_RANK", 0))
if rank == 0:
    prepared(cfg)
cell = [c for c in expand_cells(cfg) if c.n == 4][0]
try:
    run_owned(cfg, cell, lambda: fit_cell(cfg, cell, callbacks=[PoisonRankOne()]), SlurmEnv(rank=rank, step_tasks=2))
    error = None
except Exception as err:
    error = f"{{type(err).__name__}}: {{err}}"
json.dump({{"error": error, "t": time.time()}}, open({out!r} + f"/rank{{rank}}.json", "w"))
"""


@pytest.mark.slow
def test_a_nan_on_one_ddp_rank_stops_both_ranks_and_is_recorded(tmp_path):
    """All ranks reduce the finiteness of their losses, so they raise at the same step: no rank waits for a
    failed one in a collective, and status.json records the NaN rather than a collective timeout."""
    extra = ["wandb.mode=disabled", "trainer.devices=2", "trainer.max_steps=40", "trainer.checkpoint_every=2"]
    script = tmp_path / "ddp_nan.py"
    script.write_text(textwrap.dedent(NAN_SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path),
                                                        root=str(tmp_path / "runs"), extra=extra)))
    python_path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path, "WANDB_SILENT": "true"}
    for key in [k for k in env if k.startswith(("SLURM_", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))]:
        del env[key]
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    ends = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(end["error"] and "training loss is non-finite on 1 rank(s) at step 3" in end["error"] for end in ends)
    assert abs(ends[0]["t"] - ends[1]["t"]) < 60
    cfg = tiny_config(tmp_path / "runs", NO_WANDB, *extra)
    directory = next(c for c in expand_cells(cfg) if c.n == 4).directory(cfg)
    record = json.loads((directory / "status.json").read_text())
    assert record["state"] == "failed" and "training loss is non-finite" in record["error"], record
