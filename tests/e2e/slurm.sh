#!/usr/bin/env bash
# End-to-end test of slurm/: a real single-node Slurm cluster in a scratch folder.
# Usage: tests/e2e/slurm.sh BUILD_DIR      (needs root, slurm-wlm, munge, h5py for /usr/bin/python3)
# (a) a tiny search job runs to the end -> COMPLETED, model.h5
# (b) a longer one gets SIGUSR1 via `scancel --signal=USR1 --batch` after its first checkpoint
#     -> exit 75 -> requeued -> resumes -> COMPLETED, model byte-identical to a direct run
# (c) a job whose dsonas fails (bad option, exit 2) -> FAILED, ExitCode 2:0
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
T=$(mktemp -d /tmp/dsonas-slurm.XXXXXX)
chmod 755 "$T"   # munged (user munge) keeps its log and PID file under $T/cluster
BIN=$T/dsonas
cp "$1/dsonas" "$BIN" || { rm -rf "$T"; echo "FAIL no $1/dsonas"; echo "slurm: 0 passed, 1 failed"; exit 1; }
PASS=0 FAILN=0
ok()  { echo "ok   $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL $*"; FAILN=$((FAILN + 1)); }
T0=$SECONDS

cleanup() {
  local pids="" p
  for f in "$T/cluster/slurmctld.pid" "$T/cluster/slurmd.pid"; do [ -s "$f" ] && pids="$pids $(cat "$f")"; done
  "$ROOT/slurm/local/stop.sh" "$T/cluster" >/dev/null 2>&1 || echo "FAIL stop.sh failed"
  for p in $pids; do
    if kill -0 "$p" 2>/dev/null; then echo "FAIL daemon PID $p survived stop.sh"; FAILN=$((FAILN + 1)); fi
  done
  echo "slurm: $PASS passed, $FAILN failed ($((SECONDS - T0)) s; scratch $T)"
  [ "$FAILN" -eq 0 ] && rm -rf "$T"
  [ "$FAILN" -eq 0 ]
}
trap 'cleanup; exit $?' EXIT
trap 'exit 130' INT TERM

if ! ENV_LINE=$(SLURM_LOCAL_WAIT=30 "$ROOT/slurm/local/start.sh" "$T/cluster" 2>"$T/start.log"); then
  bad "start.sh: $(tail -3 "$T/start.log")"; exit 1
fi
eval "$ENV_LINE"
ok "cluster up ($ENV_LINE)"

job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }
wait_final() {  # wait_final JOB SECONDS: echo the final state (or TIMEOUT)
  local end=$((SECONDS + $2)) st
  while [ $SECONDS -lt $end ]; do
    st=$(job_field "$1" JobState)
    case $st in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$st"; return;; esac
    sleep 0.5
  done
  echo "TIMEOUT(last $(job_field "$1" JobState))"
}
same_model() { "$PY" "$(dirname "${BASH_SOURCE[0]}")/same_model.py" "$1" "$2"; }  # every dataset byte-identical
submit() {  # submit OUT ARGS...: echo the job id
  local out=$1; shift
  (cd "$T" && DSONAS_BIN=$BIN DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/$out DSONAS_ARGS="$*" \
     sbatch --parsable --output="$T/$out.log" "$ROOT/slurm/search.sbatch")
}

cat > "$T/tiny.cfg" <<'CFG'
threads = 1
log-every = 50
max-steps = 400
[space]
preset = tiny
[data]
dataset = synthetic
batch = 8
synthetic-train = 64
synthetic-test = 16
[search]
gamma = 0.02
lambda-lr-mult = 5
CFG

# (a) runs to the end
J=$(submit a) || bad "(a) sbatch failed"
st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
if [ "$st" = COMPLETED ] && [ "$ec" = 0:0 ] && [ -s "$T/a/model.h5" ]; then ok "(a) tiny search job $J COMPLETED, ExitCode 0:0, model.h5 written"
else bad "(a) job $J: state $st exit $ec; $(tail -3 "$T/a.log" 2>&1)"; fi

