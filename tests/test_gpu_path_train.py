"""The CUDA path's training step and evaluation precision, checked on the CPU.

A training step that is not a logging step reads nothing back from the device (host-device syncs counted
while a real Lightning fit runs); a NaN is still caught, named by its step, before any checkpoint; the speed
switches keep the checkpoint/model.pt keys; evaluation and validation PSNR run in true fp32 whatever the
global TF32 settings, restore them, and results.json records the precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import tiny_config, train_owned

from gdm import precision
from gdm.cells import expand_cells, expand_pairs
from gdm.training.loss import NO_STEP, NonFiniteLossError, check_first_non_finite, first_non_finite

# Tensor methods that copy a value to the host: on a CUDA tensor each waits for the device's queued work
SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def tiny_cfg(root: Path, *extra: str):
    return tiny_config(root, "wandb.mode=disabled", *extra)


def prepared(cfg):
    from gdm.data.prepare import prepare_dataset

    prepare_dataset(cfg.datasets["disks"], cfg.run_dir / "data" / "disks")
    return cfg


class SyncCounter:
    """Counts calls of the SYNCING methods while `active`, with the caller's place for the failure message."""

    def __init__(self, monkeypatch, exempt):
        self.active, self.calls, self.exempt = False, [], exempt
        for name in SYNCING:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self.wrap(name, original))

    def wrap(self, name, original):
        def counted(tensor, *args, **kwargs):
            if self.active and not self.exempt(tensor):
                import traceback

                self.calls.append(f"{name}: {traceback.format_stack(limit=4)[-2].strip()}")
            return original(tensor, *args, **kwargs)

        return counted


class CountQuietSteps(L.Callback):
    """Counts from the start of each step whose losses are not read (no log, checkpoint or end of training)."""

    def __init__(self, counter: SyncCounter):
        self.counter, self.quiet_steps = counter, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        quiet = not module.check_due(trainer.global_step + 1)
        self.counter.active, self.quiet_steps = quiet, self.quiet_steps + quiet


def adam_step_counters(module) -> set[int]:
    """Adam's `step` counts: host tensors by design (torch keeps them on the CPU unless fused or capturable),
    so reading them never waits for a device; fused Adam on CUDA does not read them at all."""
    optimizer = module.trainer.optimizers[0]
    return {id(state["step"]) for state in optimizer.state.values() if "step" in state}


def test_steps_that_do_not_log_read_nothing_back_from_the_device(tmp_path, monkeypatch):
    from gdm.training.fit import fit_cell
    from gdm.training.lit_module import DenoiserModule

    cfg = prepared(tiny_cfg(tmp_path, "trainer.max_steps=8", "trainer.log_every=4", "trainer.checkpoint_every=4",
                            "trainer.ema_decay=0.5"))
    modules = []
    counter = SyncCounter(monkeypatch, exempt=lambda t: bool(modules) and id(t) in adam_step_counters(modules[0]))
    on_train_start, on_batch_end = DenoiserModule.on_train_start, DenoiserModule.on_train_batch_end

    def remember(module):
        modules.append(module)
        on_train_start(module)

    def end_of_step(module, *args):  # the module's hook runs last in a step: stop counting after it
        on_batch_end(module, *args)
        counter.active = False

    monkeypatch.setattr(DenoiserModule, "on_train_start", remember)
    monkeypatch.setattr(DenoiserModule, "on_train_batch_end", end_of_step)
    quiet = CountQuietSteps(counter)
    fit_cell(cfg, next(iter(expand_cells(cfg))), callbacks=[quiet])
    assert quiet.quiet_steps == 6  # steps 1–3 and 5–7 of 8; steps 4 and 8 log and checkpoint
    assert counter.calls == [], "\n".join(counter.calls)


