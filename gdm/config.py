"""Typed experiment schema: dataclasses, YAML + dot-list overrides, validation with clear errors.

An experiment config expands into cells (dataset, n, split) — see `gdm.cells`. Every field carries a
one-line comment with its meaning and unit. OmegaConf enforces the types and refuses unknown keys;
`validate` adds the semantic checks (n ≤ |pool|/2, σ > 0, image sizes the model can take).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config key holds a value gdm cannot use; the message names the key and what is allowed."""


@dataclass
class DataConfig:
    family: str = "disks"  # dataset family by registry name (gdm.data.families.FAMILIES)
    image_size: int = 32  # side of the square grayscale images, pixels
    pool_size: int = 2000  # images available to the A/B splits (after the test set is held out)
    test_size: int = 200  # held-out test images, drawn first
    seed: int = 0  # seed of synthesis and of the split permutation
    source: Optional[str] = None  # folder or zip of real images (celeba, lsun, folder families)
    # images per webdataset shard. With trainer.in_memory=false each (rank, worker) streams shards of its own, so
    # the smallest split must span enough: ⌈min(n_train) / shard_size⌉ ≥ devices × num_nodes × max(num_workers, 1)
    shard_size: int = 1000
    params: dict[str, Any] = field(default_factory=dict)  # family-specific parameters (e.g. alpha)


@dataclass
class ModelConfig:
    name: str = "bf_unet"  # architecture by registry name (gdm.models.MODELS)
    channels: int = 64  # width of the first block; doubles per level (BF-UNet), constant (BF-CNN)
    blocks: int = 3  # encoder levels of the UNet (1, 2, 3, 4 for 20, 40, 80, 160 px in the paper)
    layers: int = 21  # conv layers of BF-CNN (ignored by the UNet)


@dataclass
class TrainerConfig:
    max_steps: int = 440_000  # optimisation steps; the same budget for every n (docs/SCIENCE.md)
    batch_size: int = 512  # images per step, summed over all ranks
    lr: float = 1e-3  # Adam learning rate at step 0
    lr_halve_every: int = 44_000  # halve the learning rate every this many steps (0: never)
    sigma_law: str = "squared_uniform"  # noise-level law: squared_uniform (σ = u², authors' code), uniform, log_uniform
    sigma_min: float = 0.0  # lower end of the σ range, in image units ([0, 1] pixels)
    sigma_max: float = 1.0  # upper end of the σ range
    ema_decay: float = 0.0  # EMA decay of the weights used for evaluation (0: no EMA)
    # per-image loss weight λ(σ) by registry name (gdm.training.loss_weighting.LOSS_WEIGHTINGS): uniform (the
    # authors' plain mean) or inverse_sigma, λ = 1/max(σ, loss_weight_floor)^loss_weight_power normalised by E_σ[λ]
    loss_weighting: str = "uniform"
    loss_weight_floor: float = 0.01  # inverse_sigma: σ below this counts as this in λ(σ), image units
    loss_weight_power: float = 1.0  # inverse_sigma: the exponent p of λ(σ) = 1/max(σ, floor)^p (1.25 in issue 20)
    # mixed-σ batches per rank that recompute the evaluated net's batch-norm statistics for its own weights before
    # each saved model ("precise BN"; averaged over ranks); 0: off, the running statistics are saved as they are
    precise_bn_batches: int = 0
    # steps at which the cell also saves model_step<S>.pt (the evaluated weights then), ascending, each ≤ max_steps
    keep_models_at: list[int] = field(default_factory=list)
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"  # lightning accelerator
    devices: int = 1  # processes per node (one per GPU); must equal SLURM tasks per node
    num_nodes: int = 1  # nodes per training job
    precision: Literal["32-true", "bf16-mixed"] = "32-true"  # lightning precision
    channels_last: bool = False  # channels_last memory format (GPU speed switch)
    compile: bool = False  # torch.compile the network
    checkpoint_every: int = 1000  # write last.ckpt every this many steps
    log_every: int = 50  # log the training loss every this many steps
    val_every: int = 0  # validation PSNR every this many steps (0: only at the end)
    num_workers: int = 0  # dataloader workers
    in_memory: bool = True  # keep the cell's training set in (device) memory; False streams shards
    seed: int = 0  # base seed; per-step seeds derive from (seed, cell, step, rank)
    # training replicates per (dataset, n, split) cell, ≥ 1: replicate r trains from gdm.seeds.replicate_seed(seed, r)
    # in its own folder (r = 0 is the cell as named without replicates) and the report pools a pair's replicates
    replicates: int = 1
    # intra-op CPU threads of training: the reduction order, so the weights, depend on it; every entry point
    # (gdm run on any executor, gdm train, a resume) uses this one value. 1: the trajectory of gdm's local runs
    threads: int = 1


