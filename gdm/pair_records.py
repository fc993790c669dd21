"""What the evaluation of a pair measures per sample, as typed records, and their one file form.

evaluate.py builds these records and passes them on (figures, the per-seed W&B table, samples.pt);
report.py reads them back from samples.pt. The array names of samples.pt are defined here and only
here (`Agreement.key`, which is gdm.results.agreement_key, and `Realism.key`), so no caller builds or parses a
key by hand. Their summaries are gdm.results' records (MeasureSummary, SplitRealism), which own results.json's keys.

samples.pt (one pair): per split s the sampler's `samples_s` [K, 1, H, W], `steps_s` and `diverged_s` [K]
(`sampler_key`); `valid` [K] (seeds where neither model diverged) and, per similarity measure m,
`ab_m` [K'], `nearest_m` and `nearest_other_m` [S·K'] (split A's samples, then B's), `nearest_index_<s>_m`
[K'], `cross_seed_m` [K'(K'−1)], `novelty_m` [S·T]; per image set x ∈ {test, A, B}, `realism_contrast_x`,
`realism_spectrum_x`, `realism_histogram_x`. K' = number of valid seeds, S = splits, T = held-out images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from gdm.analysis import controls
from gdm.analysis.controls import RealismProfile
from gdm.results import MeasureSummary, SplitRealism, agreement_key


def median(x: torch.Tensor) -> float | None:
    return float(x.median()) if len(x) else None  # None (JSON null), never NaN, when every sample diverged


def mean(x: torch.Tensor) -> float | None:
    return float(x.mean()) if len(x) else None


def sampler_key(kind: str, split: str) -> str:
    """The samples.pt name of one model's sampler output: kind ∈ samples, steps, diverged (e.g. `samples_A`)."""
    return f"{kind}_{split}"


@dataclass(frozen=True)
class Agreement:
    """One similarity measure over a pair's valid samples (docs/SCIENCE.md, Measures and Controls)."""

    measure: str
    ab: torch.Tensor  # [K'] s(a_i, b_i): A's and B's samples from the same seed
    nearest: dict[str, torch.Tensor]  # split → [K'] each sample against its nearest image of its own training set
    nearest_index: dict[str, torch.Tensor]  # split → [K'] the index of that image in the split's training set
    nearest_other: dict[str, torch.Tensor]  # split → [K'] each sample against the other split's nearest image
    cross_seed: torch.Tensor  # [K'(K'−1)] s(a_i, b_j), j ≠ i: control 1
    novelty: torch.Tensor  # held-out images against their nearest training image, splits concatenated: control 4

    key = staticmethod(agreement_key)  # the samples.pt name of one array (gdm.results spells it, once)

    def pooled(self) -> dict[str, torch.Tensor]:
        """The per-sample arrays of samples.pt (without the indices): splits concatenated, A's samples first."""
        return {"ab": self.ab, "nearest": torch.cat(list(self.nearest.values())),
                "nearest_other": torch.cat(list(self.nearest_other.values())),
                "cross_seed": self.cross_seed, "novelty": self.novelty}

    def summary(self) -> MeasureSummary:
        """The medians (and the A–B mean) that results.json holds for this measure."""
        pooled = self.pooled()
        return MeasureSummary(ab_median=median(self.ab), ab_mean=mean(self.ab),
                              nearest_median=median(pooled["nearest"]),
                              nearest_other_median=median(pooled["nearest_other"]),
                              cross_seed_median=median(self.cross_seed), novelty_median=median(self.novelty))

    def arrays(self) -> dict[str, torch.Tensor]:
        m, pooled = self.measure, self.pooled()
        out = {self.key(kind, m): pooled[kind] for kind in ("ab", "nearest", "nearest_other")}
        out.update({self.key("nearest_index", m, s): i for s, i in self.nearest_index.items()})
        return out | {self.key(kind, m): pooled[kind] for kind in ("cross_seed", "novelty")}

    @classmethod
    def from_arrays(cls, arrays: dict, measure: str, splits: Sequence[str]) -> Agreement:
        """The record of `measure` from samples.pt; `nearest_*` are cut back into one half per split."""
        halves = {kind: dict(zip(splits, arrays[cls.key(kind, measure)].chunk(len(splits)), strict=True))
                  for kind in ("nearest", "nearest_other")}
        empty = torch.zeros(0)
        return cls(measure, arrays[cls.key("ab", measure)], halves["nearest"],
                   {s: arrays[cls.key("nearest_index", measure, s)] for s in splits}, halves["nearest_other"],
                   arrays.get(cls.key("cross_seed", measure), empty), arrays.get(cls.key("novelty", measure), empty))

    def series(self) -> dict[str, list[float]]:
        """The histograms of this measure: A–B, sample–nearest (own and other split) and the two controls."""
        labels = {"ab": "A–B", "nearest": "sample–nearest train", "nearest_other": "sample–nearest other split",
                  "cross_seed": "A–B, different seeds (control)", "novelty": "held-out–nearest train (novelty)"}
        return {labels[kind]: values.tolist() for kind, values in self.pooled().items() if len(values)}

    def per_seed_columns(self) -> dict[str, list]:
        """Columns of the per-seed table (one row per valid seed), named as the samples.pt arrays."""
        m = self.measure
        columns: dict[str, list] = {self.key("ab", m): self.ab.tolist()}
        for kind, values in (("nearest", self.nearest), ("nearest_other", self.nearest_other)):
            columns.update({f"{kind}_{s}_{m}": v.tolist() for s, v in values.items()})
        columns.update({self.key("nearest_index", m, s): i.tolist() for s, i in self.nearest_index.items()})
        if len(self.cross_seed):  # per seed i: the median similarity of A's sample to B's other-seed samples
            crossed = controls.cross_seed_per_seed(self.cross_seed).tolist()
            columns[self.key("cross_seed", m)] = crossed if len(crossed) == len(self.ab) else [None] * len(self.ab)
        return columns


