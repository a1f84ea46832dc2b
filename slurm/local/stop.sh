#!/usr/bin/env bash
# Stop the cluster started by start.sh SCRATCH: kill exactly the PIDs in its PID files
# (slurmd, slurmctld, and munged only when start.sh started it), then wait for them.
# Usage: slurm/local/stop.sh SCRATCH   (env SLURM_LOCAL_WAIT, default 30 s, then SIGKILL)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 SCRATCH" >&2; exit 2; }
S=$(cd "$1" && pwd)
WAIT=${SLURM_LOCAL_WAIT:-30}
stop_pid() {  # stop_pid NAME PIDFILE
  local f=$2 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || { echo "stop.sh: bad PID file $f" >&2; return 1; }
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + WAIT))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop.sh: $1 ($pid) still alive after ${WAIT}s, SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true; sleep 0.5
    fi
    echo "stop.sh: stopped $1 ($pid)" >&2
  fi
  rm -f "$f"
}
stop_pid slurmd "$S/slurmd.pid"
stop_pid slurmctld "$S/slurmctld.pid"
if [ -e "$S/munge/started_here" ]; then
  stop_pid munged "$S/munge/munged.pid"
  rm -f "$S/munge/started_here"
fi
