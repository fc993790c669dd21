"""gdm.results: results.json's typed record round-trips the file, reads older files, and owns every key."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from helpers import small_images, stand_in_pair

from gdm.cells import expand_pairs
from gdm.evaluate import summarize
from gdm.io import dumps_strict
from gdm.results import Layout, MeasureSummary, PairResults
from gdm.sample import SampleResult

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "tiny_results.json"  # numbers of two real results.json files




@pytest.fixture
def record(tiny_config) -> PairResults:
    """A pair's record from `summarize` on hand-made samples, with every optional value present."""
    data = stand_in_pair()
    samples = {s: SampleResult(small_images(4, 10 + i), torch.full((4,), 7), torch.tensor([False, True, False, False]),
                               torch.full((4,), 0.01)) for i, s in enumerate("AB")}
    results, _ = summarize(tiny_config, expand_pairs(tiny_config)[0], data, samples, "cpu")
    return replace(results, kept_step=2, jacobian={"image0_sigma0.1": {"A": {"trace": 3.0}}},
                   precision={"matmul": "ieee", "conv": "ieee", "dtype": "float32"},
                   calpha_slope={"A": 0.6, "B": None}, calpha_optimal_slope=2 / 3)


def test_the_record_round_trips_through_the_file(record):
    stored = json.loads(dumps_strict(record.to_json()))  # as atomic_write_json writes it: keys sorted
    back = PairResults.from_json(stored)
    assert back == record and back.to_json() == stored
    assert list(record.to_json())[:3] == ["pair", "dataset", "n"]  # the declaration order (results.csv's columns)


def test_every_field_reaches_the_file(record):
    """Each declared field is written under keys of its own: setting it alone changes those keys and no other
    field's, and together the fields write the whole file."""
    empty = PairResults(dataset=record.dataset, n=record.n, psnr=record.psnr)
    before = empty.to_json()
    owned = {}
    for f in fields(PairResults):
        after = replace(empty, **{f.name: getattr(record, f.name)}).to_json()
        owned[f.name] = {k for k in before | after if before.get(k, "absent") != after.get(k, "absent")}
    owned |= {name: {name} for name in ("dataset", "n", "psnr")}  # the same in both: their keys by name
    assert all(owned.values()), [name for name, keys in owned.items() if not keys]
    every = [k for keys in owned.values() for k in keys]
    assert len(every) == len(set(every)) and set(every) == set(record.to_json())


def test_a_real_results_file_holds_only_the_records_keys(record):
    """The committed reference holds every number of two real results.json files (tests/test_pipeline.py)."""
    reference = json.loads(REFERENCE.read_text())
    top_level = {path.split("/")[1] for numbers in reference.values() for path in numbers}
    assert top_level <= set(record.to_json()), top_level - set(record.to_json())


def test_typed_views_read_the_headline_measure_and_the_splits(record):
    stored = record.to_json()
    measure = record.headline_similarity
    assert record.headline().ab_median == stored[f"ab_{measure}_median"] is not None
    assert record.measure("no such measure") == MeasureSummary()
    assert record.splits == ("A", "B") and record.psnr_gap_mean == stored["psnr_gap"]
    assert record.margin("A").gaussian_margin_db_min == stored["gaussian_margin_db_min_A"]
    assert record.realism_of("B").contrast == stored["realism"]["B"]["contrast"] == stored["contrast_B"]
    assert record.summary()["verdict"] == stored["verdict"] and "verdict" not in record.scalars()
    assert all(not isinstance(v, dict) for v in record.flat().values()) and "warnings" in record.flat()
    assert set(record.psnr_curves()) >= {"A train", "B test", "gaussian A test"}