# (b) SIGUSR1 to the batch shell after the first checkpoint -> exit 75 -> requeue -> resume
LONG="--max-steps 20000 --checkpoint-every 1000 --log-every 1000"
J=$(submit b $LONG) || bad "(b) sbatch failed"
# meanwhile, the reference: same command without Slurm (1 core is left for it)
"$BIN" search --config "$T/tiny.cfg" $LONG --out "$T/ref" >"$T/ref.log" 2>&1 &
REFPID=$!
end=$((SECONDS + 60))
until ls "$T"/b/ckpt/step_*.h5 >/dev/null 2>&1 || [ $SECONDS -ge $end ]; do
  case $(job_field "$J" JobState) in COMPLETED|FAILED|CANCELLED) break;; esac   # ended early
  sleep 0.05
done
if ! ls "$T"/b/ckpt/step_*.h5 >/dev/null 2>&1; then bad "(b) no checkpoint after 60 s: $(tail -3 "$T/b.log")"
else
  scancel --signal=USR1 --batch "$J"
  # wait for the requeue (Restarts=1, back to PENDING) ...
  end=$((SECONDS + 60))
  until [ "$(job_field "$J" Restarts)" = 1 ] || [ $SECONDS -ge $end ]; do sleep 0.5; done
  if [ "$(job_field "$J" Restarts)" = 1 ] && grep -q "exiting with 75" "$T/b.log" && grep -q "requeueing" "$T/b.log"; then
    ok "(b) SIGUSR1 forwarded: dsonas checkpointed and exited 75, job $J requeued ($(job_field "$J" JobState), $(job_field "$J" Reason))"
  else bad "(b) not requeued: state $(job_field "$J" JobState) restarts $(job_field "$J" Restarts); $(grep -v '^search epoch' "$T/b.log" | tail -4)"; fi
  # ... Slurm holds a requeued batch job ~2 min (EligibleTime); let it start now
  scontrol update jobid="$J" StartTime=now >/dev/null 2>&1 || true
  st=$(wait_final "$J" 120); ec=$(job_field "$J" ExitCode)
  if [ "$st" = COMPLETED ] && [ "$ec" = 0:0 ] && grep -q "resumed from .*step_" "$T/b.log"; then
    ok "(b) job $J resumed from its checkpoint and COMPLETED ($(grep -o 'resumed from [^ ]*' "$T/b.log" | tail -1))"
  else bad "(b) after requeue: state $st exit $ec; $(grep -v '^search epoch' "$T/b.log" | tail -3)"; fi
fi
if ! timeout 120 tail --pid=$REFPID -f /dev/null; then kill "$REFPID" 2>/dev/null; fi
wait "$REFPID"; rrc=$?
if [ "$rrc" -ne 0 ]; then bad "(b) direct reference run failed rc=$rrc: $(tail -2 "$T/ref.log")"
elif [ -s "$T/b/model.h5" ] && same_model "$T/ref/model.h5" "$T/b/model.h5" 2>"$T/cmp.log"; then
  ok "(b) final model.h5 of the requeued job byte-identical (every dataset) to the uninterrupted direct run"
else bad "(b) models differ: $(tail -1 "$T/cmp.log")"; fi

# (c) dsonas fails (bad option -> exit 2) -> job FAILED with ExitCode 2:0
J=$(submit c --no-such-option) || bad "(c) sbatch failed"
st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
if [ "$st" = FAILED ] && [ "$ec" = 2:0 ] && [ "$(job_field "$J" Restarts)" = 0 ]; then ok "(c) bad option: job $J FAILED, ExitCode $ec, not requeued"
else bad "(c) job $J: state $st exit $ec restarts $(job_field "$J" Restarts); $(tail -3 "$T/c.log" 2>&1)"; fi
