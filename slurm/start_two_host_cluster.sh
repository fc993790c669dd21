#!/usr/bin/env bash
# Start a two-host SLURM cluster on this one machine (Debian's slurm-wlm 22.05), for the multi-node tests:
#
#   sudo bash slurm/start_two_host_cluster.sh       # idempotent: creates what is missing, starts what is stopped
#   SLURM_CONF=/tmp/gdm-slurm2/slurm.conf sinfo      # two nodes, gdm-n1 and gdm-n2, idle
#   sudo bash slurm/stop_two_host_cluster.sh
#
# Each host is a network namespace (gdm-n1, gdm-n2) with its own address on a bridge, its own /etc/hosts
# entry and its own UTS namespace (so `hostname` inside a job is the node's name and resolves to the
# node's address, as on a real cluster), running its own slurmd (-N NODE; spool, pid and log paths
# with %n). One slurmctld runs outside the namespaces, on the bridge, and the munge key is the one of
# slurm/start_local_cluster.sh (that script installs the packages and starts munged; run it first).
#
# It coexists with the one-node cluster: its own slurm.conf (not /etc/slurm/slurm.conf, so select it
# with SLURM_CONF), ports 6827/6828 instead of 6817/6818, its own state directory $GDM_SLURM2_DIR
# (default /tmp/gdm-slurm2). Every node declares the machine's CPUs, so the two "hosts" share its cores.
#
# It accepts its own traffic whatever the machine's firewall: Docker (started once with its defaults) sets
# the iptables FORWARD policy to DROP and loads br_netfilter with bridge-nf-call-iptables=1, so frames
# between the namespaces, crossing the bridge, go through FORWARD and are dropped ("Task launch ... failed
# on node gdm-n2: Communication connection failure"). The script inserts ACCEPT rules for its bridge
# (tagged with a comment, added once) at the top of FORWARD and INPUT; stop_two_host_cluster.sh --all
# removes them. The global sysctl is left alone: other bridges (Docker's) rely on it, and a bridge's own
# nf_call_iptables can only add to the global setting, not turn it off.
set -euo pipefail

STATE_DIR="${GDM_SLURM2_DIR:-/tmp/gdm-slurm2}"
SUBNET="${GDM_SLURM2_SUBNET:-10.213.7}"  # /24 of the bridge: .1 the controller, .11, .12 the nodes
BRIDGE=gdmbr2
NODES=(gdm-n1 gdm-n2)
CTLD_PORT=6827
SLURMD_PORT=6828
HOST="$(hostname -s)"
CPUS="${GDM_SLURM_CPUS:-$(nproc)}"
# Each node gets 40% of the memory: the two stay below the machine's, so slurmd never drains for "low memory".
MEM_MB="${GDM_SLURM_MEM_MB:-$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 4 / 10 ))}"
HOSTS_MARK="# gdm two-host cluster"
FIREWALL_MARK="gdm two-host cluster"  # the comment on its iptables rules