def test_an_older_file_reads_with_its_values_missing_and_a_file_without_n_is_refused():
    curve = {"sigma": [0.1], "input_psnr": [20.0], "output_psnr": [18.0]}  # output below input: no denoising
    old = {"dataset": "disks", "n": 4, "num_valid": 0, "psnr": {"A": {"train": curve, "test": curve}}}
    record = PairResults.from_json(old)
    assert record.verdict is None and record.diverged == {} and record.realism_of("A").contrast is None
    assert record.flags() == ("model A does not denoise", "all samples diverged")
    assert record.psnr_gap_mean is None and record.jacobian is None
    with pytest.raises(ValueError, match="results.json lacks n"):
        PairResults.from_json({"dataset": "disks", "psnr": {}})


def test_an_optional_value_is_left_out_and_a_plain_one_is_null(record):
    stored = replace(record, psnr_gaussian=None, verdict=None).to_json()
    assert "psnr_gaussian" not in stored and stored["verdict"] is None


# --- one owner of the keys ------------------------------------------------------------------------

# String constants elsewhere that equal a results.json key but name something else (module → keys, why).
HOMONYMS = {
    "gdm/cells.py": {"jacobian", "num_samples", "precision"},  # config fields that enter the settings hash
    "gdm/config.py": {"num_samples"},  # eval.num_samples in a config error
    "gdm/evaluate.py": {"psnr", "realism"},  # the pair's figure names (psnr.png, realism.png; W&B figures/…)
    "gdm/wandb_log.py": {"dataset", "n"},  # a W&B run's config keys of its cell or pair (gdm.cells.Item)
    "benchmarks/bench_data_memory.py": {"n"},  # the benchmark's JSON
    "benchmarks/bench_eval.py": {"jacobian"},  # a timed phase
    "benchmarks/device_eval.py": {"jacobian"},  # a timed phase
}


def _key_constants(tree: ast.AST) -> Iterator[ast.AST]:
    """Where a string names a key: a subscript, .get/.pop's key, a dict key, a column list's element, a comparison."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            yield node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and node.func.attr in ("get", "pop", "setdefault"):
            yield node.args[0]
        elif isinstance(node, ast.Dict):
            yield from (k for k in node.keys if k is not None)
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            yield from node.elts
        elif isinstance(node, ast.Compare):
            yield from (node.left, *node.comparators)


def spellings(source: str) -> list[Callable[[str], bool]]:
    """A test per key spelling in `source`: key constants equal to it, and f-string templates that build it
    (f"ab_{m}_median"; templates of bare separators such as f"{kind}_{split}" name no key)."""
    tree = ast.parse(source)
    tests: list[Callable[[str], bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [(p.value, re.escape(p.value)) if isinstance(p, ast.Constant) else ("", ".+") for p in node.values]
            if len("".join(text for text, _ in parts).strip("_")) >= 2:
                tests.append(lambda key, p=re.compile("".join(r for _, r in parts)): bool(p.fullmatch(key)))
    for node in _key_constants(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            tests.append(lambda key, value=node.value: key == value)
    return tests


def test_the_scan_finds_a_key_built_or_read_by_hand():
    source = 'a = results["psnr_gap"]\nb = r.get(f"ab_{m}_median")\nc = f"{kind}_{split}"\nd = f(xlabel="n")\n'
    found = {key for key in ("psnr_gap", "ab_cosine_median", "diverged_A", "n") for t in spellings(source) if t(key)}
    assert found == {"psnr_gap", "ab_cosine_median"}


def test_no_other_module_spells_a_results_key(record):
    """Issue 21: each results.json key is spelled once outside the tests, in gdm/results.py."""
    keys = set(record.to_json()) | {path.split("/")[1] for numbers in json.loads(REFERENCE.read_text()).values()
                                    for path in numbers}
    spelled = {}
    for path in sorted(p for folder in ("gdm", "launch", "benchmarks") for p in (ROOT / folder).rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        tests = spellings(path.read_text())
        found = {key for key in keys if any(t(key) for t in tests)} - HOMONYMS.get(module, set())
        if found and module != "gdm/results.py":
            spelled[module] = sorted(found)
    assert not spelled, f"results.json keys spelled outside gdm/results.py: {spelled}"


def test_layouts_are_declared_on_every_field():
    assert all(isinstance(f.metadata.get("layout"), Layout) for f in fields(PairResults))
