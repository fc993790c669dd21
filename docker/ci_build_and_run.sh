#!/usr/bin/env bash
# CI's Docker stage: build both images and run the README's CPU quickstart in a container, so a broken
# Dockerfile, a packaging error or a permission problem on the mounted runs folder fails CI.
#
#   bash docker/ci_build_and_run.sh        # as root, from anywhere; idempotent (a second run reuses images)
#
# 1. docker.io and debootstrap from Debian if missing; dockerd started if none answers, with
#    --iptables=false --bridge=none: its defaults set the iptables FORWARD policy to DROP (which cuts the
#    two-host SLURM test cluster's namespaces off) and put a bridge on a private range.
# 2. python:3.11-slim, when the engine has none and cannot pull one: a Debian bookworm root file system
#    (debootstrap, Python 3.11) imported under that name, a venv first on PATH and pip configured as this
#    machine's pip is (CA bundle, local wheel folders), so `FROM python:3.11-slim` builds unmodified.
# 3. docker/Dockerfile.cpu built unmodified (`docker build --network host`: the build reaches the package
#    index), the quickstart run with `--network none` on a host folder, `gdm status` after it, and on the
#    host: every item DONE, report/summary.csv present, every file owned by the image's USER.
# 4. docker/Dockerfile's install logic built on the same stand-in (BASE_IMAGE, and TORCH_VERSION for the CPU
#    wheel instead of the CUDA base's torch: no GB download), then `import gdm` in it.
# Secrets: none is passed to a build; the quickstart runs W&B offline with no key.
set -euo pipefail

BASE=python:3.11-slim               # what both Dockerfiles build FROM in CI
CPU_TAG=gdm:cpu                     # the README's tag
CUDA_CI_TAG=gdm:cuda-install-check  # docker/Dockerfile on the stand-in base (no CUDA in it)
# The CPU wheel of docker/Dockerfile.cpu, so docker/Dockerfile's install runs without the CUDA build.
TORCH_VERSION=2.13.0
TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The README's `docker run ... gdm:cpu run configs/quickstart.yaml`, made smaller (2 n instead of 4, 20 steps
# instead of 200: about 2.5 min on 2 loaded cores instead of 20), with --network none: gdm needs no network.
QUICKSTART_OVERRIDES=('n_train=[1,10]' trainer.max_steps=20)
DOCKERD_LOG=/var/log/gdm-ci-dockerd.log
export DOCKER_BUILDKIT=0            # the classic builder: uses the local base image, never pulls

T0=$SECONDS
STAGE_T0=$SECONDS
stage() {
    echo "=== docker-ci: $* (stage start at +$((SECONDS - T0)) s; previous stage took $((SECONDS - STAGE_T0)) s)"
    STAGE_T0=$SECONDS
}
fail() {
    echo "docker-ci FAILED: $*" >&2
    exit 1
}

install_tools() {
    command -v dockerd >/dev/null && command -v docker >/dev/null && command -v debootstrap >/dev/null && return
    [ "$(id -u)" = 0 ] || fail "docker.io/debootstrap missing and not root: apt-get install docker.io debootstrap"
    # No init script may start dockerd with its defaults during the install (see FORWARD above).
    local guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap \
        || fail "apt-get install docker.io debootstrap"
    [ -z "$guard" ] || rm -f "$guard"
}

STARTED_DOCKERD=""
start_dockerd() {
    if docker info >/dev/null 2>&1; then
        echo "dockerd already answers (not started here)"
        return
    fi
    setsid dockerd --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
        </dev/null >>"$DOCKERD_LOG" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && { echo "dockerd started (pid $STARTED_DOCKERD)"; return; }
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
        sleep 1
    done
    tail -20 "$DOCKERD_LOG" >&2
    fail "dockerd did not answer within 60 s (log: $DOCKERD_LOG)"
}

stop_dockerd() {
    # Only the daemon this script started: CI leaves no engine running behind it.
    [ -n "$STARTED_DOCKERD" ] || return 0
    kill "$STARTED_DOCKERD" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || return 0; sleep 1; done
}

# pip's effective setting $1 here (files, then PIP_* variables: the last one wins).
pip_setting() {
    python3 -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'$/\1/p" | tail -1
}

