"""Training images/s and MFU of the 80×80 BF-UNet at batch 512, per precision mode, with and without determinism.

    python benchmarks/device_train.py --out FILE [--smoke]

Modes: fp32 (32-true), bf16 (bf16-mixed autocast), bf16 + channels_last + torch.compile; each with the
determinism flags off (cuDNN autotuning, library defaults) and on (torch.use_deterministic_algorithms, cuDNN
deterministic, no autotuning, CUBLAS_WORKSPACE_CONFIG=:4096:8). Each determinism setting runs in its own
interpreter, because cuBLAS reads its workspace setting when its handle is made. A step is the trainer's: Adam
on the denoising loss ‖net(x + σz) − σz‖² at σ ~ U(0, 1) (the loop of benchmarks/bench_train.py, which
another module measures under Lightning). MFU is against the peak of the mode's precision (launch.plan.PEAKS,
dense): bf16; fp32 against TF32's while cuDNN allows TF32 (torch's default), else against fp32 without tensor
cores. A mode that fails (a kernel without a deterministic implementation, a compiler error) is recorded with
its error, not fatal.
--smoke: 16×16, an 8-channel 1-block UNet, batch 8, 3 steps, compile skipped: the path on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from timing import emit

from gdm.config import ModelConfig
from gdm.models import build_model
from launch.plan import PEAKS, gpu_kind, network_cost

MODES = {  # name → (precision of the step, channels_last and torch.compile)
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "bf16_channels_last_compile": ("bf16", True),
}


def set_determinism(on: bool) -> None:
    """The determinism flags: every op's deterministic kernel (an error where none exists), no autotuning."""
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def train_step(net, optimizer, clean: torch.Tensor, precision: str) -> None:
    sigma = torch.rand(len(clean), 1, 1, 1, device=clean.device)
    noise = sigma * torch.randn_like(clean)
    with torch.autocast(clean.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = (net(clean + noise) - noise).float().square().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_s(model: ModelConfig, size: int, batch: int, precision: str, fast: bool, device: torch.device,
                 warmup: int, steps: int) -> float:
    torch.manual_seed(0)
    layout = torch.channels_last if fast else torch.contiguous_format
    net = build_model(model, size).to(device, memory_format=layout)
    if fast:
        net.compile()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    clean = torch.rand(batch, 1, size, size, device=device).to(memory_format=layout)
    for _ in range(warmup):
        train_step(net, optimizer, clean, precision)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(net, optimizer, clean, precision)
    synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def workload(smoke: bool) -> tuple[ModelConfig, int, int]:
    """(model, image size, batch): the paper's 80×80 network at batch 512, or a tiny one."""
    return (ModelConfig("bf_unet", 8, 1), 16, 8) if smoke else (ModelConfig("bf_unet", 64, 3), 80, 512)


def peak_of(precision: str, peaks: dict | None) -> float | None:
    """The peak a mode is measured against: fp32 convolutions run in TF32 while cuDNN allows it (torch's default)."""
    if peaks is None:
        return None
    return peaks["tf32" if precision == "fp32" and torch.backends.cudnn.allow_tf32 else precision]


def measure(deterministic: bool, smoke: bool) -> list[dict]:
    """Every mode under one determinism setting, in this process."""
    set_determinism(deterministic)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    (model, size, batch), (warmup, steps) = workload(smoke), ((1, 3) if smoke else (3, 10))
    flops = network_cost(model, size).train_flops
    peaks = PEAKS[gpu_kind(torch.cuda.get_device_name())] if device.type == "cuda" else None
    rows = []
    for name, (precision, fast) in MODES.items():
        row = {"mode": name, "deterministic": deterministic, "image_size": size, "batch": batch,
               "cudnn_tf32": torch.backends.cudnn.allow_tf32}
        if fast and device.type != "cuda":
            rows.append(row | {"skipped": "torch.compile is measured on a GPU only"})
            continue
        try:
            rate = images_per_s(model, size, batch, precision, fast, device, warmup, steps)
        except Exception as err:  # noqa: BLE001 — a mode without a kernel is a finding, not a crash
            rows.append(row | {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"})
            continue
        achieved, peak = flops * rate, peak_of(precision, peaks)
        rows.append(row | {"images_per_s": round(rate, 2), "tflops_per_s": float(f"{achieved / 1e12:.4g}"),
                           "peak_tflops_per_s": peak / 1e12 if peak else None,
                           "mfu": float(f"{achieved / peak:.4g}") if peak else None})
    return rows


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON file to write (all modes)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device")
    parser.add_argument("--one", choices=["deterministic", "default"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one determinism setting, rows as JSON on stdout
        print(json.dumps(measure(args.one == "deterministic", args.smoke)))
        return
    rows = []
    for setting in ("default", "deterministic"):
        if not torch.cuda.is_available():  # no cuBLAS: one process does (and starts up faster)
            rows += measure(setting == "deterministic", args.smoke)
            continue
        env = os.environ | ({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"} if setting == "deterministic" else {})
        child = [sys.executable, __file__, "--one", setting, *(["--smoke"] if args.smoke else [])]
        done = subprocess.run(child, env=env, capture_output=True, text=True)
        if done.returncode:  # a crash (not a failed mode, which is a row) still leaves the other setting's rows
            rows.append({"deterministic": setting == "deterministic", "error": done.stderr[-1500:]})
            continue
        rows += json.loads(done.stdout)
    result = {"benchmark": "device_train", "device": device_name(), "torch": torch.__version__,
              "flops_per_image_train": network_cost(*workload(args.smoke)[:2]).train_flops,
              "smoke": args.smoke, "rows": rows}
    emit(result, args.out)


if __name__ == "__main__":
    main()
