"""Host memory of loading a training split: the block loader (gdm.data.store.load_split) against the loader it
replaced (rows copied out of the memmap, cast to float32, divided by 255: three arrays), for imported photos
(uint8 cache) and synthetic images (float32 cache), n images of 80×80 from a verified cache.

Each load runs in a fresh subprocess, which reports its peak RSS (VmHWM) over its RSS before the load and
the peak of numpy's and Python's allocations (tracemalloc), both as multiples of the split's float32 size
(n·80·80·4 bytes). Target: the block loader's peak RSS ≤ 1.2× (one output plus one 1 MiB block).

Writes benchmarks/results/bench_data_memory.json (and prints it).
Usage: python benchmarks/bench_data_memory.py [--n 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gdm.data.manifest import FORMAT, write_manifest  # noqa: E402
from gdm.data.pixels import to_unit  # noqa: E402
from gdm.data.shards import write_split  # noqa: E402
from gdm.data.splits import split_slice  # noqa: E402
from gdm.data.store import cached_arrays, group_of, load_manifest, load_split, verify_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_data_memory.json"
SIDE = 80
TARGET_RSS_RATIO = 1.2


def legacy_load_split(data_dir: Path, split: str, n: int) -> torch.Tensor:
    """The loader before the block reader (as in tests/test_data_memory.py): the 'before' of this benchmark."""
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    stored = cached_arrays(data_dir, group_of(split), manifest)[0]
    return torch.from_numpy(to_unit(np.array(stored[rows]))).unsqueeze(1)


LOADERS = {"before": legacy_load_split, "after": load_split}


def prepared(data_dir: Path, dtype: str, n: int) -> Path:
    """A prepared dataset of 2n stored images (pool) and 10 test images, caches built: what a job loads from."""
    rng = np.random.default_rng(0)
    pool = (rng.integers(0, 256, (2 * n, SIDE, SIDE), dtype=np.uint8) if dtype == "uint8"
            else rng.random((2 * n, SIDE, SIDE), dtype=np.float32))
    data_dir.mkdir(parents=True)
    shards = {g: write_split(data_dir, g, images, None, 10_000) for g, images in (("test", pool[:10]), ("pool", pool))}
    write_manifest(data_dir, {"format": FORMAT, "image_size": SIDE, "pool_size": len(pool), "test_size": 10,
                              "param_names": [], "shards": shards})
    verify_data(data_dir)
    return data_dir


def rss_kib() -> tuple[int, int]:
    """(resident set size now, its peak so far) of this process, KiB. Linux's VmRSS / VmHWM: the peak belongs to
    this program's own memory map, whereas ru_maxrss also keeps the peak of the forked parent's image before exec
    (inflated here by the parent's dataset preparation). Elsewhere ru_maxrss for both (KiB on Linux, bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak, peak


def child(loader: str, data_dir: Path, n: int) -> dict:
    """One load in this (fresh) process: peak RSS over the RSS before, peak traced allocation, seconds."""
    split_bytes = n * SIDE * SIDE * 4
    rss_before = rss_kib()[0]
    tracemalloc.start()
    start = time.perf_counter()
    images = LOADERS[loader](data_dir, "A", n)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    peak_rss = rss_kib()[1]
    assert images.shape == (n, 1, SIDE, SIDE) and images.dtype == torch.float32
    return {"peak_rss_over_split": (peak_rss - rss_before) * 1024 / split_bytes,
            "traced_peak_over_split": traced_peak / split_bytes, "seconds": seconds}


def measure(loader: str, data_dir: Path, n: int) -> dict:
    command = [sys.executable, __file__, "--child", loader, str(data_dir), "--n", str(n)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def bench(n: int) -> dict:
    results: dict = {"device": "cpu", "torch": torch.__version__, "n": n, "image_size": SIDE,
                     "split_float32_mb": n * SIDE * SIDE * 4 / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("uint8", "float32"):
            data_dir = prepared(Path(tmp) / dtype, dtype, n)
            for loader in LOADERS:
                results[f"{dtype}_{loader}"] = measure(loader, data_dir, n)
    results["target_peak_rss_over_split"] = TARGET_RSS_RATIO
    results["meets_target"] = all(results[f"{d}_after"]["peak_rss_over_split"] <= TARGET_RSS_RATIO
                                  for d in ("uint8", "float32"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="images in the split (80×80)")
    parser.add_argument("--quick", action="store_true", help="n = 2 000")
    parser.add_argument("--child", nargs=2, metavar=("LOADER", "DATA_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file written")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.n)))
        return
    results = bench(2_000 if args.quick else args.n)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
