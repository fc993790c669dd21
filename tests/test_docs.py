"""The README and docs/ stay true: every link resolves, every `gdm` command they show parses as written and,
where it can run without a cluster or data, runs (as a dry run, against a temporary root)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gdm.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
README_LIMIT = 12_000  # bytes: the README is the user's path; the rest lives in docs/


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in target]


def commands(page: Path) -> list[str]:
    """The `gdm …` lines of a page's shell code blocks, comments dropped, `.venv/bin/` prefixes removed."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    lines = [re.sub(r"^(\.venv/bin/)", "", line) for line in lines]
    return [line for line in lines if line.startswith("gdm ")]


def test_the_readme_is_short_and_every_link_resolves():
    assert len((REPO / "README.md").read_bytes()) <= README_LIMIT
    broken = [f"{page.name}: {target}" for page in PAGES for target in links(page)
              if not (page.parent / target.split("#")[0]).exists()]
    assert broken == []


def test_the_pages_show_commands():
    assert len(commands(REPO / "README.md")) >= 5  # the extraction itself works


@pytest.mark.parametrize("line", sorted({c for page in PAGES for c in commands(page)}))
def test_every_documented_command_parses_and_dry_runs(line, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    words = shlex.split(line)[1:]
    args, extra = build_parser().parse_known_args(words)  # options as written
    files = [w for w in [args.config, *args.overrides, *extra] if w.endswith((".yaml", ".yml"))]
    assert all((REPO / f).is_file() for f in files), files
    source = [f"{w.split('=')[0]}={tmp_path}" for w in words if ".source=" in w]  # the data is not here
    root = [f"root={tmp_path}"]
    if args.command == "run" and not getattr(args, "detach", False):
        assert main([*words, *source, *root, *([] if args.dry_run else ["--dry-run"])]) == 0
    elif args.command in ("status", "cells", "report"):
        assert main([*words, *source, *root]) == 0
    capsys.readouterr()
