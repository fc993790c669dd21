#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian's slurm-wlm 22.05), for tests and demos.
#
#   sudo bash slurm/start_local_cluster.sh      # idempotent: installs if missing, starts if stopped
#   sinfo                                       # one node, idle
#   bash slurm/stop_local_cluster.sh
#
# Must run as root (apt-get, munged, slurmd). State, spool, pids and logs live in $GDM_SLURM_DIR
# (default /tmp/gdm-slurm); the config is written there and to /etc/slurm/slurm.conf so that plain
# `sbatch`, `squeue`, `sinfo` work without SLURM_CONF. Accounting is disabled: `sacct` reports no
# jobs, so submitit reads job states as UNKNOWN and gdm reads outcomes from the run directory.
set -euo pipefail

STATE_DIR="${GDM_SLURM_DIR:-/tmp/gdm-slurm}"
HOST="$(hostname -s)"
CPUS="${GDM_SLURM_CPUS:-$(nproc)}"
# RealMemory below the machine's so slurmd never drains the node for "low memory".
MEM_MB="${GDM_SLURM_MEM_MB:-$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 8 / 10 ))}"

log() { echo "[start_local_cluster] $*"; }

if [[ $EUID -ne 0 ]]; then
    echo "start_local_cluster.sh: run as root (it installs packages and starts munged/slurmd)" >&2
    exit 1
fi

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get -y -qq install --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
    mkdir -p /run/munge /etc/munge /var/lib/munge /var/log/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating a munge key"
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
    chown -R munge:munge /run/munge /etc/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
    if ! munge -n >/dev/null 2>&1; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged --force
        sleep 1
    fi
    munge -n | unmunge >/dev/null
}

write_config() {
    mkdir -p "$STATE_DIR"/{state,spool,log,run} /etc/slurm
    cat >"$STATE_DIR/slurm.conf" <<EOF
# Written by gdm slurm/start_local_cluster.sh: a one-node cluster for tests.
ClusterName=gdm-local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again 20 s after it ended (the default credential lifetime holds it 120 s).
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
SlurmdSpoolDir=${STATE_DIR}/spool
SlurmctldPidFile=${STATE_DIR}/run/slurmctld.pid
SlurmdPidFile=${STATE_DIR}/run/slurmd.pid
SlurmctldLogFile=${STATE_DIR}/log/slurmctld.log
SlurmdLogFile=${STATE_DIR}/log/slurmd.log
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MaxArraySize=1001
SchedulerType=sched/backfill
SchedulerParameters=defer_batch
MinJobAge=300
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    cp "$STATE_DIR/slurm.conf" /etc/slurm/slurm.conf
    # cgroup.conf is read by some 22.05 daemons even with proctrack/linuxproc.
    [[ -f /etc/slurm/cgroup.conf ]] || echo "CgroupPlugin=disabled" >/etc/slurm/cgroup.conf
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_daemons() {
    export SLURM_CONF="$STATE_DIR/slurm.conf"
    if ! running "$STATE_DIR/run/slurmctld.pid"; then
        log "starting slurmctld"
        slurmctld -f "$SLURM_CONF"
    fi
    if ! running "$STATE_DIR/run/slurmd.pid"; then
        log "starting slurmd"
        slurmd -f "$SLURM_CONF"
    fi
}

wait_idle() {
    for _ in $(seq 60); do
        state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
        case "$state" in
            idle|mixed|allocated) log "node $HOST is $state"; return 0 ;;
            down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "start_local_cluster.sh: the node did not come up; see $STATE_DIR/log/" >&2
    sinfo >&2 || true
    return 1
}

install_packages
start_munge
write_config
start_daemons
wait_idle
