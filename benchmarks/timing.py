"""What the benchmarks share: wall time of a call (synchronised on CUDA), rounds that alternate the
contenders so drift on a shared machine hits each alike, and writing a result as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import torch


def seconds(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of fn(); on CUDA the queued work before and after is waited for."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternating(fns: dict[str, Callable[[], object]], rounds: int, device: str) -> dict[str, list[float]]:
    """Seconds of each function in each of `rounds` rounds that run them in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(seconds(fn, device))
    return times


def emit(result: dict, out: str | None) -> None:
    """Print `result` as JSON, and write it to `out` too when given."""
    text = json.dumps(result, indent=2)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")
    print(text)