@dataclass
class SamplerConfig:
    h0: float = 0.01  # step size h (Algorithm 1); initial h_0 under the increasing schedule
    beta: float = 0.1  # noise injection β: γ_t² = ((1-βh)² - (1-h)²) σ_t²
    sigma_0: float = 1.0  # standard deviation of the initial noise x_0
    sigma_end: float = 0.05  # stop once the effective noise σ_t falls below this
    mean: float = 0.5  # mean of the initial noise x_0 ~ N(mean, σ_0² I)
    schedule: Literal["constant", "increasing"] = "constant"
    # the authors' loop: increasing h_t whatever `schedule` says, and one more update after σ_t falls below sigma_end
    authors_loop: bool = False
    max_steps: int = 2000  # hard cap on iterations per sample
    final_denoise: bool = True  # finish with one full denoising step x ← f(x)
    diverge_sigma: float = 10.0  # flag a sample as diverged once σ_t exceeds this
    # flag a sample as diverged when a pixel of its final image lies more than this outside the data range [0, 1],
    # pixel units (1.0: below −1 or above 2); σ_t bounds the noise, not the amplitude. None: no bound (as before)
    diverge_pixel_margin: Optional[float] = None


@dataclass
class JacobianConfig:
    enabled: bool = False  # compute Jacobian spectra during evaluation
    num_images: int = 2  # test images analysed
    sigmas: list[float] = field(default_factory=lambda: [0.15])  # noise levels of the analysis
    chunk: int = 32  # Jacobian rows per batched VJP: bounds memory; 16–64 is fastest on a CPU, 512+ on a GPU
    num_eigenvectors: int = 8  # leading eigenvectors kept as images


@dataclass
class EvalConfig:
    num_samples: int = 256  # samples per model; seeds eval.seed .. eval.seed + num_samples - 1
    seed: int = 0  # first sample seed (shared by A and B)
    batch_size: int = 256  # samples generated at once
    psnr_sigmas: list[float] = field(
        default_factory=lambda: [0.008, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    )  # noise levels of the PSNR curves (input PSNR ≈ 42 … 0 dB)
    psnr_images: int = 64  # train and test images each used for the PSNR curves
    # a sample is memorized when its similarity to its nearest training image exceeds this (for l2: a negative
    # RMS distance, e.g. -0.02)
    memorization_threshold: float = 0.95
    similarity: str = "correlation"  # headline similarity: cosine, correlation (mean removed) or l2
    grid_samples: int = 8  # sample pairs drawn in figures
    # also evaluate the best linear (Wiener) denoiser of the pool's mean and covariance: PSNR curves on the models'
    # noise draws (the verdict's underfitting control); memory 2 × 8·D² bytes for D pixels: 0.7 GB at 80×80,
    # 10 GB at 160×160
    gaussian_reference: bool = True
    # also evaluate the empirical optimal (memorizing) denoiser of each training set: PSNR curves and, with
    # jacobian.enabled, its Jacobian spectra
    optimal_reference: bool = True
    jacobian: JacobianConfig = field(default_factory=JacobianConfig)


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline (writes runs to disk), online, disabled
    project: str = "gdm"  # W&B project
    entity: Optional[str] = None  # W&B entity (team); None uses the default of the API key
    # seconds wandb.init may wait for the server; online runs that fail (no key, no network, server error) are
    # written offline instead, with a warning naming `gdm sync`
    init_timeout_s: float = 30.0
    upload_models: bool = False  # log each model.pt as an artifact file (True) or as a reference to its path (False)


@dataclass
class ResourcesConfig:
    partition: Optional[str] = None  # SLURM partition
    account: Optional[str] = None  # SLURM account
    qos: Optional[str] = None  # SLURM quality of service
    time_min: int = 60  # wall-clock limit, minutes
    gpus_per_node: int = 0  # GPUs per node (one task per GPU)
    tasks_per_node: int = 1  # SLURM tasks (processes) per node
    nodes: int = 1  # nodes per job
    cpus_per_task: int = 1  # CPU cores per task
    mem_gb: float = 4.0  # memory per node, GiB
    constraint: Optional[str] = None  # SLURM node constraint
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load …)
    max_requeues: int = 3  # times a job may requeue itself at its time limit (submitit's slurm_max_num_timeout)
    signal_delay_s: int = 120  # USR2 comes this many seconds before the time limit (--signal=USR2@s)