log() { echo "[start_two_host_cluster] $*"; }
fail() { echo "start_two_host_cluster.sh: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || fail "run as root (it creates network namespaces and starts slurmd)"
command -v slurmctld >/dev/null && command -v munge >/dev/null \
    || fail "slurm-wlm / munge are not installed: run slurm/start_local_cluster.sh first (it installs them)"
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 \
    || fail "munged is not running: run slurm/start_local_cluster.sh first (it starts munged with the shared key)"

node_addr() { echo "${SUBNET}.$((11 + $1))"; }
# Whether the output of a command (the arguments after the first) contains the first argument. Not
# `cmd | grep -q`: under pipefail, grep closing the pipe early fails the pipeline.
output_has() { local text; text="$("${@:2}")"; [[ "$text" == *"$1"* ]]; }

make_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "creating bridge $BRIDGE (${SUBNET}.1/24)"
        ip link add "$BRIDGE" type bridge
    fi
    output_has "${SUBNET}.1/24" ip addr show dev "$BRIDGE" || ip addr add "${SUBNET}.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

# One namespace per host, joined to the bridge by a veth pair; inside, the interface is called eth0
# (the name to give GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME should a job need one).
make_host() {
    local index="$1" name="${NODES[$1]}" outside="veth-${NODES[$1]}"
    [[ -e "/var/run/netns/$name" ]] || { log "creating namespace $name"; ip netns add "$name"; }
    if ! ip link show "$outside" >/dev/null 2>&1; then
        ip link add "$outside" type veth peer name "in-$name"
        ip link set "in-$name" netns "$name"
        ip -n "$name" link set "in-$name" name eth0
    fi
    ip link set "$outside" master "$BRIDGE" up
    ip -n "$name" link set lo up
    ip -n "$name" link set eth0 up
    output_has "$(node_addr "$index")/24" ip -n "$name" addr show dev eth0 \
        || ip -n "$name" addr add "$(node_addr "$index")/24" dev eth0
    output_has default ip -n "$name" route show default || ip -n "$name" route add default via "${SUBNET}.1"
}

# One iptables rule, inserted at the top of its chain unless already there (-C), so reruns add nothing.
accept_rule() {
    local chain="$1"; shift
    iptables -w -C "$chain" "$@" -m comment --comment "$FIREWALL_MARK" -j ACCEPT 2>/dev/null \
        || iptables -w -I "$chain" 1 "$@" -m comment --comment "$FIREWALL_MARK" -j ACCEPT
}

# FORWARD: node to node across the bridge (seen by iptables when br_netfilter calls it for bridged
# frames); INPUT: the nodes to slurmctld on the bridge's address. Without iptables there is no such
# firewall to open.
open_firewall() {
    if ! command -v iptables >/dev/null; then
        log "no iptables here: no FORWARD rules to add"
        return 0
    fi
    accept_rule FORWARD -i "$BRIDGE" -o "$BRIDGE"
    accept_rule INPUT -i "$BRIDGE"
    log "iptables accepts $BRIDGE traffic (FORWARD policy: $(iptables -w -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}'))"
}

# /etc/hosts is rewritten in place (it may be a bind mount, which a rename would not replace).
write_hosts() {
    local kept entries=""
    kept="$(grep -v "$HOSTS_MARK" /etc/hosts || true)"
    for i in "${!NODES[@]}"; do entries+="$(node_addr "$i") ${NODES[$i]} $HOSTS_MARK"$'\n'; done
    printf '%s\n%s' "$kept" "$entries" >/etc/hosts
}

write_config() {
    mkdir -p "$STATE_DIR"/{state,spool,log,run}
    local node_lines="" i
    for i in "${!NODES[@]}"; do
        node_lines+="NodeName=${NODES[$i]} NodeAddr=$(node_addr "$i") CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN"$'\n'
    done
    cat >"$STATE_DIR/slurm.conf.new" <<EOF
# Written by gdm slurm/start_two_host_cluster.sh: two hosts (network namespaces) on one machine, for tests.
ClusterName=gdm-two-host
SlurmctldHost=${HOST}(${SUBNET}.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds (120 by default) before it may start again: 20 keeps the
# preemption tests short; step credentials are used within a second or two here.
AuthInfo=cred_expire=20
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
# Deliver --signal (submitit's USR2 before the time limit) and scancel --signal to the user's processes.
SlurmctldParameters=preempt_send_user_signal
StateSaveLocation=${STATE_DIR}/state
SlurmdSpoolDir=${STATE_DIR}/spool/%n
SlurmctldPidFile=${STATE_DIR}/run/slurmctld.pid
SlurmdPidFile=${STATE_DIR}/run/slurmd-%n.pid
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd-%n.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MaxArraySize=1001
SchedulerType=sched/backfill
SchedulerParameters=defer_batch
MinJobAge=300
${node_lines}PartitionName=two Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # No cgroup.conf beside slurm.conf: the 22.05 daemons then autodetect the cgroup version (they read
    # it even with proctrack/linuxproc), and "CgroupPlugin=disabled" is not a 22.05 value (slurmd dies).
    rm -f "$STATE_DIR/cgroup.conf"
    if cmp -s "$STATE_DIR/slurm.conf.new" "$STATE_DIR/slurm.conf"; then
        rm "$STATE_DIR/slurm.conf.new"
    else
        mv "$STATE_DIR/slurm.conf.new" "$STATE_DIR/slurm.conf"
        CONFIG_CHANGED=1
    fi
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A changed slurm.conf needs the daemons restarted: `scontrol reconfigure` leaves some settings
# (cred_expire among them) at their old values. Running jobs survive (their slurmstepd stay up).
stop_daemon() {
    running "$1" || return 0
    log "restarting $(basename "$1" .pid): slurm.conf changed"
    kill "$(cat "$1")"
    for _ in $(seq 50); do running "$1" || return 0; sleep 0.2; done
    fail "$(basename "$1" .pid) did not stop (pid $(cat "$1"))"
}

# slurmd enters the host's namespace with nsenter, not `ip netns exec`: the latter remounts /sys,
# which hides /sys/fs/cgroup, and slurmd then stops with "Unable to initialize cgroup plugin".
# `unshare --uts` gives the host its own hostname, inherited by every job slurmd starts.
start_daemons() {
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    if [[ -n "${CONFIG_CHANGED:-}" ]]; then
        for pidfile in "$STATE_DIR"/run/*.pid; do [[ -e "$pidfile" ]] && stop_daemon "$pidfile"; done
    fi
    if ! running "$STATE_DIR/run/slurmctld.pid"; then
        log "starting slurmctld on ${SUBNET}.1:${CTLD_PORT}"
        slurmctld -f "$SLURM_CONF"
    fi
    local name
    for name in "${NODES[@]}"; do
        running "$STATE_DIR/run/slurmd-$name.pid" && continue
        log "starting slurmd $name"
        mkdir -p "$STATE_DIR/spool/$name"
        nsenter --net="/var/run/netns/$name" unshare --uts \
            sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' slurmd-start "$name" "$SLURM_CONF" \
            || fail "slurmd $name did not start; see $STATE_DIR/log/slurmd-$name.log"
    done
}

wait_idle() {
    local states node
    for _ in $(seq 60); do
        states="$(sinfo -h -N -o '%N %T' 2>/dev/null || true)"
        if [[ "$(grep -cE ' (idle|mixed|allocated|completing)$' <<<"$states")" -eq "${#NODES[@]}" ]]; then
            log "nodes up: $(tr '\n' ' ' <<<"$states")"
            return 0
        fi
        for node in $(awk '$2 ~ /^(down|drain)/ {print $1}' <<<"$states"); do
            scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true
        done
        sleep 1
    done
    echo "start_two_host_cluster.sh: the nodes did not come up; see $STATE_DIR/log/" >&2
    sinfo -N >&2 || true
    return 1
}

make_bridge
open_firewall
for index in "${!NODES[@]}"; do make_host "$index"; done
write_hosts
write_config
start_daemons
wait_idle