@dataclass(frozen=True)
class Realism:
    """Control 3: each model's valid samples against the held-out images (controls.realism_profile)."""

    profiles: dict[str, RealismProfile]  # "test" and each split with at least one valid sample
    splits: tuple[str, ...]

    KINDS = ("contrast", "spectrum", "histogram")

    @staticmethod
    def key(kind: str, images: str) -> str:
        """The samples.pt name of one profile: kind ∈ contrast, spectrum, histogram; images ∈ test, A, B."""
        return f"realism_{kind}_{images}"

    def of(self, split: str) -> SplitRealism:
        """One model's contrast and distances to the held-out images (all None without a valid sample)."""
        if split not in self.profiles:
            return SplitRealism()
        distances = controls.realism_distances(self.profiles[split], self.profiles["test"])
        return SplitRealism(contrast=self.contrast(split), **distances)

    def contrast(self, images: str) -> float | None:
        return float(self.profiles[images].contrast.mean()) if images in self.profiles else None

    def summary(self) -> dict[str, SplitRealism]:
        """split → its record, as results.json holds it (PairResults.realism)."""
        return {s: self.of(s) for s in self.splits}

    def arrays(self) -> dict[str, torch.Tensor]:
        return {self.key(kind, name): getattr(p, kind) for name, p in self.profiles.items() for kind in self.KINDS}

    def curves(self, names: Sequence[str]) -> dict[str, dict[str, list]]:
        """kind → {label: values} for the realism figure, for the image sets in `names` that have a profile."""
        labels = {n: "held-out" if n == "test" else f"samples {n}" for n in names if n in self.profiles}
        return {
            kind: {label: getattr(self.profiles[n], kind).tolist() for n, label in labels.items()}
            for kind in self.KINDS
        }


@dataclass(frozen=True)
class PairEvaluation:
    """Everything per sample that one pair's evaluation measured: the records behind samples.pt."""

    valid: torch.Tensor  # [K] bool: seeds where neither model diverged
    agreements: dict[str, Agreement]  # measure → its record (the paper's cosine, correlation, the headline)
    realism: Realism
    psnr_per_image: dict[str, torch.Tensor] = field(default_factory=dict)  # name → [σ, image] PSNR, dB

    def arrays(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {"valid": self.valid}
        for agreement in self.agreements.values():
            out.update(agreement.arrays())
        return out | self.realism.arrays() | self.psnr_per_image

    def per_seed_columns(self, first_seed: int) -> dict[str, list]:
        """One row per valid seed: its seed, then every measure's columns."""
        columns: dict[str, list] = {"seed": (torch.arange(len(self.valid))[self.valid] + first_seed).tolist()}
        for measure in sorted(self.agreements):
            columns.update(self.agreements[measure].per_seed_columns())
        return columns