@dataclass
class LaunchConfig:
    executor: Literal["local", "slurm", "inprocess"] = (
        "local"  # where jobs run: local (submitit subprocesses), slurm, inprocess
    )
    max_parallel: int = 1  # jobs running at once (local) / slurm_array_parallelism
    poll_seconds: float = 2.0  # first interval between the driver's polls of running jobs, s (again after any change)
    # cap of the polls' backoff (each quiet poll waits 1.5× longer), s; None: 60 on SLURM (every poll runs squeue,
    # a shared service admins throttle), poll_seconds elsewhere (a local poll costs nothing)
    poll_max_seconds: Optional[float] = None
    # Who owns a folder: flock (a lock on <folder>/lease: needs flock that works across nodes), job (the owner's
    # SLURM job id, host and pid, checked with squeue / the process table), auto (flock if it works, else job)
    ownership: Literal["auto", "flock", "job"] = "auto"  # how a folder's one owner is recorded (README)
    train: ResourcesConfig = field(default_factory=ResourcesConfig)  # resources of a training job
    eval: ResourcesConfig = field(
        default_factory=ResourcesConfig
    )  # resources of an evaluation job (and of the report job)
    prepare: ResourcesConfig = field(
        default_factory=lambda: ResourcesConfig(cpus_per_task=4, mem_gb=16.0)
    )  # resources of the data-preparation job (SLURM only: elsewhere the driver prepares)


@dataclass
class ExperimentConfig:
    name: str = "quickstart"  # experiment name: runs/<name>/, W&B group
    root: str = "runs"  # folder holding every experiment's run directory
    n_train: list[int] = field(default_factory=lambda: [1, 10, 100, 1000])  # training-set sizes
    splits: list[str] = field(default_factory=lambda: ["A", "B"])  # disjoint splits per n
    datasets: dict[str, DataConfig] = field(default_factory=lambda: {"disks": DataConfig()})  # by name
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name


# Settings of the libraries gdm drives (precision, accelerator, …) are `Literal` fields: OmegaConf refuses
# any other value when the config is merged, naming the key. Names that pick an entry of a gdm registry (a
# family, a model, a σ law, a similarity) are checked against that registry by gdm.experiment.check_registries:
# this module imports nothing from gdm.


ConfigFiles = Optional[str | Path | Sequence[str | Path]]


def load_config(path: ConfigFiles = None, overrides: tuple[str, ...] | list[str] = ()) -> ExperimentConfig:
    """Schema defaults ← YAML file(s) ← `key=value` overrides, type-checked and validated.

    Several files are merged in order, each later one over the earlier: an experiment, then a cluster
    profile (launch.* resources, wandb.*) kept apart from it, e.g. configs/celeba80.yaml my_cluster.yaml."""
    schema = OmegaConf.structured(ExperimentConfig)
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[DictConfig] = [_read_yaml(Path(p)) for p in paths]
    if any("datasets" in layer for layer in layers):
        schema.datasets = {}  # a file's datasets replace the default one instead of joining it
    layers.append(_parse_overrides(overrides))
    try:
        merged = OmegaConf.merge(schema, *layers)
        cfg: ExperimentConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    validate(cfg)
    return cfg


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass a YAML file such as configs/quickstart.yaml")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and OmegaConf's own parse errors
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if isinstance(loaded, DictConfig) and not loaded:  # an empty file would silently train the schema defaults
        raise ConfigError(f"config file {path} is empty; give at least name: and datasets: "
                          "(see configs/quickstart.yaml)")
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping of keys (name:, n_train:, …), not a list")
    return loaded


