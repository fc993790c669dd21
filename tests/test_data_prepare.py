"""Prepared datasets: split invariants, manifest and shard integrity, idempotence, refusals, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gdm.config import DataConfig
from gdm.data.errors import DataError
from gdm.data.families import FAMILIES
from gdm.data.prepare import prepare_dataset
from gdm.data.shards import read_split, write_split
from gdm.data.splits import split_indices
from gdm.data.store import load_manifest, load_params, load_split


def tiny(**changes) -> DataConfig:
    fields = {"family": "disks", "image_size": 12, "pool_size": 40, "test_size": 6, "shard_size": 7, "seed": 1}
    return DataConfig(**{**fields, **changes})


@pytest.fixture
def prepared(tmp_path):
    data_dir = tmp_path / "disks"
    return data_dir, prepare_dataset(tiny(), data_dir)


def as_rows(images: torch.Tensor) -> set:
    return {tuple(x.flatten().tolist()) for x in images}


def test_splits_are_disjoint_nested_and_match_the_pool(prepared):
    data_dir, manifest = prepared
    a2, a20, b2, b20 = (load_split(data_dir, s, n) for s, n in (("A", 2), ("A", 20), ("B", 2), ("B", 20)))
    test = load_split(data_dir, "test")
    assert a20.shape == (20, 1, 12, 12) and a20.dtype == torch.float32 and test.shape == (6, 1, 12, 12)
    assert 0 <= a20.min() and a20.max() <= 1
    torch.testing.assert_close(a20[:2], a2)  # A_n is a prefix of A_10n
    torch.testing.assert_close(b20[-2:], b2)  # B_n is a suffix of B_10n
    assert not as_rows(a20) & as_rows(b20) and not as_rows(test) & (as_rows(a20) | as_rows(b20))
    pool = np.load(data_dir / "pool_indices.npy")
    test_idx = np.load(data_dir / "test_indices.npy")
    assert not set(pool) & set(test_idx) and len(set(pool)) == 40
    torch.testing.assert_close(load_split(data_dir, "A"), load_split(data_dir, "A", 20))


def test_split_indices_hold_test_first():
    test, pool = split_indices(100, 10, 80, seed=5)
    order = np.random.default_rng(5).permutation(100)
    np.testing.assert_array_equal(test, order[:10])
    np.testing.assert_array_equal(pool, order[10:90])
    with pytest.raises(DataError, match="at most 90"):
        split_indices(100, 10, 95, seed=5)


def test_n_too_large_states_the_limit(prepared):
    data_dir, _ = prepared
    with pytest.raises(DataError, match="largest n allowed is 20"):
        load_split(data_dir, "B", 21)
    with pytest.raises(DataError, match="split 'C' is unknown"):
        load_split(data_dir, "C", 2)


def test_params_follow_the_images(prepared):
    from gdm.data.synthetic.disks import render

    data_dir, manifest = prepared
    params, images = load_params(data_dir, "B", 5), load_split(data_dir, "B", 5)
    assert params.shape == (5, 5) and manifest["param_names"][0] == "cx"
    rendered = torch.from_numpy(np.round(render(params.double().numpy(), 12) * 255) / 255).float()
    torch.testing.assert_close(rendered, images[:, 0], atol=1 / 255 + 1e-6, rtol=0)


def test_deterministic_and_idempotent(tmp_path, prepared):
    data_dir, manifest = prepared
    again = prepare_dataset(tiny(), data_dir)
    assert again == manifest
    other = prepare_dataset(tiny(), tmp_path / "copy")
    assert other["shards"] == manifest["shards"] and other["index_sha256"] == manifest["index_sha256"]
    torch.testing.assert_close(load_split(tmp_path / "copy", "A", 5), load_split(data_dir, "A", 5))


def test_changed_config_is_refused(prepared):
    data_dir, _ = prepared
    with pytest.raises(DataError, match=r"another config \(seed: 1 -> 2\)"):
        prepare_dataset(tiny(seed=2), data_dir)
    with pytest.raises(DataError, match="params"):
        prepare_dataset(tiny(params={"radius": [0.2, 0.3]}), data_dir)


def test_changed_photo_source_is_refused(tmp_path):
    from PIL import Image

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    config = tiny(family="folder", source=str(faces), pool_size=4, test_size=2, shard_size=2)
    prepare_dataset(config, tmp_path / "data")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(faces / "6.png")
    with pytest.raises(DataError, match="source .* changed"):
        prepare_dataset(config, tmp_path / "data")


def test_tampered_manifest_is_refused(prepared):
    data_dir, _ = prepared
    manifest = json.loads((data_dir / "manifest.json").read_text())
    manifest["pool_size"] = 38
    (data_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="manifest.json was modified"):
        load_split(data_dir, "A", 2)


@pytest.mark.parametrize(("damage", "message"), [
    ("flip", "does not match its checksum"), ("truncate", "does not match its checksum"), ("delete", "is missing")])
def test_a_damaged_shard_is_named_by_the_next_run_while_the_cache_is_valid(prepared, damage, message):
    from gdm.data.store import verify_data

    data_dir, manifest = prepared
    verify_data(data_dir)  # the driver, before fan-out: shards checked, caches built and stamped
    shard = data_dir / manifest["shards"]["pool"][2]["name"]
    raw = bytearray(shard.read_bytes())
    raw[1500] ^= 0xFF
    {"flip": lambda: shard.write_bytes(bytes(raw)), "truncate": lambda: shard.write_bytes(bytes(raw[:1000])),
     "delete": shard.unlink}[damage]()
    load_split(data_dir, "A", 2)  # jobs trust the verified cache and never re-read the shards …
    with pytest.raises(DataError, match=f"shard .*{shard.name} {message}"):
        verify_data(data_dir)  # … but the next run's check names the damaged shard, the cache being valid
    load_split(data_dir, "test")  # the test shards are intact


def test_tampered_cache_is_rebuilt_even_with_size_and_mtime_kept(prepared):
    import os

    data_dir, _ = prepared
    before = load_split(data_dir, "B")  # B = the end of the pool: holds the cache's last bytes
    cache = data_dir / "pool.images.npy"
    stat = cache.stat()
    raw = bytearray(cache.read_bytes())
    raw[-5] ^= 0xFF  # a flipped pixel: same size …
    cache.write_bytes(bytes(raw))
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # … same modification time
    assert not np.array_equal(np.load(cache)[-1], (before[-1, 0] * 255).round().numpy().astype(np.uint8))
    torch.testing.assert_close(load_split(data_dir, "B"), before)  # checked by content, rebuilt from the shards


def test_interrupted_prepare_is_completed(tmp_path, prepared):
    data_dir, manifest = prepared
    (data_dir / "manifest.json").unlink()  # as if killed before the manifest, the last write
    (data_dir / "pool-000001.tar").write_bytes(b"half a shard")
    (data_dir / ".pool-000009.tar.abc.tmp").write_bytes(b"temp")
    with pytest.raises(DataError, match="not prepared"):
        load_split(data_dir, "A", 2)
    assert prepare_dataset(tiny(), data_dir) == manifest
    assert not list(data_dir.glob("*.tmp")) and load_split(data_dir, "A", 20).shape[0] == 20


def test_shard_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images, params = rng.integers(0, 256, (11, 5, 5), dtype=np.uint8), rng.normal(size=(11, 3)).astype(np.float32)
    records = write_split(tmp_path, "pool", images, params, shard_size=4)
    assert [r["count"] for r in records] == [4, 4, 3] and all("." not in r["name"][:-4] for r in records)
    back, back_params = read_split(tmp_path, records, 5)
    np.testing.assert_array_equal(back, images)
    np.testing.assert_array_equal(back_params, params)
    no_params, none = read_split(tmp_path / "b", write_split(tmp_path / "b", "test", images, None, 20), 5)
    assert none is None and np.array_equal(no_params, images)


def test_manifest_records_checksums(prepared):
    data_dir, manifest = prepared
    assert load_manifest(data_dir) == manifest
    assert len(manifest["shards"]["pool"]) == 6 and len(manifest["shards"]["test"]) == 1
    assert set(manifest["index_sha256"]) == {"pool", "test"} and manifest["deduplicated"] == 0
    assert manifest["family"] == "disks" and manifest["params"] == FAMILIES["disks"].defaults | {}


def test_a_shard_is_the_ustar_tar_the_standard_library_writes(tmp_path):
    """webdataset.TarWriter with the fixed metadata gives, byte for byte, the tar that `tarfile` writes by
    hand: members <key>.img.npy, .index.txt, .params.npy in that order, mtime 0, mode 0444, no owner."""
    import io
    import tarfile

    from gdm.data.shards import npy_bytes, write_shard

    images = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    params = np.random.default_rng(1).random((3, 2))
    write_shard(tmp_path / "s.tar", images, params, start=7)
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for offset in range(3):
            for suffix, payload in (("img.npy", npy_bytes(images[offset])), ("index.txt", str(7 + offset).encode()),
                                    ("params.npy", npy_bytes(params[offset]))):
                info = tarfile.TarInfo(f"{7 + offset:08d}.{suffix}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o444
                tar.addfile(info, io.BytesIO(payload))
    assert (tmp_path / "s.tar").read_bytes() == expected.getvalue()
