#!/usr/bin/env bash
# Stop the one-node cluster started by slurm/start_local_cluster.sh (slurmd, slurmctld; munged too
# with --all). Its state directory is kept, so a restart remembers job ids; delete it to start clean.
set -euo pipefail

STATE_DIR="${GDM_SLURM_DIR:-/tmp/gdm-slurm}"

stop_pidfile() {
    local pidfile="$1"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        echo "[stop_local_cluster] stopped $(basename "$pidfile" .pid)"
    fi
}

stop_pidfile "$STATE_DIR/run/slurmd.pid"
stop_pidfile "$STATE_DIR/run/slurmctld.pid"
if [[ "${1:-}" == "--all" ]]; then
    stop_pidfile /run/munge/munged.pid
fi