def test_the_first_non_finite_step_is_kept_and_named_with_the_ranks_and_the_steps_checked():
    record = torch.tensor(NO_STEP)
    for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf"), 0.5]):
        record = first_non_finite(record, torch.tensor(loss), step)
    assert int(record) == 2  # the first bad step, not the last
    check_first_non_finite(torch.tensor([NO_STEP, NO_STEP]), range(0, 4))  # all finite: nothing raised
    with pytest.raises(NonFiniteLossError, match=r"on 1 rank\(s\) at step 3 \(checked after step 5, covering "
                                                 r"steps 2–5\).*last good last.ckpt.*trainer.lr"):
        check_first_non_finite(torch.tensor([NO_STEP, 3, 4]), range(2, 6))
    with pytest.raises(NonFiniteLossError, match=r"on 2 rank\(s\) at step 4"):
        check_first_non_finite(torch.tensor([4, 4]), range(4, 5))


def test_a_nan_between_checks_is_caught_before_the_next_checkpoint_and_named_by_its_step(tmp_path):
    from gdm.training.fit import fit_cell

    class PoisonAt(L.Callback):  # NaN weights from step 5 on: steps 5, 6, 7 have NaN losses
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == 5:
                next(module.net.parameters()).data.fill_(float("nan"))

    cfg = prepared(tiny_cfg(tmp_path, "trainer.max_steps=12", "trainer.log_every=100", "trainer.checkpoint_every=4"))
    cell = next(iter(expand_cells(cfg)))
    with pytest.raises(NonFiniteLossError, match=r"at step 5 \(checked after step 7, covering steps 4–7\)"):
        fit_cell(cfg, cell, callbacks=[PoisonAt()])
    assert torch.load(cell.directory(cfg) / "last.ckpt", weights_only=True)["global_step"] == 4  # kept, finite


def test_adam_is_fused_only_on_cuda():
    from gdm.training.lit_module import make_adam

    weights = [torch.nn.Parameter(torch.zeros(3))]
    assert not make_adam(weights, 1e-3, torch.device("cpu")).defaults["fused"]  # the CPU trajectory is unchanged
    if torch.cuda.is_available():
        assert make_adam([torch.nn.Parameter(torch.zeros(3, device="cuda"))], 1e-3, torch.device("cuda")).defaults[
            "fused"]


def test_channels_last_and_compile_keep_the_checkpoint_and_model_keys(tmp_path):
    from gdm.training.fit import build_cell_module, prepare_network

    plain_cfg = prepared(tiny_cfg(tmp_path / "plain", "trainer.max_steps=2", "trainer.checkpoint_every=2"))
    fast_cfg = prepared(tiny_cfg(tmp_path / "fast", "trainer.max_steps=2", "trainer.checkpoint_every=2",
                                 "trainer.channels_last=true"))
    cell = next(iter(expand_cells(plain_cfg)))
    compiled = tiny_cfg(tmp_path / "compiled", "trainer.channels_last=true", "trainer.compile=true")
    module = build_cell_module(compiled, cell)[0]
    prepare_network(module, compiled)  # torch.compile in place: compiled lazily, keys unchanged
    assert list(module.state_dict()) == list(build_cell_module(plain_cfg, cell)[0].state_dict())
    (plain_ckpt, plain_model), (fast_ckpt, fast_model) = (
        (torch.load(directory / "last.ckpt", weights_only=True)["state_dict"],
         torch.load(directory / "model.pt", weights_only=True)["state_dict"])
        for directory in (train_owned(plain_cfg, cell), train_owned(fast_cfg, cell)))
    assert list(fast_ckpt) == list(plain_ckpt) and list(fast_model) == list(plain_model)
    assert all(v.is_contiguous() for v in fast_model.values())  # model.pt is written in the plain layout
    for key, value in fast_model.items():  # the same maths in another memory layout: equal to rounding
        assert torch.allclose(value, plain_model[key], rtol=1e-4, atol=1e-6), key


# --- true fp32 in evaluation --------------------------------------------------------------------------------


@pytest.fixture
def tf32_allowed():
    """TF32 allowed process-wide (as a user's `set_float32_matmul_precision("high")` and torch's cuDNN default
    do); the settings before the test are put back after it."""
    legacy = torch.get_float32_matmul_precision()
    saved = {operator: precision.fp32_precision(*operator) for operator in precision.OPERATORS}
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    yield
    torch.set_float32_matmul_precision(legacy)
    for (name, op), value in saved.items():
        getattr(getattr(torch.backends, name), op).fp32_precision = value


