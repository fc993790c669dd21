"""Mutation run on the numerical core: can the fast tests tell a small deliberate bug from the real code?

    nice -n 15 .venv/bin/python benchmarks/mutation.py [--module gdm/sample.py ...] [--list] [--check-equivalent]

For each core module, every mutant (one small change, made with `ast` and spliced into the source
text, so the rest of the file stays byte-identical) is written into a COPY of the repository (the
working tree is never touched), and the module's fast tests are run there with the copy first on
sys.path. A mutant is *killed* when a test fails (or the run times out), *survives* when every test
passes. Results, survivors included, go to benchmarks/results/mutation.json; the score is killed /
(mutants − declared equivalent mutants), and the raw killed / mutants is reported beside it.

Mutations: arithmetic (+ ↔ −, × ↔ ÷, ** → ×, // → /, >> → <<, | ↔ &), comparisons (boundary
< ↔ ≤ and negation), and ↔ or, dropping `not` / unary minus / `~`, numbers n → n + 1, True ↔ False,
negated `if` conditions, swapped reductions (max ↔ min, argmax ↔ argmin, mean ↔ sum, log10 ↔ log,
any ↔ all, square → abs), dropped keyword arguments (generator=, dtype=, dim=, ...; not device=),
and deleted statements (stores into tensors or attributes, re-assignments, calls made for their
effect, raises). Docstrings, other strings and annotations are left alone.

Each test run is a fork of this process, which has already imported the third-party modules the
tests use (torch, numpy, scipy, torchmetrics, pytest; never gdm), so a mutant costs its tests, not
the imports (POSIX only); the tests that killed earlier mutants of the module run first.
Not part of CI: 430 mutants in about 11 minutes on two CPU cores (656 s measured). `--list` prints
the mutants; `--check-equivalent` runs only the declared equivalent ones, to confirm they survive.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutation.json"

# module → the fast tests that guard it (pytest arguments, relative to the repository root)
MODULES: dict[str, list[str]] = {
    "gdm/sample.py": ["tests/test_sample.py"],
    "gdm/training/sigma.py": ["tests/test_training_maths.py"],
    "gdm/training/loss.py": ["tests/test_training_maths.py"],
    "gdm/seeds.py": ["tests/test_seeds.py"],
    "gdm/analysis/similarity.py": ["tests/test_analysis.py"],
    "gdm/analysis/nearest.py": ["tests/test_analysis.py"],
    "gdm/analysis/psnr.py": ["tests/test_analysis.py"],
    "gdm/analysis/jacobian.py": ["tests/test_analysis.py"],
    "gdm/data/splits.py": ["tests/test_splits.py"],
    "gdm/training/records.py": ["tests/test_io.py"],  # resume: metrics.jsonl cut back to the checkpoint
    "gdm/lifecycle.py": ["tests/test_lifecycle.py"],  # the done-checks, ownership and resume states the grid trusts
}

# Mutants that no test can kill because they do not change what the code does, with the reason:
# (module, a fragment of the line before, a fragment of it after the mutation) → why it is equivalent.
# An entry that matches no mutant is reported, so the list cannot go stale silently.
CHUNKING = "a performance knob: results do not depend on it (the chunk/batch invariance tests show it)"
SAME_LENGTHS = "both sequences always have the same length, so `strict` never matters"
ASCII_ONLY = "json.dumps escapes every non-ASCII character (ensure_ascii), so the file is ASCII in any encoding"
EQUIVALENT: dict[tuple[str, str, str], str] = {
    ("gdm/sample.py", "range(1, cfg.max_steps + 2)", "range(1, cfg.max_steps + 3)"):
        "the loop always breaks at t = max_steps + 1 (`t > cfg.max_steps`), so its end is never reached",
    ("gdm/sample.py", "seeds = [int(s) for s in seeds]", "pass"):
        "SeedNoise applies int() to each seed itself; any Sequence[int] gives the same samples without it",
    ("gdm/sample.py", "zip(*parts, strict=False)", "zip(*parts, strict=True)"):
        "every batch returns the same four tensors: " + SAME_LENGTHS,
    ("gdm/analysis/psnr.py", "strict=False)", "strict=True)"):
        "the train and test curves are computed at the same σ list: " + SAME_LENGTHS,
    ("gdm/analysis/jacobian.py", "basis = torch.zeros(stop - start, y.numel(), dtype=y.dtype",
     "basis = torch.zeros(stop - start, y.numel(), device=y.device)"):
        "the basis holds only 0 and 1, exact in every float dtype, and the VJP casts it to the output's dtype",
    ("gdm/lifecycle.py", "fcntl.flock(fd, fcntl.LOCK_UN)", "pass"):
        "owner_alive closes the descriptor next, and closing it releases its flock: the unlock is for clarity",
    ("gdm/lifecycle.py", "fcntl.flock(self._fd, fcntl.LOCK_UN)", "pass"):
        "release closes the descriptor next, and closing it releases its flock",
    ("gdm/lifecycle.py", "time.sleep(0.05)", "pass"):
        "without the pause the retry loop spins until the same deadline: same outcome and timing, only CPU use differs",
    ("gdm/lifecycle.py", "if time.monotonic() > deadline:", "if (time.monotonic() >= deadline):"):
        "a monotonic clock in floating point never lands on the deadline exactly: > and >= decide alike",
    ("gdm/training/records.py", 'encoding="utf-8"', "read_text()"): ASCII_ONLY,
    ("gdm/training/records.py", 'with open(path, "a", encoding="utf-8")', "with open(path, 'a')"): ASCII_ONLY,
    ("gdm/analysis/nearest.py", "chunk: int = 8192", "chunk: int = 8193"): CHUNKING,
    ("gdm/analysis/jacobian.py", "chunk: int = 32", "chunk: int = 33"): CHUNKING,
    ("gdm/analysis/psnr.py", "batch_size: int = 256", "batch_size: int = 257"): CHUNKING,
    ("gdm/analysis/psnr.py", "batch_size=batch_size, device=device)", "seed=seed, device=device)"): CHUNKING,
}


def equivalent_reason(mutant) -> str | None:
    for (module, before, after), reason in EQUIVALENT.items():
        if mutant.module == module and before in mutant.before and after in mutant.after:
            return reason
    return None


COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                                     "runs", "wandb", "*.egg-info", "results", "docs", "docker", "slurm")

BINOP_SWAPS = {ast.Add: [ast.Sub], ast.Sub: [ast.Add], ast.Mult: [ast.Div], ast.Div: [ast.Mult],
               ast.FloorDiv: [ast.Div], ast.Mod: [ast.FloorDiv], ast.Pow: [ast.Mult], ast.RShift: [ast.LShift],
               ast.LShift: [ast.RShift], ast.BitOr: [ast.BitAnd], ast.BitAnd: [ast.BitOr]}
COMPARE_SWAPS = {ast.Lt: [ast.LtE, ast.GtE], ast.LtE: [ast.Lt, ast.Gt], ast.Gt: [ast.GtE, ast.LtE],
                 ast.GtE: [ast.Gt, ast.Lt], ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.In: [ast.NotIn],
                 ast.NotIn: [ast.In], ast.Is: [ast.IsNot], ast.IsNot: [ast.Is]}
NAME_SWAPS = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax", "mean": "sum", "sum": "mean",
              "log10": "log", "log": "log10", "any": "all", "all": "any", "square": "abs"}
# Keyword arguments never dropped: `device=` is a no-op on the CPU the tests run on (tests/test_gpu.py
# covers CUDA), and `strict=False` is zip's default.
KEEP_KEYWORDS = {"device", "strict"}
PARENTHESISE = (ast.BinOp, ast.BoolOp, ast.Compare, ast.UnaryOp, ast.IfExp, ast.Lambda)


@dataclass
class Mutant:
    module: str
    line: int
    kind: str
    before: str  # the first changed line, stripped
    after: str
    start: int  # byte offsets of the replaced span
    end: int
    replacement: str

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]

    def describe(self) -> str:
        return f"{self.module}:{self.line} [{self.kind}] {self.before}  →  {self.after}"


def mutants_of(module: str) -> list[Mutant]:
    source = (ROOT / module).read_bytes()
    tree = ast.parse(source)
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    found: list[Mutant] = []
    seen: set[bytes] = set()

    def offset(line: int, col: int) -> int:
        return starts[line - 1] + col

    def add(node: ast.AST, new: ast.AST | str, kind: str) -> None:
        text = new if isinstance(new, str) else ast.unparse(new)
        if isinstance(new, PARENTHESISE):
            text = f"({text})"
        start, end = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
        mutated = source[:start] + text.encode() + source[end:]
        if mutated == source or mutated in seen:
            return
        try:
            ast.parse(mutated)
        except SyntaxError:
            return
        seen.add(mutated)
        before = source.decode().splitlines()[node.lineno - 1].strip()
        after = mutated.decode().splitlines()[node.lineno - 1].strip()
        found.append(Mutant(module, node.lineno, kind, before, after, start, end, text))

    for node, new, kind in _sites(tree):
        add(node, new, kind)
    return found


def _sites(tree: ast.Module):
    """(node, replacement node or text, kind) for every mutation of the module."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip.add(id(body[0]))  # docstring
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                if arg.annotation is not None:
                    skip.update(id(n) for n in ast.walk(arg.annotation))
            if node.returns is not None:
                skip.update(id(n) for n in ast.walk(node.returns))
        if isinstance(node, ast.AnnAssign):
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) not in skip:
            yield from _node_sites(node)


