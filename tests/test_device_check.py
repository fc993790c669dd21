"""benchmarks/device_check.sh end to end on the CPU (SMOKE=1, tiny sizes), so the GPU check cannot rot unseen."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("device_check", "device_tests", "device_train", "device_eval", "device_quickstart")


def numbers(value):
    """Every int and float inside a JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.mark.slow
def test_smoke_run_writes_every_benchmark_with_finite_numbers(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/device_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + (out / "device_check.log").read_text()
    results = {name: json.loads((out / f"{name}.json").read_text()) for name in OUTPUTS}
    for name, result in results.items():
        assert result["device"].startswith("cpu"), name
        assert all(math.isfinite(v) for v in numbers(result)), name
    stages = results["device_check"]["stages"]
    assert set(stages) == {"tests", "train", "eval", "quickstart", "bench_train"}
    assert all(s["returncode"] == 0 for s in stages.values()), stages
    assert results["device_tests"]["tests"] >= 2 and results["device_tests"]["failures"] == 0  # skipped on a CPU
    measured = [r for r in results["device_train"]["rows"] if "images_per_s" in r]
    assert {(r["mode"], r["deterministic"]) for r in measured} == {(m, d) for m in ("fp32", "bf16")
                                                                   for d in (False, True)}
    assert all(r["images_per_s"] > 0 for r in measured)
    jacobians = results["device_eval"]["jacobian"]
    assert [j["tf32"] for j in jacobians] == [True, False]
    assert all(j["homogeneity_error"] < 1e-4 for j in jacobians)  # bias-free: J y = f(y) up to rounding
    assert results["device_eval"]["sampler"]["passes_per_s"] > 0
    quickstart = results["device_quickstart"]
    assert quickstart["returncode"] == 0 and quickstart["cells_done"] == quickstart["cells"] == 2
    assert quickstart["pairs_done"] == quickstart["pairs"] == 1 and quickstart["planned_wall_s"] > 0
