"""Config schema: YAML + overrides, and errors that name the offending key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from gdm.config import ConfigError, to_yaml
from gdm.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_loads_with_override():
    cfg = load_experiment(REPO / "configs/quickstart.yaml", ["trainer.max_steps=50", "n_train=[1,10]"])
    assert cfg.trainer.max_steps == 50
    assert cfg.n_train == [1, 10]
    assert cfg.datasets["disks"].image_size == 32


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_experiment(REPO / "configs/quickstart.yaml", ["sampler.h0=0.2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_experiment(path) == cfg


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["trainer.max_stepz=5"], ["trainer.max_stepz", "unknown"]),
        (["trainer.max_steps=lots"], ["trainer.max_steps"]),
        (["trainer.sigma_min=-0.1"], ["trainer.sigma_min", "0 ≤ sigma_min"]),
        (["n_train=[5000]"], ["n_train", "largest n allowed is 1000"]),
        (["datasets.disks.image_size=30"], ["datasets.disks.image_size", "divisible"]),
        (["datasets.disks.family=faces"], ["datasets.disks.family", "disks"]),
        (["trainer.precision=16"], ["trainer.precision", "bf16-mixed"]),
        (["launch.executor=kubernetes"], ["launch.executor", "slurm"]),
        (["splits=[A,C]"], ["splits", "A, B"]),
        (["sampler.sigma_end=0"], ["sampler.sigma_end"]),
        (["model.name=transformer"], ["image_size", "transformer"]),
        (["trainer.batch_size=33", "trainer.devices=2"], ["trainer.batch_size", "divisible"]),
        (["max_steps"], ["key=value"]),
        (["eval.similarity=l2"], ["eval.memorization_threshold", "negative"]),
        (["eval.jacobian.chunk=0"], ["eval.jacobian.chunk", "≥ 1"]),
        (["eval.psnr_sigmas=[0.1,0]"], ["eval.psnr_sigmas", "> 0"]),
        (["name=.."], ["name", "'..'"]),
        (["name=."], ["name", "root/<name>"]),
        (["name=/tmp/elsewhere"], ["name", "without '/'"]),
        (["sampler.beta=0"], ["sampler.beta", "0 < beta", "never reaches sampler.sigma_end"]),
        (["sampler.sigma_end=1.0"], ["sampler.sigma_end", "sigma_end must be < sigma_0"]),
        (["sampler.sigma_end=0.5", "sampler.sigma_0=0.2"], ["sampler.sigma_end", "sampler.sigma_0"]),
        (["sampler.diverge_pixel_margin=-0.5"], ["sampler.diverge_pixel_margin", "≥ 0", "null"]),
        (["trainer.loss_weighting=snr"], ["trainer.loss_weighting", "uniform, inverse_sigma"]),
        (["trainer.loss_weight_floor=0"], ["trainer.loss_weight_floor", "> 0", "infinite at σ = 0"]),
        (["trainer.loss_weight_power=-1"], ["trainer.loss_weight_power", "> 0"]),
        (["trainer.precise_bn_batches=-1"], ["trainer.precise_bn_batches", "≥ 0"]),
        (["trainer.replicates=0"], ["trainer.replicates", "≥ 1", "1: one model per cell"]),
        (["trainer.max_steps=100", "trainer.keep_models_at=[50,200]"],
         ["trainer.keep_models_at", "[50, 200]", "trainer.max_steps (100)", "raise trainer.max_steps"]),
        (["trainer.keep_models_at=[0]"], ["trainer.keep_models_at", "in 1 …"]),
        (["trainer.keep_models_at=[150,50,50]"], ["trainer.keep_models_at", "ascending", "e.g. [50, 150]"]),
    ],
)
def test_bad_values_name_their_key(overrides, fragments):
    with pytest.raises(ConfigError) as caught:
        load_experiment(REPO / "configs/quickstart.yaml", overrides)
    for fragment in fragments:
        assert fragment in str(caught.value), str(caught.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("trainer:\n  warmup: 3\n")
    with pytest.raises(ConfigError, match="trainer.warmup"):
        load_experiment(unknown)


def test_datasets_of_a_file_replace_the_default(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("datasets:\n  waves:\n    family: sines\n    image_size: 16\n")
    cfg = load_experiment(path)
    assert list(cfg.datasets) == ["waves"]


@pytest.fixture
def celeba80(tmp_path):
    """configs/celeba80.yaml loaded with an (empty) image folder as its source, plus overrides."""
    (tmp_path / "faces").mkdir()
    return lambda *overrides: load_experiment(REPO / "configs/celeba80.yaml",
                                              [f"datasets.celeba.source={tmp_path / 'faces'}", *overrides])


def test_gpu_layout_must_match_the_jobs_gpus(celeba80):
    """celeba80 asks for 1 GPU per node: 8 processes per node need 8 GPUs, or the job fails only when it starts."""
    eight = ["trainer.devices=8", "launch.train.tasks_per_node=8"]
    with pytest.raises(ConfigError) as caught:
        celeba80(*eight)
    assert "launch.train.gpus_per_node" in str(caught.value) and "trainer.devices" in str(caught.value)
    assert "gpus_per_node=8" in str(caught.value)
    cfg = celeba80(*eight, "launch.train.gpus_per_node=8")
    assert cfg.launch.train.gpus_per_node == cfg.trainer.devices == 8


def test_memory_per_node_counts_every_rank_and_the_split(celeba80):
    """8 ranks each load the 98 325-image split (2.34 GiB as float32): 32 GiB per node is too little."""
    eight = ["trainer.devices=8", "launch.train.tasks_per_node=8", "launch.train.gpus_per_node=8"]
    with pytest.raises(ConfigError) as caught:
        celeba80(*eight, "launch.train.mem_gb=32")
    message = str(caught.value)
    assert "launch.train.mem_gb" in message and "trainer.devices=8" in message and "n_train 98325" in message
    assert "needs about 42.8" in message, message  # 8 × (3 GiB + 1 × 2.344 GiB)
    one_rank = celeba80("launch.train.mem_gb=32")
    assert one_rank.launch.train.mem_gb == 32  # one rank fits: the check scales with the ranks per node
    # streaming needs ⌈n / shard_size⌉ ≥ 8 readers (tests/test_stream_shards.py): only the largest cell streams
    streamed = celeba80(*eight, "launch.train.mem_gb=32", "trainer.in_memory=false", "n_train=[98325]")
    assert not streamed.trainer.in_memory  # a streaming rank holds no copy of the split


def test_an_empty_config_file_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_experiment(empty)


def test_poll_backoff_grows_to_its_cap_and_resets():
    from launch.grid import PollBackoff

    slurm = PollBackoff.of(load_experiment(REPO / "configs/quickstart.yaml", ["launch.executor=slurm"]))
    waits = [slurm.next() for _ in range(12)]
    assert waits[0] == 2.0 and waits == sorted(waits) and waits[-1] == 60.0  # seconds first, 60 s on long waits
    slurm.reset()
    assert slurm.next() == 2.0
    local = PollBackoff.of(load_experiment(REPO / "configs/quickstart.yaml"))
    assert {local.next() for _ in range(5)} == {2.0}  # local polls cost nothing: no backoff by default
    capped = PollBackoff.of(load_experiment(REPO / "configs/quickstart.yaml", ["launch.poll_max_seconds=5"]))
    assert [capped.next() for _ in range(4)] == [2.0, 3.0, 4.5, 5.0]
    with pytest.raises(ConfigError, match="launch.poll_max_seconds"):
        load_experiment(REPO / "configs/quickstart.yaml", ["launch.poll_max_seconds=1"])


def test_the_largest_n_has_one_home_for_config_data_and_plan(tiny_config):
    """config.max_n bounds n for both the config check and the data's split (same bound, same words), and
    config.largest_n (the grid's largest n) sizes the memory check."""
    from gdm.config import largest_n, max_n, split_gb
    from gdm.data import splits
    from gdm.data.errors import DataError

    assert [max_n(p) for p in (2, 3, 16)] == [1, 1, 8] and largest_n(tiny_config) == 4
    assert split_gb(tiny_config) == 4 * 16 * 16 * 4 / 2 ** 30  # largest n × pixels × 4 bytes
    with pytest.raises(ConfigError, match="the largest n allowed is 8"):
        load_experiment([], ["datasets.disks.pool_size=16", "n_train=[9]"])
    with pytest.raises(DataError, match="the largest n allowed is 8"):
        splits.split_slice("A", 9, pool_size=16, test_size=4)
