"""Where every random draw of gdm comes from: one scheme, the one home of every seed derivation.

The rule: a draw is a function of *what* it is for and *where* it sits (cell, step, rank, sample, σ),
never of batch composition, process order, worker count or a global generator. Keys are hashed with
gdm.io.stable_hash (sha256, independent of PYTHONHASHSEED) or fed to numpy's SeedSequence, so
resuming, re-batching or moving a job to another host draws the same numbers.

| stream                       | generator                                   | keyed by                         |
|------------------------------|---------------------------------------------|----------------------------------|
| data generation, splits      | numpy default_rng(datasets.<name>.seed)     | the dataset's seed (gdm.data)    |
| a cell's training replicate  | replicate_seed: the base seed of replicate r| (trainer.seed, r); r = 0: seed   |
| initial weights of a cell    | torch.manual_seed(cell_seed), forked RNG    | (replicate seed, cell id)        |
| a training step's draws      | step_generator: indices, σ, noise           | (cell seed, step, rank)          |
| precise-BN batches (K)       | precise_bn_generator: indices, σ, noise     | (cell seed, rank): same K a save |
| webdataset shard / shuffle   | stream_rng / shuffle_rng                    | (cell seed, rank, worker, epoch) |
| PSNR per σ (validation, eval)| torch Generator(eval.seed), σ after σ       | eval.seed (gdm.analysis.psnr)    |
| sampler start and z_t        | one Generator(device) per seed, whole run   | noise_key(sample seed); draw k   |

Sample seeds are eval.seed, eval.seed + 1, …: the A and B models of a pair see the same noise. The
sampler's draw k of a seed (k = 0: y_0, k = t: z_t) comes from that seed's own generator, created on the
sampling device (gdm.sample.SeedNoise), so it depends on the seed, k and the device type (CUDA's Philox
and the CPU's Mersenne Twister give different numbers for one key), never on other seeds. Until this
scheme, z_t came from a fresh CPU generator per (seed, step) keyed by SeedSequence([seed, step]): same
distribution, different values.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from gdm.io import stable_hash


def derive_seed(*parts: object) -> int:
    """A 63-bit seed, a stable function of `parts`: the first 8 bytes (little-endian) of the sha256 of their repr."""
    digest = bytes.fromhex(stable_hash(repr(parts)))
    return int.from_bytes(digest[:8], "little") >> 1


def replicate_seed(base_seed: int, replicate: int) -> int:
    """The base seed of training replicate `replicate` (trainer.replicates): replicate 0 keeps `base_seed`, so a
    grid without replicates trains as before; replicate r ≥ 1 draws its own, derive_seed("replicate", seed, r)."""
    return base_seed if replicate == 0 else derive_seed("replicate", base_seed, replicate)


def cell_seed(base_seed: int, cell_id: str) -> int:
    """The seed of one cell: its initial weights and all of its per-step draws derive from it."""
    return derive_seed("cell", base_seed, cell_id)


def step_generator(seed: int, step: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` for the draws of optimisation step `step` on process `rank`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed("step", seed, step, rank))
    return generator


def precise_bn_generator(seed: int, rank: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` for the batches that recompute BN statistics on process `rank`: the same batches
    before every saved model of a cell, so the statistics are a function of the saved weights alone."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed("precise_bn", seed, rank))
    return generator


def noise_key(seed: int) -> int:
    """The torch seed of the sampler generator of one sample seed, for the whole run.

    Hashed rather than the seed itself: eval.seed also seeds the PSNR generator, which must not replay
    the first sample's noise.
    """
    return derive_seed("sample", int(seed))


def stream_rng(seed: int, rank: int, worker: int, epoch: int) -> np.random.Generator:
    """The shard-drawing generator of one (rank, loader worker) in one pass of a streamed cell."""
    return np.random.default_rng([seed, rank, worker, epoch])


def shuffle_rng(seed: int, rank: int, worker: int, call: int) -> random.Random:
    """The sample-shuffle generator (webdataset's shuffle takes a `random.Random`) of one stream pass."""
    return random.Random(f"{seed}-{rank}-{worker}-{call}")
