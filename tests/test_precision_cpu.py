"""The GPU speed switches on a CPU: bf16-mixed (CPU autocast), channels_last and torch.compile (inductor,
with the machine's C compiler) each train a tiny cell with finite losses and resume from last.ckpt.

Without these, the three paths would run only where a GPU is lent (tests/test_gpu.py). Each test
checks that its switch really took effect (bf16 activations, channels_last weights, a compiled graph),
stops the run after the checkpoint at step 3, resumes it to step 6, and loads the model it wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import prepared, tiny_config
from lightning_helpers import Stop

from gdm.cells import expand_cells
from gdm.training.fit import fit_cell
from gdm.training.model_file import load_denoiser

STOP_AT, MAX_STEPS = 3, 6
# One cell, stopped after the checkpoint at STOP_AT and resumed to MAX_STEPS, a loss logged every step.
SETTINGS = ["wandb.mode=disabled", "n_train=[4]", "splits=[A]", f"trainer.max_steps={MAX_STEPS}",
            f"trainer.checkpoint_every={STOP_AT}", "trainer.log_every=1"]


class Probe(L.Callback):
    """What the network looked like once training (re)started, and the dtype of its first activations."""

    def __init__(self):
        self.start_step: int | None = None
        self.channels_last: bool | None = None
        self.compiled: bool | None = None
        self.activation_dtype: torch.dtype | None = None

    def on_train_start(self, trainer, module):  # after a checkpoint, if any, was restored
        self.start_step = trainer.global_step
        convs = [p for p in module.net.parameters() if p.dim() == 4]
        self.channels_last = all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
        self.compiled = getattr(module.net, "_compiled_call_impl", None) is not None
        first_conv = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(self._record_dtype)

    def _record_dtype(self, conv, inputs, output):
        if torch.is_grad_enabled() and self.activation_dtype is None:  # a training step, not validation
            self.activation_dtype = output.dtype


def losses(directory: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def train_with_resume(tmp_path: Path, switch: str) -> tuple[Path, Probe, Probe]:
    """Train to step 3, stop, resume to step 6; the probes of the first and the resumed run."""
    cfg = prepared(tiny_config(tmp_path, *SETTINGS, switch))
    cell = expand_cells(cfg)[0]
    first, resumed = Probe(), Probe()
    with pytest.raises(RuntimeError, match="simulated preemption"):
        fit_cell(cfg, cell, callbacks=[first, Stop(at=STOP_AT)])
    assert torch.load(cell.directory(cfg) / "last.ckpt", weights_only=True)["global_step"] == STOP_AT
    fit_cell(cfg, cell, callbacks=[resumed])
    directory = cell.directory(cfg)
    assert (first.start_step, resumed.start_step) == (0, STOP_AT)  # resumed, not restarted
    loss = losses(directory)
    assert sorted(loss) == list(range(1, MAX_STEPS + 1)) and all(math.isfinite(v) for v in loss.values()), loss
    denoiser = load_denoiser(directory / "model.pt")
    y = torch.rand(2, 1, 16, 16)
    assert torch.allclose(denoiser(3 * y), 3 * denoiser(y), rtol=1e-4, atol=1e-5)  # still bias-free
    return directory, first, resumed


def test_bf16_mixed_on_cpu_trains_and_resumes(tmp_path):
    _, first, resumed = train_with_resume(tmp_path, "trainer.precision=bf16-mixed")
    assert first.activation_dtype == resumed.activation_dtype == torch.bfloat16  # CPU autocast ran


def test_channels_last_on_cpu_trains_and_resumes(tmp_path):
    _, first, resumed = train_with_resume(tmp_path, "trainer.channels_last=true")
    assert first.channels_last and resumed.channels_last  # also after the checkpoint was loaded into it
    assert first.activation_dtype == torch.float32


@pytest.mark.slow
def test_compile_on_cpu_trains_and_resumes(tmp_path):
    from torch._dynamo.utils import counters

    counters.clear()
    directory, first, resumed = train_with_resume(tmp_path, "trainer.compile=true")
    assert first.compiled and resumed.compiled
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the network: the compiled path ran
    keys = torch.load(directory / "model.pt", weights_only=True)["state_dict"].keys()
    assert not any("_orig_mod" in key for key in keys)  # model.pt keeps the plain network's keys