def _replace(node: ast.AST, **fields) -> ast.AST:
    new = copy.deepcopy(node)
    for name, value in fields.items():
        setattr(new, name, value)
    return new


def _node_sites(node: ast.AST):
    if isinstance(node, ast.BinOp):
        for op in BINOP_SWAPS.get(type(node.op), []):
            yield node, _replace(node, op=op()), "operator"
    elif isinstance(node, ast.AugAssign):
        for op in BINOP_SWAPS.get(type(node.op), []):
            yield node, _replace(node, op=op()), "operator"
        yield node, "pass", "delete statement"
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            for swap in COMPARE_SWAPS.get(type(op), []):
                ops = list(node.ops)
                ops[i] = swap()
                yield node, _replace(node, ops=ops), "comparison"
    elif isinstance(node, ast.BoolOp):
        yield node, _replace(node, op=ast.Or() if isinstance(node.op, ast.And) else ast.And()), "boolean"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
        yield node, node.operand, "drop unary"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        yield node, ast.Constant(node.value + 1), "number"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield node, ast.Constant(not node.value), "boolean"
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in NAME_SWAPS:
            yield node, _replace(node, func=_replace(func, attr=NAME_SWAPS[func.attr])), "swap call"
        elif isinstance(func, ast.Name) and func.id in NAME_SWAPS:
            yield node, _replace(node, func=ast.Name(NAME_SWAPS[func.id])), "swap call"
        for i, keyword in enumerate(node.keywords):
            if keyword.arg is not None and keyword.arg not in KEEP_KEYWORDS:
                yield node, _replace(node, keywords=node.keywords[:i] + node.keywords[i + 1:]), "drop keyword"
    if isinstance(node, (ast.If, ast.IfExp, ast.While)) and not isinstance(node.test, (ast.Compare, ast.UnaryOp)):
        yield node.test, ast.UnaryOp(ast.Not(), node.test), "negate condition"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield from _statement_deletions(node)