# The index this machine's pip installs from: its configured index-url, else pip's default.
pip_index() {
    local index
    index=$(pip_setting index-url)
    [ -n "$index" ] || index=$(python3 -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')
    echo "$index"
}

# Writes $1/etc/pip.conf from this machine's pip: its CA bundle, its local wheel folders (copied in) and its
# index as an *extra* index, so a Dockerfile's `--index-url` (the CPU wheel index, which this machine may
# not reach) adds to it instead of replacing it. Two retries, not five: an unreachable index then costs
# about 1.5 s per package instead of 8.
configure_pip() {
    local root=$1 cert links="" dir
    cert=$(pip_setting cert)
    for dir in $(pip_setting find-links); do
        [ -d "$dir" ] || continue
        mkdir -p "$root$dir" && cp -a "$dir/." "$root$dir/"
        links="$links $dir"
    done
    {
        echo "[global]"
        echo "extra-index-url = $(pip_index)"
        echo "retries = 2"
        [ -z "$links" ] || echo "find-links =$links"
        if [ -n "$cert" ] && [ -f "$cert" ]; then
            mkdir -p "$root$(dirname "$cert")" && cp "$cert" "$root$cert"
            echo "cert = $cert"
        fi
    } > "$root/etc/pip.conf"
    echo "stand-in pip.conf:"; sed 's/^/    /' "$root/etc/pip.conf"
}

# The stand-in's recipe version: bump it when make_base_image changes, so machines rebuild their stand-in.
STAND_IN_VERSION=2
make_base_image() {
    local root version
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        version=$(docker image inspect -f '{{index .Config.Labels "org.gdm.ci-stand-in"}}' "$BASE")
        if [ -z "$version" ] || [ "$version" = "$STAND_IN_VERSION" ]; then
            echo "$BASE present (stand-in version '${version:-none: a real image}'): reused"
            return
        fi
        echo "$BASE is stand-in version $version, not $STAND_IN_VERSION: made again"
        docker image rm "$BASE" >/dev/null
    fi
    root=$(mktemp -d /var/tmp/gdm-ci-rootfs.XXXXXX)
    ROOTFS=$root  # removed on exit, whatever happens
    echo "debootstrap bookworm (minbase, python3, python3-venv, ca-certificates) into $root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
        > /var/tmp/gdm-ci-debootstrap.log 2>&1 || { tail -20 /var/tmp/gdm-ci-debootstrap.log >&2; fail "debootstrap"; }
    chroot "$root" python3 -m venv /opt/venv || fail "venv in the stand-in root file system"
    configure_pip "$root"
    chroot "$root" apt-get clean
    echo "root file system ready after $((SECONDS - STAGE_T0)) s; docker import"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL org.gdm.ci-stand-in=$STAND_IN_VERSION" \
        --message "gdm CI stand-in for $BASE: Debian bookworm, Python 3.11 venv on PATH" \
        - "$BASE" || fail "docker import of the stand-in $BASE"
    docker run --rm --network none "$BASE" python -c 'import sys; assert sys.version_info[:2] == (3, 11)' \
        || fail "the stand-in $BASE has no Python 3.11 on PATH"
}

# The image's USER as a numeric uid (the owner of everything the container writes on a host volume).
image_uid() {
    local user
    user=$(docker image inspect -f '{{.Config.User}}' "$CPU_TAG")
    [[ "${user%%:*}" =~ ^[0-9]+$ ]] && [ "${user%%:*}" != 0 ] \
        || fail "$CPU_TAG declares USER '$user': expected a numeric uid other than 0"
    echo "${user%%:*}"
}

# On the host: every item of `gdm status` ($2) DONE in the run directory ($1), the report's table there,
# and every file under the mounted folder ($3) owned by the image's uid ($4).
check_results() {
    local run_dir=$1 status=$2 mounted=$3 uid=$4 ids id summary not_owned
    ids=$(awk '$1 == "train" || $1 == "eval" {print $2}' <<<"$status")
    [ -n "$ids" ] || fail "gdm status lists no train or eval item"
    [ "$(tail -1 <<<"$status")" = "$(wc -l <<<"$ids") done" ] \
        || fail "gdm status: not every item is done: '$(tail -1 <<<"$status")' for $(wc -l <<<"$ids") items"
    for id in $ids; do
        [ -f "$run_dir/$id/DONE" ] || fail "$id: no DONE on the host volume ($run_dir/$id)"
    done
    summary="$run_dir/report/summary.csv"
    [ "$(wc -l < "$summary" 2>/dev/null || echo 0)" -ge 2 ] || fail "$summary missing or without a row"
    not_owned=$(find "$mounted" -mindepth 1 ! -uid "$uid" | head -5)
    [ -z "$not_owned" ] || fail "files on the host volume not owned by uid $uid (the image's USER): $not_owned"
    echo "host volume: $(wc -l <<<"$ids") items DONE, $(($(wc -l < "$summary") - 1)) rows in report/summary.csv," \
        "every file owned by uid $uid"
}

# The README's quickstart (with QUICKSTART_OVERRIDES), then `gdm status`, on a fresh host folder.
run_quickstart() {
    local runs uid run_dir status
    runs=$(mktemp -d /var/tmp/gdm-ci-runs.XXXXXX)
    uid=$(image_uid)
    chown "$uid" "$runs"  # the README: make runs/ writable by the container's uid
    docker run --rm --network none -v "$runs:/app/runs" "$CPU_TAG" \
        run configs/quickstart.yaml "${QUICKSTART_OVERRIDES[@]}" --no-progress 2>&1 | tee "$runs.log" \
        || fail "the quickstart in $CPU_TAG exited non-zero (results in $runs)"
    run_dir=$(sed -n 's|^run directory: runs/||p' "$runs.log")
    [ -n "$run_dir" ] && [ -d "$runs/$run_dir" ] || fail "no 'run directory: runs/...' in gdm run's output"
    status=$(docker run --rm --network none -v "$runs:/app/runs" "$CPU_TAG" \
        status configs/quickstart.yaml "${QUICKSTART_OVERRIDES[@]}") || fail "gdm status in $CPU_TAG exited non-zero"
    echo "$status"
    check_results "$runs/$run_dir" "$status" "$runs" "$uid"
    rm -rf "$runs" "$runs.log"
}

build_cuda_install() {
    docker build --network host --force-rm -f docker/Dockerfile -t "$CUDA_CI_TAG" \
        --build-arg BASE_IMAGE="$BASE" --build-arg TORCH_VERSION="$TORCH_VERSION" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" . || fail "docker build -f docker/Dockerfile on $BASE"
    # From /tmp, so that the installed gdm is imported, not /app's source folder.
    docker run --rm --network none --workdir /tmp --entrypoint python "$CUDA_CI_TAG" -c \
        'import gdm.cli, torch; print("gdm", gdm.__file__, "torch", torch.__version__)' \
        || fail "import gdm in $CUDA_CI_TAG"
}

forward_policy() {
    command -v iptables >/dev/null && iptables -w -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' || true
}

# The machine's FORWARD policy may be DROP already (a firewall, an earlier Docker): only a change made while
# this script ran is dockerd's doing.
check_host_untouched() {
    local now
    now="$(forward_policy)"
    # No iptables before (the install brings it): the kernel's default, ACCEPT, is what must remain.
    if [ "$now" != "${FORWARD_BEFORE:-ACCEPT}" ] && [ -n "$now" ]; then
        fail "the iptables FORWARD policy went from ${FORWARD_BEFORE:-none} to ${now:-none} (was dockerd started with its defaults? see $DOCKERD_LOG)"
    fi
    ! command -v sinfo >/dev/null || sinfo  # the SLURM test clusters, for the log
}

ROOTFS=""
on_exit() {
    [ -z "$ROOTFS" ] || rm -rf "$ROOTFS"
    stop_dockerd
}

main() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    trap on_exit EXIT
    FORWARD_BEFORE="$(forward_policy)"
    stage "tools (docker.io, debootstrap)"; install_tools
    stage "dockerd"; start_dockerd
    stage "base image $BASE"; make_base_image
    stage "build docker/Dockerfile.cpu"
    docker build --network host --force-rm -f docker/Dockerfile.cpu -t "$CPU_TAG" . || fail "docker build -f docker/Dockerfile.cpu"
    stage "quickstart in $CPU_TAG (--network none, runs on a host folder)"; run_quickstart
    stage "docker/Dockerfile's install on $BASE"; build_cuda_install
    stage "host checks"; check_host_untouched
    stage "prune dangling images (old builds of these tags)"; docker image prune -f >/dev/null
    stage "done"
    echo "docker-ci: passed in $((SECONDS - T0)) s"
}

# Run, unless sourced (tests/test_docker.py sources it to call check_results): `return` works only then.
(return 0 2>/dev/null) || main "$@"
