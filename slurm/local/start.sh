#!/usr/bin/env bash
# Start a single-node Slurm cluster whose config, state, spool, logs and PID files
# all live under SCRATCH.  Usage: slurm/local/start.sh SCRATCH
#   Prints "export SLURM_CONF=SCRATCH/slurm.conf" on stdout (everything else on stderr).
#   munged: reused when one already answers on the default socket; otherwise started
#   here (PID file SCRATCH/munge/munged.pid) and stopped again by stop.sh.
#   Env: SLURM_LOCAL_CTLD_PORT (default 6817), SLURM_LOCAL_SLURMD_PORT (default 6818),
#        SLURM_LOCAL_WAIT (seconds to wait for the node to become idle, default 60),
#        SLURM_LOCAL_GPUS (default 0): declare that many fake GPUs (gres/gpu backed by
#        SCRATCH/dev/nvidia<i>, copies of /dev/null made with mknod) so that jobs can request
#        --gpus-per-task and the scripts' GPU path can be tested; nothing runs on them.
#   The node has the machine's CPUs (CR_Core: a 2-core machine runs one 2-task job, or two
#   1-task jobs, at a time); no task binding (TaskPlugin=task/none), MPI plugins via
#   `srun --mpi=pmix` (MpiDefault=none), requeue allowed (JobRequeue=1), finished jobs visible
#   to `scontrol show job` for 10 minutes (MinJobAge=600).
#   Needs root (SlurmUser=root) and the packages slurm-wlm and munge.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 SCRATCH" >&2; exit 2; }
mkdir -p "$1"
S=$(cd "$1" && pwd)
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
WAIT=${SLURM_LOCAL_WAIT:-60}
GPUS=${SLURM_LOCAL_GPUS:-0}
[[ "$GPUS" =~ ^[0-9]+$ ]] || { echo "start.sh: SLURM_LOCAL_GPUS='$GPUS' is not a number" >&2; exit 2; }
die() { echo "start.sh: $*" >&2; exit 1; }
for b in munged munge unmunge slurmctld slurmd sinfo; do
  command -v "$b" >/dev/null || die "$b not found (apt-get install -y slurm-wlm munge)"
done
[ -e "$S/slurmctld.pid" ] && kill -0 "$(cat "$S/slurmctld.pid")" 2>/dev/null && die "a cluster already runs from $S (stop.sh $S first)"

# --- munge ---------------------------------------------------------------
mkdir -p "$S/munge"
rm -f "$S/munge/started_here"
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "start.sh: reusing the running munged" >&2
else
  mkdir -p /run/munge
  chown munge:munge /run/munge "$S/munge"
  chmod o+x "$S"          # munged runs as the munge user: it must reach $S/munge
  runuser -u munge -- test -w "$S/munge" \
    || die "the munge user cannot write $S/munge: make the folders above it traversable (chmod o+x)"
  runuser -u munge -- munged --pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" \
    --seed-file="$S/munge/munged.seed" || die "munged failed: $(tail -3 "$S/munge/munged.log" 2>/dev/null)"
  touch "$S/munge/started_here"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null 2>&1 || die "munged does not answer"
fi

# --- slurm.conf ----------------------------------------------------------
HOST=$(hostname -s)
NODELINE=$(slurmd -C | head -1)                      # NodeName=host CPUs=... RealMemory=...
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODELINE")
CPUS=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$NODELINE")
mkdir -p "$S/state" "$S/spool" "$S/log"
GRES_TYPES="" NODE_GRES=""
rm -rf "${S:?}/gres.conf" "${S:?}/dev"
if [ "$GPUS" -gt 0 ]; then
  # slurmd wants a character device per GPU: S/dev/nvidia<i>, each a copy of /dev/null (1,3)
  mkdir -p "$S/dev"
  for i in $(seq 0 $((GPUS - 1))); do
    mknod "$S/dev/nvidia$i" c 1 3 || die "mknod $S/dev/nvidia$i failed (fake GPUs need CAP_MKNOD); start without SLURM_LOCAL_GPUS"
  done
  GRES_TYPES="GresTypes=gpu" NODE_GRES="Gres=gpu:$GPUS"
  echo "NodeName=$HOST Name=gpu File=$S/dev/nvidia[0-$((GPUS - 1))]" > "$S/gres.conf"   # read from beside slurm.conf
fi
cat > "$S/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$S/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
$GRES_TYPES
NodeName=$HOST CPUs=$CPUS RealMemory=$((MEM * 9 / 10)) $NODE_GRES State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$S/slurm.conf"

# --- daemons -------------------------------------------------------------
slurmctld -f "$SLURM_CONF" || die "slurmctld failed: $(tail -5 "$S/log/slurmctld.log" 2>/dev/null)"
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
slurmd -f "$SLURM_CONF" || die "slurmd failed: $(tail -5 "$S/log/slurmd.log" 2>/dev/null)"
end=$((SECONDS + WAIT))
until [ "$(sinfo -h -n "$HOST" -o %T 2>/dev/null)" = idle ]; do
  [ $SECONDS -lt $end ] || die "node $HOST not idle after ${WAIT}s (state: $(sinfo -h -o %T 2>&1)); logs in $S/log"
  sleep 0.5
done
echo "start.sh: node $HOST idle" >&2
echo "export SLURM_CONF=$SLURM_CONF"