def _parse_overrides(overrides: tuple[str, ...] | list[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. trainer.max_steps=50)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None


def _explain(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "?"
    msg = str(err).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"unknown config key '{key}': {msg}. See gdm/config.py for the allowed keys."
    return f"config key '{key}': {msg}"


def validate(cfg: ExperimentConfig) -> None:
    """Semantic checks that types alone cannot express; each error names its key."""
    _check_grid(cfg)
    _check_trainer(cfg.trainer)
    _check_sampler(cfg.sampler)
    _check_eval(cfg.eval)
    for kind in ("train", "eval", "prepare"):
        _check_resources(getattr(cfg.launch, kind), f"launch.{kind}")
    _check_polling(cfg.launch)
    _check_layout(cfg)
    for name, data in cfg.datasets.items():
        _check_dataset(cfg, name, data)


# Host memory one training rank needs besides its images, GiB: Python, torch and Lightning take about 0.4 GiB
# (measured on a CPU rank) plus working buffers; a GPU rank adds the CUDA context and pinned buffers.
RANK_OVERHEAD_GB = {"cpu": 0.75, "gpu": 3.0}
# Copies of its training split one rank holds in host memory at its peak: load_split converts the decoded cache in
# blocks into one float32 tensor (peak 1.007 copies, benchmarks/results/bench_data_memory.json); a CPU rank keeps
# it, a GPU rank releases it once the split is on the GPU (CellDataModule). trainer.in_memory=False holds none.
SPLIT_COPIES_PER_RANK = 1


def largest_n(cfg: ExperimentConfig) -> int:
    """The grid's largest training-set size (max of n_train): what sizes a training job's memory and time."""
    return max(cfg.n_train)


def max_n(pool_size: int) -> int:
    """The largest training-set size a split may take: half the pool (A_n and B_n must not overlap)."""
    return pool_size // 2


def split_gb(cfg: ExperimentConfig) -> float:
    """GiB of the largest training split as float32: max n_train × the largest image's pixels × 4 bytes."""
    pixels = max(d.image_size ** 2 for d in cfg.datasets.values())
    return largest_n(cfg) * pixels * 4 / 2 ** 30


def trains_on_gpu(cfg: ExperimentConfig) -> bool:
    """A GPU asked for by the trainer or by the training job's resources."""
    return cfg.trainer.accelerator in ("gpu", "cuda") or cfg.launch.train.gpus_per_node > 0


def rank_overhead_gb(cfg: ExperimentConfig) -> float:
    return RANK_OVERHEAD_GB["gpu" if trains_on_gpu(cfg) else "cpu"]


def train_memory_gb(cfg: ExperimentConfig) -> float:
    """Host memory a training job needs per node: every rank on it (trainer.devices) loads the split itself."""
    held = SPLIT_COPIES_PER_RANK * split_gb(cfg) if cfg.trainer.in_memory else 0.0
    return cfg.trainer.devices * (rank_overhead_gb(cfg) + held)


def _check_layout(cfg: ExperimentConfig) -> None:
    """On SLURM one Lightning process runs per task: the trainer's layout is the job's. Both are stated,
    and must agree, because the layout is part of a cell's settings (its per-rank seeds depend on it).
    The launch.* resources are SLURM's requests: other executors run on this machine and ignore them."""
    t, r = cfg.trainer, cfg.launch.train
    if cfg.launch.executor != "slurm":
        return
    if (t.devices, t.num_nodes) != (r.tasks_per_node, r.nodes):
        raise ConfigError(f"config keys 'trainer.devices'/'trainer.num_nodes' are {t.devices}/{t.num_nodes} but "
                          f"'launch.train.tasks_per_node'/'launch.train.nodes' are {r.tasks_per_node}/{r.nodes}; "
                          "one Lightning process runs per SLURM task, so set them equal")
    _check_gpus(cfg)
    _check_train_memory(cfg)


def _check_gpus(cfg: ExperimentConfig) -> None:
    """Lightning gives each of its trainer.devices processes on a node its own GPU: the job must hold that many."""
    t, r = cfg.trainer, cfg.launch.train
    if trains_on_gpu(cfg) and r.gpus_per_node != t.devices:
        raise ConfigError(f"config key 'launch.train.gpus_per_node' is {r.gpus_per_node} but 'trainer.devices' is "
                          f"{t.devices} (trainer.accelerator={t.accelerator}): each process per node needs its own "
                          f"GPU, so set launch.train.gpus_per_node={t.devices}")


def _check_train_memory(cfg: ExperimentConfig) -> None:
    needed, r = train_memory_gb(cfg), cfg.launch.train
    if r.mem_gb < needed:
        raise ConfigError(
            f"config key 'launch.train.mem_gb' is {r.mem_gb:g} GiB per node but training needs about {needed:.1f}: "
            f"trainer.devices={cfg.trainer.devices} ranks per node each hold {rank_overhead_gb(cfg):g} GiB plus "
            f"{SPLIT_COPIES_PER_RANK} copy of the largest split (n_train {largest_n(cfg)} × pixels × 4 bytes = "
            f"{split_gb(cfg):.2f} GiB); raise launch.train.mem_gb to {math.ceil(needed)} "
            "or set trainer.in_memory=false")


def _check_grid(cfg: ExperimentConfig) -> None:
    # root/<name> must be a folder of its own inside root: '.', '..' or a path would write elsewhere
    if not cfg.name or cfg.name in (".", "..") or "/" in cfg.name or "\\" in cfg.name:
        raise ConfigError(f"config key 'name' is {cfg.name!r}; the run folder is root/<name>, so use a non-empty "
                          "name without '/' or '\\' that is not '.' or '..' (e.g. name=quickstart)")
    if not cfg.n_train or any(n < 1 for n in cfg.n_train):
        raise ConfigError(f"config key 'n_train' is {cfg.n_train}; give one or more sizes ≥ 1")
    repeated = sorted({n for n in cfg.n_train if cfg.n_train.count(n) > 1})
    if repeated:
        raise ConfigError(f"config key 'n_train' is {cfg.n_train}: {repeated} appear more than once; each size "
                          "names one cell per split, so list each n once")
    if not cfg.splits or any(s not in ("A", "B") for s in cfg.splits) or len(set(cfg.splits)) != len(cfg.splits):
        raise ConfigError(f"config key 'splits' is {cfg.splits}; allowed values: A, B (each at most once)")
    if not cfg.datasets:
        raise ConfigError("config key 'datasets' is empty; name at least one dataset (datasets.disks.family=disks)")


def _check_trainer(t: TrainerConfig) -> None:
    positive = {"max_steps": t.max_steps, "batch_size": t.batch_size, "lr": t.lr, "devices": t.devices,
                "num_nodes": t.num_nodes, "checkpoint_every": t.checkpoint_every, "log_every": t.log_every,
                "threads": t.threads}
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key 'trainer.{key}' is {value}; it must be > 0")
    if t.replicates < 1:
        raise ConfigError(f"config key 'trainer.replicates' is {t.replicates}; it must be ≥ 1 (1: one model per "
                          "cell, as without replicates; 3 trains each cell three times with derived seeds)")
    if t.sigma_min < 0 or t.sigma_max <= t.sigma_min:
        raise ConfigError(f"config keys 'trainer.sigma_min'/'trainer.sigma_max' are {t.sigma_min}/{t.sigma_max}; "
                          "need 0 ≤ sigma_min < sigma_max")
    if t.sigma_law == "log_uniform" and t.sigma_min <= 0:  # the law's own precondition (log σ_min)
        raise ConfigError("config key 'trainer.sigma_min' must be > 0 when trainer.sigma_law=log_uniform")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"config key 'trainer.ema_decay' is {t.ema_decay}; allowed: 0 ≤ ema_decay < 1")
    _check_loss_weighting(t)
    _check_kept_models(t)
    if t.batch_size % (t.devices * t.num_nodes):
        raise ConfigError(f"config key 'trainer.batch_size' ({t.batch_size}) must be divisible by "
                          f"trainer.devices × trainer.num_nodes ({t.devices * t.num_nodes})")


def _check_loss_weighting(t: TrainerConfig) -> None:
    if t.loss_weight_floor <= 0:  # λ = 1/max(σ, floor)^p must stay finite at σ = 0
        raise ConfigError(f"config key 'trainer.loss_weight_floor' is {t.loss_weight_floor}; it must be > 0 "
                          "(λ(σ) = 1/max(σ, floor)^p is infinite at σ = 0 otherwise), e.g. 0.01")
    if t.loss_weight_power <= 0:
        raise ConfigError(f"config key 'trainer.loss_weight_power' is {t.loss_weight_power}; it must be > 0 "
                          "(trainer.loss_weighting=uniform is the unweighted loss), e.g. 1.0 or 1.25")
    if t.precise_bn_batches < 0:
        raise ConfigError(f"config key 'trainer.precise_bn_batches' is {t.precise_bn_batches}; it must be ≥ 0 "
                          "(0: off; issue 20 used 200)")


def _check_kept_models(t: TrainerConfig) -> None:
    steps = list(t.keep_models_at)
    if any(s < 1 or s > t.max_steps for s in steps):
        raise ConfigError(f"config key 'trainer.keep_models_at' is {steps}; each step must be in 1 … "
                          f"trainer.max_steps ({t.max_steps}): drop the others or raise trainer.max_steps")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ConfigError(f"config key 'trainer.keep_models_at' is {steps}; list the steps in ascending order, "
                          f"each once, e.g. {sorted(set(steps))}")


def _check_eval(e: EvalConfig) -> None:
    sizes = {"num_samples": e.num_samples, "batch_size": e.batch_size, "psnr_images": e.psnr_images,
             "jacobian.num_images": e.jacobian.num_images}
    for key, value in sizes.items():
        if value < 1:
            raise ConfigError(f"config key 'eval.{key}' is {value}; it must be ≥ 1")
    if e.grid_samples < 0 or e.jacobian.num_eigenvectors < 0:
        raise ConfigError(f"config keys 'eval.grid_samples'/'eval.jacobian.num_eigenvectors' are "
                          f"{e.grid_samples}/{e.jacobian.num_eigenvectors}; both must be ≥ 0")
    if not e.psnr_sigmas:
        raise ConfigError("config key 'eval.psnr_sigmas' is empty; give at least one noise level, e.g. [0.1]")
    if e.similarity == "l2" and e.memorization_threshold > 0:
        raise ConfigError(
            f"config key 'eval.memorization_threshold' is {e.memorization_threshold}, but eval.similarity=l2 "
            "scores a pair by its negative RMS distance (≤ 0): give a negative threshold such as -0.02"
        )
    if e.jacobian.chunk < 1:
        raise ConfigError(f"config key 'eval.jacobian.chunk' is {e.jacobian.chunk}; it must be ≥ 1")
    if any(sigma <= 0 for sigma in [*e.psnr_sigmas, *e.jacobian.sigmas]):
        raise ConfigError(
            "config keys 'eval.psnr_sigmas' and 'eval.jacobian.sigmas' hold noise levels; each must be > 0"
        )


def _check_polling(launch: LaunchConfig) -> None:
    if launch.poll_seconds <= 0:
        raise ConfigError(f"config key 'launch.poll_seconds' is {launch.poll_seconds}; it must be > 0")
    if launch.poll_max_seconds is not None and launch.poll_max_seconds < launch.poll_seconds:
        raise ConfigError(f"config key 'launch.poll_max_seconds' is {launch.poll_max_seconds}, below "
                          f"launch.poll_seconds ({launch.poll_seconds}); the cap must be ≥ the first interval")


def _check_resources(r: ResourcesConfig, key: str) -> None:
    if r.max_requeues < 0:
        raise ConfigError(f"config key '{key}.max_requeues' is {r.max_requeues}; it must be ≥ 0 (0: never requeue)")
    if not 0 < r.signal_delay_s < r.time_min * 60:
        raise ConfigError(f"config key '{key}.signal_delay_s' is {r.signal_delay_s}; it must be > 0 and shorter than "
                          f"{key}.time_min ({r.time_min} min), or the job is signalled before it starts")


def _check_sampler(s: SamplerConfig) -> None:
    if not 0 < s.h0 <= 1:
        raise ConfigError(f"config key 'sampler.h0' is {s.h0}; allowed: 0 < h0 ≤ 1")
    if not 0 < s.beta <= 1:  # Algorithm 1: σ_t shrinks by (1 − β·h) a step, so β = 0 never lowers it
        raise ConfigError(f"config key 'sampler.beta' is {s.beta}; allowed: 0 < beta ≤ 1. The effective noise σ_t "
                          "shrinks by a factor (1 − beta·h) per step: with beta=0 each step injects as much noise as "
                          "it removes, σ_t never reaches sampler.sigma_end and every sample runs to sampler.max_steps "
                          "(the paper uses beta=0.1)")
    if s.sigma_0 <= 0 or s.sigma_end <= 0:
        raise ConfigError(f"config keys 'sampler.sigma_0'/'sampler.sigma_end' are {s.sigma_0}/{s.sigma_end}; "
                          "both must be > 0")
    if s.sigma_end >= s.sigma_0:  # the loop stops once σ_t < sigma_end: it would return the initial noise
        raise ConfigError(f"config keys 'sampler.sigma_end'/'sampler.sigma_0' are {s.sigma_end}/{s.sigma_0}; "
                          "sampling starts at noise σ_0 and stops once σ_t falls below sigma_end, so sigma_end must "
                          "be < sigma_0 (e.g. sigma_end=0.05 with sigma_0=1)")
    if s.max_steps <= 0:
        raise ConfigError(f"config key 'sampler.max_steps' is {s.max_steps}; it must be > 0")
    if s.diverge_pixel_margin is not None and not s.diverge_pixel_margin >= 0:
        raise ConfigError(f"config key 'sampler.diverge_pixel_margin' is {s.diverge_pixel_margin}; it must be ≥ 0 "
                          "(pixel units beyond the data range [0, 1], e.g. 1.0) or null for no amplitude bound")


def _check_dataset(cfg: ExperimentConfig, name: str, data: DataConfig) -> None:
    key = f"datasets.{name}"
    if data.image_size < 4:
        raise ConfigError(f"config key '{key}.image_size' is {data.image_size}; it must be ≥ 4")
    if data.test_size < 1 or data.pool_size < 2 or data.shard_size < 1:
        raise ConfigError(f"config keys '{key}.test_size/pool_size/shard_size' must be ≥ 1, ≥ 2, ≥ 1")
    largest = max_n(data.pool_size)
    too_big = [n for n in cfg.n_train if n > largest]
    if too_big:
        raise ConfigError(f"config key 'n_train' holds {too_big}, larger than half of {key}.pool_size="
                          f"{data.pool_size}; the largest n allowed is {largest} (A and B must be disjoint)")
    if not cfg.trainer.in_memory:
        _check_streaming_shards(cfg, key, data.shard_size)


def stream_readers(t: TrainerConfig) -> int:
    """Readers of a streamed split: every dataloader worker (one per rank without workers) of every rank."""
    return t.devices * t.num_nodes * max(t.num_workers, 1)


def split_shards(n: int, shard_size: int) -> int:
    """Shards that A_n = pool[0:n] spans, ⌈n / shard_size⌉; B_n = pool[-n:], not aligned to shard boundaries,
    spans as many or one more (gdm.data.streaming.split_urls)."""
    return -(-n // shard_size)


def _check_streaming_shards(cfg: ExperimentConfig, key: str, shard_size: int) -> None:
    """Streaming gives each (rank, worker) shards of its own (gdm.data.streaming.RankShards), so every split must
    span at least as many shards as there are readers R. Larger n span more: the smallest n decides. The largest
    shard_size with ⌈n / s⌉ ≥ R is ⌊(n − 1) / (R − 1)⌋; with n < R none is."""
    n, readers, t = min(cfg.n_train), stream_readers(cfg.trainer), cfg.trainer
    if split_shards(n, shard_size) >= readers:
        return
    fix = (f"set {key}.shard_size to at most {(n - 1) // (readers - 1)}" if n >= readers else
           f"no shard size can, since a split of {n} images cannot give {readers} readers an image each")
    raise ConfigError(
        f"config key '{key}.shard_size' is {shard_size}, but with trainer.in_memory=false the smallest split "
        f"(n_train {n}) spans only {split_shards(n, shard_size)} shard(s) for {readers} readers (trainer.devices "
        f"{t.devices} × trainer.num_nodes {t.num_nodes} × max(trainer.num_workers, 1) {max(t.num_workers, 1)}), "
        f"and each reader streams shards of its own: {fix} (the shard size is part of the prepared data and of "
        "the cells' names: a new value needs a new run folder); or use fewer ranks or workers, or "
        "trainer.in_memory=true (resident images, the default)")


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML, as written next to the run."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for hashing and logging)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]
