#!/usr/bin/env bash
# Stop the two-host cluster started by slurm/start_two_host_cluster.sh (both slurmd, slurmctld); with
# --all also remove its namespaces, bridge and /etc/hosts entries. Its state directory is kept, so a
# restart remembers job ids; delete it to start clean. --all also deletes the iptables ACCEPT rules the start
# script added for its bridge. munged is shared with the one-node cluster: see
# slurm/stop_local_cluster.sh --all.
set -euo pipefail

STATE_DIR="${GDM_SLURM2_DIR:-/tmp/gdm-slurm2}"
NODES=(gdm-n1 gdm-n2)
BRIDGE=gdmbr2
FIREWALL_MARK="gdm two-host cluster"

# Delete every copy of one ACCEPT rule of the start script (-D removes one per call).
drop_rule() {
    local chain="$1"; shift
    while iptables -w -D "$chain" "$@" -m comment --comment "$FIREWALL_MARK" -j ACCEPT 2>/dev/null; do :; done
}

# Waits until the daemon has exited: start_two_host_cluster.sh run right after would otherwise see it still
# alive, skip starting it, and then find no controller.
stop_pidfile() {
    local pidfile="$1" pid
    [[ -f "$pidfile" ]] && pid="$(cat "$pidfile")" && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # A slurmd that cannot reach its controller sits in a registration retry and ignores SIGTERM.
    if kill -0 "$pid" 2>/dev/null; then
        echo "[stop_two_host_cluster] $(basename "$pidfile" .pid) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    echo "[stop_two_host_cluster] stopped $(basename "$pidfile" .pid)"
}

for name in "${NODES[@]}"; do stop_pidfile "$STATE_DIR/run/slurmd-$name.pid"; done
stop_pidfile "$STATE_DIR/run/slurmctld.pid"
if [[ "${1:-}" == "--all" ]]; then
    for name in "${NODES[@]}"; do
        [[ -e "/var/run/netns/$name" ]] && ip netns del "$name"  # takes its end of the veth pair with it
        ip link del "veth-$name" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
    if command -v iptables >/dev/null; then
        drop_rule FORWARD -i "$BRIDGE" -o "$BRIDGE"
        drop_rule INPUT -i "$BRIDGE"
    fi
    kept="$(grep -v "# gdm two-host cluster" /etc/hosts || true)"
    printf '%s\n' "$kept" >/etc/hosts  # in place: /etc/hosts may be a bind mount
    echo "[stop_two_host_cluster] removed namespaces, bridge $BRIDGE, its iptables rules and /etc/hosts entries"
fi