def tf32_state() -> tuple[str, str, str]:
    return (precision.fp32_precision("cudnn", "conv"), precision.fp32_precision("cuda", "matmul"),
            torch.get_float32_matmul_precision())


class FlagRecorder(torch.nn.Module):
    """Passes `inner` through, noting the conv and matmul fp32 precision in force at each call."""

    def __init__(self, inner: torch.nn.Module, seen: list, phase: list):
        super().__init__()
        self.inner, self.seen, self.phase = inner, seen, phase

    def forward(self, y):
        self.seen.append((self.phase[0], *tf32_state()))
        return self.inner(y)


def test_true_fp32_turns_tf32_off_inside_and_restores_it(tf32_allowed):
    assert tf32_state() == ("tf32", "tf32", "high")
    with precision.true_fp32():
        assert tf32_state() == ("ieee", "ieee", "highest")  # legacy and new matmul settings agree
        assert precision.current_precision().record() == {"matmul": "ieee", "conv": "ieee", "dtype": "float32"}
    assert tf32_state() == ("tf32", "tf32", "high")
    with pytest.raises(ValueError), precision.true_fp32():
        raise ValueError("restored on errors too")
    assert tf32_state() == ("tf32", "tf32", "high")


def test_validation_psnr_runs_in_true_fp32(tf32_allowed):
    from gdm.config import ModelConfig, TrainerConfig
    from gdm.models import build_model
    from gdm.training.lit_module import DenoiserModule

    seen, phase = [], ["validation"]
    net = FlagRecorder(build_model(ModelConfig(name="bf_unet", channels=8, blocks=1), 16), seen, phase)
    module = DenoiserModule(net, TrainerConfig(), seed=0, psnr_sigmas=[0.1], psnr_batch=4,
                            val_batches={"test": torch.rand(4, 1, 16, 16)})
    assert set(module.validation_psnr()) == {"val/psnr_test_sigma0.1"}
    assert seen and set(seen) == {("validation", "ieee", "ieee", "highest")}
    assert tf32_state() == ("tf32", "tf32", "high")


def test_evaluation_samples_measures_psnr_and_jacobians_in_true_fp32_and_records_it(tmp_path, monkeypatch,
                                                                                   tf32_allowed):
    from gdm import evaluate
    from gdm.analysis import jacobian, psnr
    from gdm.training import model_file
    cfg = prepared(tiny_cfg(tmp_path, "trainer.max_steps=2", "eval.jacobian.enabled=true",
                            "eval.jacobian.num_images=1", "eval.jacobian.chunk=64", "eval.optimal_reference=false",
                            "eval.gaussian_reference=false"))
    pair = expand_pairs(cfg)[0]
    for cell in pair.cells:
        train_owned(cfg, cell)  # done, with the checksums eval_pair verifies
    seen, phase = [], ["loading"]
    load = model_file.load_denoiser
    monkeypatch.setattr(model_file, "load_denoiser", lambda *a, **k: FlagRecorder(load(*a, **k), seen, phase).eval())

    def in_phase(name, function):
        def run(*args, **kwargs):
            phase[0] = name
            return function(*args, **kwargs)

        return run

    monkeypatch.setattr(evaluate, "_sample", in_phase("sampler", evaluate._sample))
    monkeypatch.setattr(psnr, "per_image_per_split", in_phase("psnr", psnr.per_image_per_split))
    monkeypatch.setattr(jacobian, "jacobian", in_phase("jacobian", jacobian.jacobian))
    evaluate.eval_pair(cfg, pair)
    assert {p for p, *_ in seen} == {"sampler", "psnr", "jacobian"}
    assert {tuple(flags) for _, *flags in seen} == {("ieee", "ieee", "highest")}
    assert tf32_state() == ("tf32", "tf32", "high")
    stored = json.loads((pair.directory(cfg) / "results.json").read_text())
    assert stored["precision"] == {"matmul": "ieee", "conv": "ieee", "dtype": "float32"}
