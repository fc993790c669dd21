"""One pair's results.json as a typed record: `PairResults` owns every top-level key of the file.

results.json is written from `PairResults.to_json()` and read back with `PairResults.from_json(dict)`;
evaluate, report, W&B and the results.csv row read the record's fields and accessors, never a key by hand.
The file's key of a field is derived from the field's name and its `Layout` (metadata), so no caller spells
a key, and the key order of the file is the order the fields are declared in:

- PLAIN: the field's name; None is written as null (a measured "no value", e.g. every sample diverged).
- OPTIONAL: the field's name, left out when None (not measured: reference or analysis switched off).
- PER_SPLIT: split → value, one key `<name>_<split>` per split (`diverged_A`, `psnr_gap_B`).
- PER_MEASURE: measure → MeasureSummary; field `<kind>_<stat>` of measure m is the key `<kind>_<m>_<stat>`
  (`ab_correlation_median`), and `<kind>_<m>` is also the samples.pt name of that array (`agreement_key`).
- SPLIT_RECORDS: split → a small record; its field f is the key `<f>_<split>` (split by split), and with
  `nested` the whole mapping is written first under the field's own name too (`realism`).

Adding a value is a one-place change: declare the field (with its comment and unit) where it belongs in
the file's key order, with its layout; to_json, from_json, the results.csv row (`flat`), W&B's scalars and
report's summary.csv follow from the declaration. A new per-split or per-measure number goes into the small
record it belongs to (MeasureSummary, SplitRealism, GaussianMargin). tests/test_results.py round-trips a
real results.json and checks that no other module spells one of its keys.

Values read from older files may be missing: from_json reads what is there (None, or an empty mapping),
and only `dataset`, `n` and `psnr` are required. to_json of such a record writes null for its PLAIN fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any


class Layout(Enum):
    """How a field of PairResults is laid out in results.json (see the module docstring)."""

    PLAIN = "plain"
    OPTIONAL = "optional"
    PER_SPLIT = "per_split"
    PER_MEASURE = "per_measure"
    SPLIT_RECORDS = "split_records"


def _laid(layout: Layout, *, record: type | None = None, nested: bool = False, required: bool = False,
          key: str | None = None) -> Any:
    """A field with its layout: `record` is SPLIT_RECORDS' per-split type, `key` the file's name where the
    attribute's name is taken (default: the attribute's name), `required` refuses a file without it."""
    empty = layout in (Layout.PER_SPLIT, Layout.PER_MEASURE, Layout.SPLIT_RECORDS)
    meta = {"layout": layout, "record": record, "nested": nested, "required": required, "key": key}
    return field(default_factory=dict, metadata=meta) if empty else field(default=None, metadata=meta)


def agreement_key(kind: str, measure: str, split: str | None = None) -> str:
    """The name of one similarity array (samples.pt) and the stem of its statistics in results.json:
    kind ∈ ab, nearest, nearest_other, nearest_index, cross_seed, novelty; e.g. `nearest_index_A_cosine`."""
    return f"{kind}_{split}_{measure}" if split is not None else f"{kind}_{measure}"


def split_key(name: str, split: str) -> str:
    """The results.json key of a per-split value, e.g. `diverged_A`."""
    return f"{name}_{split}"


def _measure_key(field_name: str, measure: str) -> str:
    kind, stat = field_name.rsplit("_", 1)  # field ab_median of measure m → ab_<m>_median
    return f"{agreement_key(kind, measure)}_{stat}"


@dataclass(frozen=True, kw_only=True)
class MeasureSummary:
    """One similarity measure over the valid samples (gdm.pair_records.Agreement): medians, and the A–B mean
    that results.csv keeps beside its median. None: no valid sample (or the control was not measured)."""

    ab_median: float | None = None  # s(a_i, b_i): A's and B's samples from the same seed
    ab_mean: float | None = None
    nearest_median: float | None = None  # sample against its nearest image of its own training set
    nearest_other_median: float | None = None  # sample against the other split's nearest image
    cross_seed_median: float | None = None  # control 1: s(a_i, b_j), j ≠ i
    novelty_median: float | None = None  # control 4: held-out image against its nearest training image


@dataclass(frozen=True, kw_only=True)
class SplitRealism:
    """Control 3 for one model: its samples against the held-out images (gdm.analysis.controls.realism_distances)."""

    contrast: float | None = None  # mean per-image pixel std of the samples
    contrast_distance: float | None = None  # |contrast / held-out contrast − 1|
    spectrum_distance_db: float | None = None  # mean over rings of |10 log10(P_samples / P_held-out)|, dB
    histogram_distance: float | None = None  # 1-D Wasserstein distance of pixel values, pixel units


@dataclass(frozen=True, kw_only=True)
class GaussianMargin:
    """One model's test PSNR minus the Gaussian (Wiener) reference over the verdict's σ band, dB; None: no reference."""

    gaussian_margin_db_min: float | None = None
    gaussian_margin_db_mean: float | None = None


@dataclass(frozen=True, kw_only=True)
class PairResults:
    """results.json of one eval pair, in the file's key order (docs/SCIENCE.md names each measure)."""

    pair: str | None = _laid(Layout.PLAIN)  # the pair's id, e.g. "disks/n000004-eval-219227e1"
    dataset: str = _laid(Layout.PLAIN, required=True)
    n: int = _laid(Layout.PLAIN, required=True)  # training images per split
    kept_step: int | None = _laid(Layout.OPTIONAL)  # the kept models' training step (keep_models_at); absent: final
    num_samples: int | None = _laid(Layout.PLAIN)  # seeds sampled
    num_valid: int | None = _laid(Layout.PLAIN)  # seeds where neither model diverged
    headline_similarity: str | None = _laid(Layout.PLAIN)  # the measure the verdict and memorization use
    diverged: dict[str, int] = _laid(Layout.PER_SPLIT)  # split → diverged samples
    median_steps: dict[str, float] = _laid(Layout.PER_SPLIT)  # split → median sampler steps
    agreement: dict[str, MeasureSummary] = _laid(Layout.PER_MEASURE)  # measure → its statistics
    memorized_fraction: float | None = _laid(Layout.PLAIN)  # share of samples above the threshold (own split)
    memorized_fraction_other: float | None = _laid(Layout.PLAIN)  # the same against the other split
    # share of valid samples with ‖x − nn₁‖ / ‖x − nn₂‖ < 1/3 (L2 ratio criterion; None below 2 training images)
    memorized_fraction_l2: float | None = _laid(Layout.OPTIONAL)
    reproducibility: float | None = _laid(Layout.OPTIONAL)  # share of valid seeds with s(a_i, b_i) > the threshold
    psnr: dict = _laid(Layout.PLAIN, required=True)  # split → {"train", "test"} → PSNR curve of the model
    psnr_optimal: dict | None = _laid(Layout.OPTIONAL)  # the memorizing optimum's curves, same layout
    psnr_gap: dict[str, float] = _laid(Layout.PER_SPLIT)  # split → train − test PSNR, mean over σ, dB
    psnr_gap_mean: float | None = _laid(Layout.PLAIN, key="psnr_gap")  # mean of psnr_gap over the splits, dB
    psnr_gaussian: dict | None = _laid(Layout.OPTIONAL)  # the Gaussian (Wiener) reference's curves
    # the blind Bayes-optimal Gaussian denoiser (σ unknown, the training law's prior): the verdict's reference
    psnr_gaussian_blind: dict | None = _laid(Layout.OPTIONAL)
    contrast_test: float | None = _laid(Layout.PLAIN)  # mean per-image pixel std of the held-out images
    realism: dict[str, SplitRealism] = _laid(Layout.SPLIT_RECORDS, record=SplitRealism, nested=True)
    verdict: str | None = _laid(Layout.PLAIN)  # memorizing, generalizing, underfit, transitional or inconclusive
    verdict_decided_by: str | None = _laid(Layout.OPTIONAL)  # the condition that settled the verdict
    verdict_checks: dict[str, str] | None = _laid(Layout.PLAIN)  # condition → pass, fail or inconclusive
    # each verdict statistic's {estimate, low, high, level} (gdm.analysis.evidence.intervals_json)
    intervals: dict | None = _laid(Layout.OPTIONAL)
    margins: dict[str, GaussianMargin] = _laid(Layout.SPLIT_RECORDS, record=GaussianMargin)
    jacobian: dict | None = _laid(Layout.OPTIONAL)  # "image<i>_sigma<σ>" → split → Jacobian geometry
    precision: dict[str, str] | None = _laid(Layout.OPTIONAL)  # the arithmetic (gdm.precision.Precision)
    calpha_slope: dict[str, float | None] | None = _laid(Layout.OPTIONAL)  # split → small-noise PSNR slope
    calpha_optimal_slope: float | None = _laid(Layout.OPTIONAL)  # α/(α+1), the optimal slope
    warnings: list[str] | None = _laid(Layout.OPTIONAL)  # what makes the numbers unusable (health_warnings)

    # --- the file ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """results.json's dict, keys in declaration order."""
        out: dict[str, Any] = {}
        for f in fields(self):
            out.update(_write(f, getattr(self, f.name)))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairResults:
        """The record of a results.json dict; missing values stay None or empty (older files)."""
        missing = [f.name for f in fields(cls) if f.metadata.get("required") and _json_name(f) not in data]
        if missing:
            raise ValueError(f"results.json lacks {', '.join(missing)}: it is not a pair's results; evaluate the "
                             "pair again (`gdm run`) after setting its folder aside")
        splits = tuple(data["psnr"])
        return cls(**{f.name: _read(f, data, splits) for f in fields(cls)})

    # --- typed views ------------------------------------------------------------------------------

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted(self.psnr))

    def measure(self, measure: str) -> MeasureSummary:
        """The statistics of one similarity measure (all None when it was not measured)."""
        return self.agreement.get(measure, MeasureSummary())

    def headline(self) -> MeasureSummary:
        """The statistics of the headline measure (eval.similarity), which the verdict reads."""
        return self.measure(self.headline_similarity or "")

    def realism_of(self, split: str) -> SplitRealism:
        return self.realism.get(split, SplitRealism())

    def margin(self, split: str) -> GaussianMargin:
        return self.margins.get(split, GaussianMargin())

    def flat(self) -> dict[str, Any]:
        """The file's values that are not mappings (results.csv's one row, report's summary columns)."""
        return {k: v for k, v in self.to_json().items() if not isinstance(v, dict)}

    def scalars(self) -> dict[str, float | int]:
        """The file's numbers (not bools): W&B's summary of the pair."""
        return {k: v for k, v in self.to_json().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def summary(self) -> dict[str, Any]:
        """W&B's summary of the pair: its numbers, its verdict, what decided it and every interval (nested)."""
        return self.scalars() | {"verdict": self.verdict, "verdict_decided_by": self.verdict_decided_by,
                                 "intervals": self.intervals or {}}

    def interval(self, name: str, split: str | None = None) -> dict | None:
        """One statistic's {estimate, low, high, level} from `intervals` (None: not measured or an older file);
        with `split`, a per-model one (gdm.analysis.evidence.intervals_json names them)."""
        found = (self.intervals or {}).get(split, {}) if split else (self.intervals or {})
        return found.get(name)

    def psnr_curves(self) -> dict[str, dict]:
        """The pair's PSNR curves by label: the models', then each reference's, on train and test images."""
        curves = {}
        for prefix, split_curves in (("", self.psnr), ("optimal ", self.psnr_optimal),
                                     ("gaussian ", self.psnr_gaussian)):
            for split, kinds in sorted((split_curves or {}).items()):
                curves.update({f"{prefix}{split} {kind}": kinds[kind] for kind in ("train", "test") if kind in kinds})
        return curves

    def flags(self) -> tuple[str, ...]:
        """The health warnings in a few words, for `gdm status` (DONE's flags)."""
        return tuple(flag for _, flag in health(self.psnr, self.num_valid))


def health(psnr: dict, num_valid: int | None) -> list[tuple[str, str]]:
    """(warning, flag) for each thing that makes a pair's numbers unusable or suspect."""
    found = [(f"model {s} does not denoise (output PSNR below input PSNR at every σ on test images)",
              f"model {s} does not denoise") for s, curves in sorted(psnr.items()) if not denoises(curves["test"])]
    if num_valid == 0:
        found.append(("every sample diverged: no similarity statistic has a value", "all samples diverged"))
    return found


def health_warnings(psnr: dict, num_valid: int | None) -> list[str]:
    """results.json's warnings, said in the status and the report too."""
    return [warning for warning, _ in health(psnr, num_valid)]


def denoises(curve: dict) -> bool:
    """`beats_input` for a pair's PSNR curve (input and output PSNR lists)."""
    return beats_input(curve["input_psnr"], curve["output_psnr"])


def beats_input(input_psnr_db: list[float], output_psnr_db: list[float]) -> bool:
    """Whether a model denoises: its output PSNR beats the input PSNR at one σ of a curve at least (the one
    definition; a done cell whose curve fails it is flagged NOT_DENOISING, a pair's model warned about)."""
    return any(out > inp for inp, out in zip(input_psnr_db, output_psnr_db, strict=True))


# --- the layouts ----------------------------------------------------------------------------------

def _json_name(f) -> str:
    return f.metadata["key"] or f.name


def _write(f, value: Any) -> dict[str, Any]:
    layout, name = f.metadata["layout"], _json_name(f)
    if layout is Layout.OPTIONAL:
        return {} if value is None else {name: value}
    if layout is Layout.PER_SPLIT:
        return {split_key(name, s): v for s, v in value.items()}
    if layout is Layout.PER_MEASURE:
        return {_measure_key(k, m): v for m, summary in value.items() for k, v in asdict(summary).items()}
    if layout is Layout.SPLIT_RECORDS:
        nested = {name: {s: asdict(r) for s, r in value.items()}} if f.metadata["nested"] else {}
        return nested | {split_key(k, s): v for s, r in value.items() for k, v in asdict(r).items()}
    return {name: value}


def _read(f, data: dict[str, Any], splits: tuple[str, ...]) -> Any:
    layout, name = f.metadata["layout"], _json_name(f)
    if layout is Layout.PER_SPLIT:
        return {s: data[split_key(name, s)] for s in splits if split_key(name, s) in data}
    if layout is Layout.PER_MEASURE:
        return {m: MeasureSummary(**{k.name: data.get(_measure_key(k.name, m)) for k in fields(MeasureSummary)})
                for m in _measures(data)}
    if layout is Layout.SPLIT_RECORDS:
        names = [k.name for k in fields(f.metadata["record"])]
        return {s: f.metadata["record"](**{k: data.get(split_key(k, s)) for k in names})
                for s in splits if any(split_key(k, s) in data for k in names)}
    return data.get(name)


def _measures(data: dict[str, Any]) -> list[str]:
    """The measures a file holds, in its order: those with an A–B median (`ab_<m>_median`)."""
    head, tail = _measure_key(fields(MeasureSummary)[0].name, "\0").split("\0")
    return [k[len(head):-len(tail)] for k in data if k.startswith(head) and k.endswith(tail)]