def _statement_deletions(function: ast.FunctionDef):
    """Statements whose deletion leaves valid code: stores into tensors/attributes, re-assignments,
    calls made for their effect, raises (a deleted first assignment is a NameError: not worth a run)."""
    names: set[str] = {a.arg for a in [*function.args.args, *function.args.kwonlyargs, *function.args.posonlyargs]}
    inner = [n for n in ast.walk(function) if n is not function and hasattr(n, "lineno")]
    for node in sorted(inner, key=lambda n: (n.lineno, n.col_offset)):  # source order
        if isinstance(node, ast.Assign):
            targets = node.targets
            simple = all(isinstance(t, ast.Name) for t in targets)
            if not simple or all(t.id in names for t in targets):
                yield node, "pass", "delete statement"
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield node, "pass", "delete statement"
        elif isinstance(node, ast.Raise):
            yield node, "pass", "delete statement"
        elif isinstance(node, (ast.For, ast.With)) and isinstance(getattr(node, "target", None), ast.Name):
            names.add(node.target.id)


# --------------------------------------------------------------------------------------------- running


OWN = ("gdm", "launch", "conftest", "test_", "tests", "__main__", "__mp_main__")


def preload(copy_root: Path, modules: list[str]) -> None:
    """Import, once, every third-party module the tests of `modules` import (found by collecting them
    in a subprocess); every forked test run inherits them. gdm itself is never imported here."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_SILENT", "true")
    sys.dont_write_bytecode = True
    files = sorted({MODULES[m][0] for m in modules})
    probe = ("import json, sys; sys.path.insert(0, '.'); import pytest; "
             f"pytest.main({['--collect-only', '-q', '-p', 'no:cacheprovider', *files]!r}); "
             "print('MODULES=' + json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=copy_root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    names = json.loads(done.stdout.rsplit("MODULES=", 1)[1]) if "MODULES=" in done.stdout else []
    for name in names:
        if not name.startswith(OWN) and "._" not in name.lstrip("_"):
            with contextlib.suppress(Exception):
                importlib.import_module(name)
    import torch

    torch.set_num_threads(1)
    assert not any(m == "gdm" or m.startswith("gdm.") for m in sys.modules), "the children must import the copy's gdm"


class _KillersFirst:
    """pytest plugin: run the tests that killed earlier mutants first, and record the first failure."""

    def __init__(self, first: list[str], record: Path):
        self.first, self.record = first, record

    def pytest_collection_modifyitems(self, session, config, items):
        rank = {nodeid: i for i, nodeid in enumerate(self.first)}
        items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))

    def pytest_runtest_logreport(self, report):
        if report.failed and not self.record.exists():
            self.record.write_text(report.nodeid)


def run_tests(copy_root: Path, args: list[str], timeout: float, log: Path,
              killers: list[str] | None = None) -> tuple[str, float, str | None]:
    """('passed' | 'failed' | 'timeout', seconds, first failing test): the tests in a forked child
    rooted at the copy; `killers` run first."""
    record = log.with_suffix(".killer")
    record.unlink(missing_ok=True)
    began = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        code = 3
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy_root)
            sys.path.insert(0, str(copy_root))
            import pytest

            plugin = _KillersFirst(killers or [], record)
            code = int(pytest.main([*args, "-x", "-q", "-p", "no:cacheprovider"], plugins=[plugin]))
            import gdm

            if not Path(gdm.__file__).resolve().is_relative_to(copy_root.resolve()):
                print(f"gdm was imported from {gdm.__file__}, not from the copy", flush=True)
                code = 4
        finally:
            sys.stdout.flush()
            os._exit(code)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                killer = record.read_text() if record.exists() else None
                return ("passed" if code == 0 else "failed"), time.monotonic() - began, killer
            if time.monotonic() - began > timeout:
                break
            time.sleep(0.05)
    except BaseException:  # interrupted: take the test run down with us
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "timeout", time.monotonic() - began, None


def mutate_and_test(copy_root: Path, mutant: Mutant, timeout: float, log: Path,
                    killers: list[str]) -> tuple[str, float, str | None]:
    target = copy_root / mutant.module
    original = target.read_bytes()
    target.write_bytes(mutant.apply(original))
    try:
        return run_tests(copy_root, MODULES[mutant.module], timeout, log, killers)
    finally:
        target.write_bytes(original)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only these (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--check-equivalent", action="store_true",
                        help="also run the declared equivalent mutants, to confirm that they survive")
    args = parser.parse_args(argv)
    modules = args.module or list(MODULES)
    mutants = {m: mutants_of(m) for m in modules}
    if args.list:
        for module, found in mutants.items():
            print(f"# {module}: {len(found)} mutants")
            for mutant in found:
                print("  " + mutant.describe())
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the copy when stopped
    began = time.monotonic()
    report: dict = {"command": "nice -n 15 .venv/bin/python benchmarks/mutation.py", "modules": {}}
    stale = [list(key) for key in EQUIVALENT if key[0] in modules and not any(
        key[1] in m.before and key[2] in m.after for m in mutants[key[0]])]
    if stale:
        print(f"declared equivalent mutants that no longer exist (remove them): {stale}", file=sys.stderr)
        report["stale_equivalents"] = stale
    with tempfile.TemporaryDirectory(prefix="gdm-mutation-") as tmp:
        copy_root = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy_root, ignore=COPY_IGNORE)
        preload(copy_root, modules)
        log = Path(tmp) / "pytest.log"
        for module in modules:
            outcome, baseline, _ = run_tests(copy_root, MODULES[module], 600, log)
            if outcome != "passed":
                print(log.read_text()[-3000:], file=sys.stderr)
                raise SystemExit(f"{module}: the unmutated tests do not pass ({outcome}); fix them first")
            timeout = 5 * baseline + 60  # generous: on a shared machine a slow run is not a hang
            entry = {"tests": " ".join(MODULES[module]), "baseline_s": round(baseline, 2), "mutants": 0,
                     "killed": 0, "timeout": 0, "equivalent": [], "survivors": []}
            killers: list[str] = []  # most recent first
            for mutant in mutants[module]:
                reason = equivalent_reason(mutant)
                if args.check_equivalent and reason is None:
                    continue
                entry["mutants"] += 1
                if reason is not None and not args.check_equivalent:
                    entry["equivalent"].append({**_brief(mutant), "reason": reason})
                    continue
                outcome, seconds, killer = mutate_and_test(copy_root, mutant, timeout, log, killers)
                if reason is not None:  # --check-equivalent: a declared equivalent mutant must survive
                    entry["equivalent"].append({**_brief(mutant), "reason": reason, "survived": outcome == "passed"})
                    print(f"{'equivalent' if outcome == 'passed' else 'KILLED (not equivalent!)'}  {mutant.describe()}",
                          flush=True)
                    continue
                if killer:
                    killers = [killer, *(k for k in killers if k != killer)]
                entry["killed"] += outcome != "passed"
                entry["timeout"] += outcome == "timeout"
                if outcome == "passed":
                    entry["survivors"].append(_brief(mutant))
                if outcome == "timeout":
                    entry.setdefault("timeouts", []).append(_brief(mutant))
                print(f"{'SURVIVED' if outcome == 'passed' else outcome:>8} {seconds:5.1f}s  {mutant.describe()}",
                      flush=True)
            _score(entry)
            report["modules"][module] = entry
            print(f"== {module}: {entry['killed']}/{entry['scored']} killed ({entry['score']:.1%})", flush=True)
    overall = {k: sum(e[k] for e in report["modules"].values()) for k in ("mutants", "killed", "timeout", "scored")}
    overall["equivalent"] = sum(len(e["equivalent"]) for e in report["modules"].values())
    overall["survivors"] = sum(len(e["survivors"]) for e in report["modules"].values())
    overall["score"] = overall["killed"] / max(overall["scored"], 1)
    overall["raw_score"] = overall["killed"] / max(overall["mutants"], 1)
    report["overall"] = overall
    report["seconds"] = round(time.monotonic() - began, 1)
    if not args.module and not args.check_equivalent:  # a partial run never overwrites the full record
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"overall": overall, "seconds": report["seconds"],
                      "per_module": {m: round(e["score"], 3) for m, e in report["modules"].items()}}, indent=2))
    return 0 if overall["score"] >= 0.9 else 1


def _brief(mutant: Mutant) -> dict:
    fields = asdict(mutant)
    return {k: fields[k] for k in ("line", "kind", "before", "after")}


def _score(entry: dict) -> None:
    entry["scored"] = entry["mutants"] - len(entry["equivalent"])
    entry["score"] = entry["killed"] / max(entry["scored"], 1)
    entry["raw_score"] = entry["killed"] / max(entry["mutants"], 1)


if __name__ == "__main__":
    sys.exit(main())
