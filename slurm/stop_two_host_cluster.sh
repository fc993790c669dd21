#!/usr/bin/env bash
# Stop the two-host cluster started by slurm/start_two_host_cluster.sh (both slurmd, slurmctld); with
# --all also remove its namespaces, bridge and /etc/hosts entries. Its state directory is kept, so a
# restart remembers job ids; delete it to start clean. munged is shared with the one-node cluster: see
# slurm/stop_local_cluster.sh --all.
set -euo pipefail

STATE_DIR="${GDM_SLURM2_DIR:-/tmp/gdm-slurm2}"
NODES=(gdm-n1 gdm-n2)
BRIDGE=gdmbr2

stop_pidfile() {
    local pidfile="$1"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        echo "[stop_two_host_cluster] stopped $(basename "$pidfile" .pid)"
    fi
}

for name in "${NODES[@]}"; do stop_pidfile "$STATE_DIR/run/slurmd-$name.pid"; done
stop_pidfile "$STATE_DIR/run/slurmctld.pid"
if [[ "${1:-}" == "--all" ]]; then
    for name in "${NODES[@]}"; do
        [[ -e "/var/run/netns/$name" ]] && ip netns del "$name"  # takes its end of the veth pair with it
        ip link del "veth-$name" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    kept="$(grep -v "# gdm two-host cluster" /etc/hosts || true)"
    printf '%s\n' "$kept" >/etc/hosts  # in place: /etc/hosts may be a bind mount
    echo "[stop_two_host_cluster] removed namespaces, bridge $BRIDGE and /etc/hosts entries"
fi
