"""Host memory of loading a split (gdm.data.store.load_split) and of keeping it (gdm.data.module): a bound on
the peak allocation, bit identity with the loader it replaced, and no host copy left once the images are handed
over. benchmarks/bench_data_memory.py measures the same at 80×80 and n = 20 000 (peak RSS)."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import numpy as np
import pytest
import torch

from gdm.data import store
from gdm.data.errors import DataError
from gdm.data.manifest import FORMAT, write_manifest
from gdm.data.module import CellDataModule
from gdm.data.pixels import to_unit
from gdm.data.shards import write_split
from gdm.data.splits import split_slice
from gdm.data.store import cached_arrays, group_of, load_manifest, load_split, verify_data


def prepared_from(data_dir, pool: np.ndarray, test: np.ndarray, shard_size: int = 1000):
    """A prepared dataset holding exactly these stored images ([N, S, S], uint8 or float32), written with the
    shard and manifest writers prepare_dataset uses (no family needed); its caches built and stamped."""
    data_dir.mkdir(parents=True)
    shards = {g: write_split(data_dir, g, images, None, shard_size) for g, images in (("test", test), ("pool", pool))}
    write_manifest(data_dir, {"format": FORMAT, "image_size": pool.shape[-1], "pool_size": len(pool),
                              "test_size": len(test), "param_names": [], "shards": shards})
    verify_data(data_dir)
    return data_dir


def legacy_load_split(data_dir, split: str, n: int | None = None) -> torch.Tensor:
    """The loader this change replaced (rows copied, cast, divided: three arrays): the reference of both tests."""
    manifest = load_manifest(data_dir)
    rows = split_slice(split, n, manifest["pool_size"], manifest["test_size"])
    stored = cached_arrays(data_dir, group_of(split), manifest)[0]
    return torch.from_numpy(to_unit(np.array(stored[rows]))).unsqueeze(1)


def stored_images(dtype, count: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (count, side, side), dtype=np.uint8)
    return rng.random((count, side, side), dtype=np.float32)


@pytest.fixture(params=[np.uint8, np.float32], ids=["uint8", "float32"])
def small(request, tmp_path):
    return prepared_from(tmp_path / "data", stored_images(request.param, 50, 9, 0),
                         stored_images(request.param, 7, 9, 1), shard_size=8)


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == torch.float32 and torch.equal(a.view(torch.int32),
                                                                                      b.view(torch.int32))


@pytest.mark.parametrize("block_rows", [1, 3, 1000])  # blocks of one row, uneven blocks, one block
def test_loaded_split_is_byte_identical_to_the_replaced_loader(small, monkeypatch, block_rows):
    monkeypatch.setattr(store, "BLOCK_BYTES", block_rows * 9 * 9 * 4 + 5)
    for split, n in (("A", 1), ("A", 25), ("B", 4), ("B", 25), ("test", None), ("test", 3)):
        assert same_bytes(load_split(small, split, n), legacy_load_split(small, split, n)), (split, n)


def test_loading_on_the_cpu_device_is_the_host_load(small):
    assert same_bytes(load_split(small, "B", 11, device="cpu"), load_split(small, "B", 11))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loading_onto_a_gpu_gives_the_same_bytes(small):
    on_gpu = load_split(small, "A", 25, device="cuda")
    assert on_gpu.device.type == "cuda" and same_bytes(on_gpu.cpu(), legacy_load_split(small, "A", 25))


def peak_allocation(load) -> tuple[int, torch.Tensor]:
    """Peak bytes that numpy and Python allocated during load() beyond what was allocated before (tracemalloc;
    numpy reports its allocations to it), and the result."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = load()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["uint8", "float32"])
def test_peak_allocation_of_a_load_stays_below_1_2_times_the_split(tmp_path, dtype):
    """Loading n = 400 images of 128×128 (26.2 MB as float32) allocates the output and one 1 MiB block (and the
    stamp check's 1 MiB); the replaced loader allocated 2.25× (uint8: rows, cast, division) or 1× (float32)."""
    data_dir = prepared_from(tmp_path / "data", stored_images(dtype, 800, 128, 0), stored_images(dtype, 2, 128, 1))
    split_bytes = 400 * 128 * 128 * 4
    peak, images = peak_allocation(lambda: load_split(data_dir, "B", 400))
    assert split_bytes <= peak < 1.2 * split_bytes, peak / split_bytes  # the output itself is counted
    legacy_peak, legacy = peak_allocation(lambda: legacy_load_split(data_dir, "B", 400))
    assert same_bytes(images, legacy)
    if dtype == np.uint8:  # the measure sees the replaced loader's copies
        assert legacy_peak > 2.2 * split_bytes, legacy_peak / split_bytes


def test_a_cache_cut_short_is_named(tmp_path):
    path = tmp_path / "pool.images.npy"
    np.save(path, np.zeros((10, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="pool.images.npy ends before row 10"):
        list(store.stored_blocks(path, slice(0, 10), 1 << 20))


def test_released_images_leave_no_host_copy_in_the_data_module(small):
    """After the module takes the resident images (DenoiserModule.on_train_start) and moves them to its device,
    the data module holds no reference to them: the validation head is a copy of its own."""
    data = CellDataModule(small, "A", 20, batch_size=4, val_images=5)
    data.setup("fit")
    head_before = data.val_batches()["train"].clone()
    images = data.release_images()
    assert data.images is None and images.shape == (20, 1, 9, 9)
    alive = weakref.ref(images)
    on_device = images.to(torch.float64)  # stands for .to(cuda): a copy elsewhere
    del images
    gc.collect()
    assert alive() is None  # nothing in the data module (nor its validation batches) keeps the host tensor
    head = data.val_batches()["train"]
    assert torch.equal(head, head_before) and torch.equal(head.double(), on_device[:5])
    assert head.untyped_storage().nbytes() == 5 * 9 * 9 * 4  # its own storage, not a view of the split


def test_streaming_release_keeps_validation_from_disk(small):
    data = CellDataModule(small, "B", 20, batch_size=4, in_memory=False, val_images=3)
    data.setup("fit")
    assert data.release_images() is None
    assert same_bytes(data.val_batches()["train"], legacy_load_split(small, "B", 3))
