"""One tar reader (gdm.data.shards.tar_samples, webdataset's tar iteration) for the cache build and the stream:
the same samples through both paths, and the same error naming the file when a shard is damaged."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from gdm.config import DataConfig
from gdm.data.errors import DataError
from gdm.data.prepare import prepare_dataset
from gdm.data.shards import npy_bytes, read_shard, read_split, tar_samples, write_shard
from gdm.data.streaming import make_stream


def prepared(tmp_path, shard_size: int):
    data = DataConfig(family="disks", image_size=6, pool_size=30, test_size=3, shard_size=shard_size, seed=0)
    return tmp_path / "data", prepare_dataset(data, tmp_path / "data")


def stored_images(count: int, side: int) -> np.ndarray:
    return np.random.default_rng(count).random((count, side, side), dtype=np.float32)


def test_the_reader_yields_each_sample_with_its_members_in_stored_order(tmp_path):
    images, params = stored_images(5, 4), np.arange(10.0).reshape(5, 2)
    write_shard(tmp_path / "s.tar", images, params, start=3)
    samples = list(tar_samples(tmp_path / "s.tar"))
    assert [s["__key__"] for s in samples] == ["00000003", "00000004", "00000005", "00000006", "00000007"]
    assert all(s["__url__"] == str(tmp_path / "s.tar") for s in samples)
    assert [s["index.txt"] for s in samples] == [b"3", b"4", b"5", b"6", b"7"]
    assert all(s["img.npy"] == npy_bytes(images[k]) and s["params.npy"] == npy_bytes(params[k])
               for k, s in enumerate(samples))


def test_the_stream_and_the_cache_build_decode_the_same_images(tmp_path):
    """Every streamed batch holds, at its positions, exactly the rows read_split decodes from the same shards."""
    data_dir, manifest = prepared(tmp_path, shard_size=4)
    decoded, params = read_split(data_dir, manifest["shards"]["pool"], 6)
    assert decoded.shape == (30, 6, 6) and params.shape[0] == 30
    for split in ("A", "B"):
        for images, index in make_stream(data_dir, split, 12, 3, seed=1, epoch_size=5, with_index=True):
            assert torch.equal(images[:, 0], torch.from_numpy(decoded[index.numpy()]))


def hand_tar(path, members: list[tuple[str, bytes]]) -> None:
    """A ustar tar of these (name, payload) members, written with the standard library."""
    with tarfile.open(path, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


IMAGE = npy_bytes(np.zeros((2, 2), np.float32))
DAMAGED = {
    "not a tar": ("garbage", None, "is unreadable"),
    "cut short": ("cut", None, "is unreadable"),
    "index disagrees": ([("00000000.img.npy", IMAGE), ("00000000.index.txt", b"1")], None, "claims index 1"),
    "index missing": ([("00000000.img.npy", IMAGE)], None, "is unreadable .*index.txt"),
    "image not npy": ([("00000000.img.npy", b"nope"), ("00000000.index.txt", b"0")], None, "is unreadable"),
    "member twice": ([("00000000.img.npy", IMAGE), ("00000000.index.txt", b"0"), ("00000000.index.txt", b"0")],
                     None, "is unreadable .*duplicate"),
}


def damage(path, how) -> None:
    if how == "garbage":
        path.write_bytes(b"this is not a tar file at all" * 40)
    elif how == "cut":
        write_shard(path, stored_images(4, 8), None, start=0)
        path.write_bytes(path.read_bytes()[:1200])  # ends inside the second member's data
    else:
        hand_tar(path, how)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_shard_is_named_by_the_cache_build_and_by_the_stream(tmp_path, case):
    how, _, message = DAMAGED[case]
    data_dir, _ = prepared(tmp_path, shard_size=8)
    shard = data_dir / "pool-000000.tar"
    damage(shard, how)
    with pytest.raises(DataError, match=f"shard {shard} {message}" if "claims" not in message else
                       f"shard {shard}: sample 00000000 {message}"):
        list(read_shard(shard))
    with pytest.raises(DataError, match=str(shard)):  # verify=False: the reader itself, not the checksum, objects
        list(make_stream(data_dir, "A", 4, 1, seed=0, epoch_size=1, verify=False))
