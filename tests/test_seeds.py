"""gdm.seeds against independent computations: every derivation is pinned, so a changed key (which would
silently change every trained model and sample) fails here first."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

from gdm import seeds


def _sha_seed(*parts) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def test_derive_seed_is_the_first_63_bits_of_the_sha256_of_the_repr():
    for parts in [("cell", 0, "disks/n000010-A"), ("step", 123456789, 7, 1), ()]:
        assert seeds.derive_seed(*parts) == _sha_seed(*parts)
        assert 0 <= seeds.derive_seed(*parts) < 2**63
    assert seeds.derive_seed("step", 1, 2, 0) != seeds.derive_seed("step", 1, 2, 1)  # rank is part of the key
    assert seeds.cell_seed(3, "x/n1-A") == _sha_seed("cell", 3, "x/n1-A")


def test_step_generator_draws_from_the_derived_seed():
    expected = torch.Generator().manual_seed(_sha_seed("step", 5, 9, 1))
    got = seeds.step_generator(5, 9, 1)
    assert torch.equal(torch.rand(4, generator=got), torch.rand(4, generator=expected))


def test_noise_key_is_the_derived_seed_of_the_sample_seed():
    for seed in (0, 17, 2**40):
        assert seeds.noise_key(seed) == _sha_seed("sample", seed) < 2**63
    assert seeds.noise_key(0) != 0 and seeds.noise_key(1) != seeds.noise_key(0)  # never the bare eval.seed


def test_stream_and_shuffle_generators_are_keyed_by_their_coordinates():
    assert np.array_equal(seeds.stream_rng(4, 1, 2, 3).integers(1000, size=5),
                          np.random.default_rng([4, 1, 2, 3]).integers(1000, size=5))
    assert seeds.shuffle_rng(4, 1, 2, 3).random() == random.Random("4-1-2-3").random()
    assert seeds.shuffle_rng(4, 1, 2, 3).random() != seeds.shuffle_rng(4, 1, 2, 4).random()


def test_replicate_zero_keeps_the_base_seed_and_later_replicates_derive_their_own():
    assert seeds.replicate_seed(7, 0) == 7  # trainer.replicates = 1 trains exactly as before replicates existed
    assert seeds.replicate_seed(7, 2) == _sha_seed("replicate", 7, 2)
    assert len({seeds.replicate_seed(7, r) for r in range(5)}) == 5
