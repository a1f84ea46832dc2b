#!/usr/bin/env bash
# End-to-end test of slurm/: a real single-node Slurm cluster (2 CPUs, 2 fake GPUs) in a
# scratch folder, tiny CPU searches (--space.preset tiny, synthetic data).
# Usage: tests/e2e/slurm.sh BUILD_DIR   (needs root, slurm-wlm, munge, Open MPI, h5py for /usr/bin/python3)
#  (a)  search.sbatch, 1 task -> COMPLETED, model.h5
#  (a2) search.sbatch --ntasks=2 -> COMPLETED; log.rank0 and log.rank1; the "λ hash" of both
#       ranks equal, and equal to that of the same search run directly with mpirun -np 2
#  (b)  1 task: SIGUSR1 to the batch shell after the first checkpoint -> exit 75 -> requeued ->
#       resumes -> COMPLETED, model byte-identical to an uninterrupted direct run
#  (b2) the same with 2 tasks; the reference is `mpirun -np 2` with the same --checkpoint-every
#       (checkpoints average the BN running statistics over the ranks)
#  (c)  dsonas fails (bad option, exit 2) -> job FAILED with ExitCode 2:0, not requeued
#  (h)  SIGTERM to the batch shell -> the ranks checkpoint and exit 75, the job is NOT requeued
#       (FAILED 75:0); `scancel JOB` -> CANCELLED and stays so
#  (d)  pipeline.sh with 2 tasks per job: search job (pretrain + search) and retrain job
#       (derive + retrain + eval) with --dependency=afterok; the search job is sent SIGUSR1 and
#       requeued while the retrain job stays PENDING on its dependency; both COMPLETE;
#       network.h5, arch.json, eval_test/eval.json
#  (d2) pipeline.sh whose search fails -> search job FAILED, retrain job CANCELLED
#  (d3) study.sh: prepare job, an array of one retrain task each (afterok), report job after the
#       whole array; all COMPLETE and study.md reports every retrain
#  (e)  sweep.sbatch --array=0-1 over search.gamma: task 0 gets SIGUSR1 and is requeued alone;
#       both tasks COMPLETE, one folder per value holding its own gamma and a model.h5
#  (e2) sweep.sbatch with a sweep file of 2 rows varying search.gamma and search.w-steps (plus
#       comments and a blank line), --array from `sweep.sbatch --array-range` (= the grep count):
#       both tasks COMPLETE, each row's folder has its values in config.resolved.cfg and its row
#       in sweep_row.txt; a malformed row and a task past the file's end FAIL with 2:0 and say so
#  (f)  with a stub binary: --gpus-per-task=1 -> --device cuda and one GPU per rank;
#       --cpus-per-task=1 -> srun --cpus-per-task=1 and --threads 1; a step that srun reports
#       as done but that wrote nothing is launched again, then the job FAILS (exit 1)
#  (i)  a step without a signal handler killed by the forwarded SIGUSR1 (exit 138) is a reason
#       to requeue; past DSONAS_MAX_REQUEUES the job ends FAILED 75:0
#  (g)  a step that fails to launch (its PMIx socket name taken) while srun returns 0 is
#       launched again by lib.sh; the job COMPLETES
#  (j)  an installed tree (make install): module load dsonas, sbatch $DSONAS_HOME/slurm/search.sbatch
#       without DSONAS_BIN runs the installed binary; its model.h5 is "written by" it
#  and at the end, whatever happened: every job cancelled, the daemons stopped (their PIDs
#  gone), no process of this cluster left (found by SLURM_CONF in /proc/*/environ).
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=/usr/bin/python3
T=$(mktemp -d /tmp/dsonas-slurm.XXXXXX)
chmod 755 "$T"   # munged (user munge) keeps its log and PID file under $T/cluster
BIN=$T/dsonas
BUILD_ARG=$1   # for make -C ROOT install: a build folder relative to the repository (or absolute)
cp "$1/dsonas" "$BIN" || { rm -rf "$T"; echo "FAIL no $1/dsonas"; echo "slurm: 0 passed, 1 failed"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # mpirun as root (the jobs inherit them)
MPIRUN=(mpirun --oversubscribe --bind-to none -np 2)
PASS=0 FAILN=0 GPUS=2
ok()  { echo "ok   $*"; PASS=$((PASS + 1)); }
bad() { echo "FAIL $*"; FAILN=$((FAILN + 1)); }
T0=$SECONDS

# Processes of this cluster: their environment names its slurm.conf (daemons, slurmstepd,
# srun, the ranks); this shell's own initial environment does not.
cluster_pids() {
  local f p
  for f in /proc/[0-9]*/environ; do
    p=${f#/proc/}; p=${p%/environ}
    [ "$p" = $$ ] && continue
    tr '\0' '\n' 2>/dev/null <"$f" | grep -qx "SLURM_CONF=$T/cluster/slurm.conf" && echo "$p"
  done
}
cleanup() {
  local pids="" p left
  [ -z "$REFPID" ] || { kill -TERM "$REFPID" 2>/dev/null; wait "$REFPID" 2>/dev/null; }
  if [ -n "${SLURM_CONF:-}" ]; then
    scancel --quiet --full --partition=debug 2>/dev/null
    for _ in $(seq 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  for f in "$T/cluster/slurmctld.pid" "$T/cluster/slurmd.pid"; do [ -s "$f" ] && pids="$pids $(cat "$f")"; done
  "$ROOT/slurm/local/stop.sh" "$T/cluster" >/dev/null 2>&1 || bad "stop.sh failed"
  for p in $pids; do kill -0 "$p" 2>/dev/null && bad "daemon PID $p survived stop.sh"; done
  left=$(cluster_pids)
  if [ -n "$left" ]; then
    bad "processes left behind: $(for p in $left; do tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80; echo; done)"
    for p in $left; do kill -KILL "$p" 2>/dev/null; done
  elif [ -n "$pids" ]; then
    ok "daemons stopped (PIDs$pids gone), no process of the test cluster left"
  fi
  echo "slurm: $PASS passed, $FAILN failed ($((SECONDS - T0)) s; scratch $T)"
  [ "$FAILN" -eq 0 ] && rm -rf "$T"
  [ "$FAILN" -eq 0 ]
}
trap 'cleanup; exit $?' EXIT
trap 'bad "interrupted by a signal"; exit 130' INT TERM
# long foreground commands run as background + wait, so that a signal ends the test at once
REFPID=
bg_wait() { "$@" & REFPID=$!; wait "$REFPID"; local rc=$?; REFPID=; return $rc; }

if ! ENV_LINE=$(SLURM_LOCAL_GPUS=$GPUS SLURM_LOCAL_WAIT=30 "$ROOT/slurm/local/start.sh" "$T/cluster" 2>"$T/start.log"); then
  if grep -q mknod "$T/start.log"; then   # no fake GPUs here: run without them, skip (f)'s GPU part
    echo "note: $(grep mknod "$T/start.log")"; GPUS=0
    "$ROOT/slurm/local/stop.sh" "$T/cluster" >/dev/null 2>&1
    ENV_LINE=$(SLURM_LOCAL_WAIT=30 "$ROOT/slurm/local/start.sh" "$T/cluster" 2>"$T/start.log") || { bad "start.sh: $(tail -3 "$T/start.log")"; exit 1; }
  else
    bad "start.sh: $(tail -3 "$T/start.log")"; exit 1
  fi
fi
eval "$ENV_LINE"
ok "cluster up ($ENV_LINE, $(sinfo -h -o '%c CPUs, gres %G'))"

job_field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2-; }
wait_final() {  # wait_final JOB SECONDS: echo the final state (or TIMEOUT)
  local end=$((SECONDS + $2)) st
  while [ $SECONDS -lt $end ]; do
    st=$(job_field "$1" JobState)
    case $st in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) echo "$st"; return;; esac
    sleep 0.5
  done
  echo "TIMEOUT(last $(job_field "$1" JobState))"
}
wait_file() {  # wait_file GLOB SECONDS JOB: until a file matches (0) or the job ended / time out (1)
  local end=$((SECONDS + $2))
  until compgen -G "$1" >/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    case $(job_field "$3" JobState) in COMPLETED|FAILED|CANCELLED) compgen -G "$1" >/dev/null; return;; esac
    sleep 0.05
  done
}
wait_requeued() {  # wait_requeued JOB: until Restarts=1 (0) or 60 s (1)
  local end=$((SECONDS + 60))
  until [ "$(job_field "$1" Restarts)" = 1 ]; do [ $SECONDS -lt $end ] || return 1; sleep 0.3; done
}
# A requeued job waits ~2 min (BeginTime) before it may start again; the test lets it start at
# once, but only once it is back to PENDING (a start while the old run is still COMPLETING is
# lost: Slurm moves the begin time again) and a second later (a job started within the second
# of its requeue is refused on this node: "Job credential revoked").
release() {
  local end=$((SECONDS + 60))
  until [ "$(job_field "$1" JobState)" = PENDING ] || [ $SECONDS -ge $end ]; do sleep 0.2; done
  sleep 2
  scontrol update jobid="$1" StartTime=now >/dev/null 2>&1 || true
}
same_model() { "$PY" "$ROOT/tests/e2e/same_model.py" "$1" "$2"; }  # every dataset byte-identical
hashes() { grep -ho 'λ hash [0-9a-f]*' "$@" 2>/dev/null | awk '{print $3}' | sort | uniq -c | tr -s ' ' | paste -sd' '; }
search_job() {  # search_job OUT "DSONAS_ARGS" [sbatch options...]: echo the job id
  local out=$1 args=$2; shift 2
  (cd "$T" && DSONAS_BIN=$BIN DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/$out DSONAS_ARGS="$args" \
     sbatch --parsable --output="$T/$out.log" "$@" "$ROOT/slurm/search.sbatch")
}
notes() { grep -v '^search epoch\|^ *[a-z-]* = \|^\[[a-z]*\]$\|^$' "$1" | tail -"${2:-3}"; }

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
LONG="--max-steps 4000 --checkpoint-every 500 --log-every 1000"

# (a) 1 task, runs to the end
J=$(search_job a "") || bad "(a) sbatch failed"
st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
if [ "$st" = COMPLETED ] && [ "$ec" = 0:0 ] && [ -s "$T/a/model.h5" ]; then ok "(a) 1-task search job $J COMPLETED, ExitCode 0:0, model.h5 written"
else bad "(a) job $J: state $st exit $ec; $(notes "$T/a.log")"; fi

# (a2) 2 tasks = 2 MPI ranks via srun --mpi=pmix
J=$(search_job a2 "" --ntasks=2) || bad "(a2) sbatch failed"
st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
bg_wait "${MPIRUN[@]}" "$BIN" search --config "$T/tiny.cfg" --out "$T/a2ref" >"$T/a2ref.out" 2>&1 || bad "(a2) direct mpirun reference failed: $(tail -2 "$T/a2ref.out")"
h=$(hashes "$T/a2/log.rank0" "$T/a2/log.rank1"); href=$(hashes "$T/a2ref/log.rank0")
if [ "$st" = COMPLETED ] && [ "$ec" = 0:0 ] && [ -s "$T/a2/model.h5" ] && [ -s "$T/a2/log.rank0" ] && [ -s "$T/a2/log.rank1" ] \
   && grep -q "2 ranks × batch 8" "$T/a2.log" && [[ "$h" =~ ^\ ?2\ [0-9a-f]+$ ]] && [ "${h##* }" = "${href##* }" ]; then
  ok "(a2) 2-task search job $J COMPLETED: log.rank0 + log.rank1, λ hash ${h##* } on both ranks, = direct mpirun -np 2 run"
else bad "(a2) job $J: state $st exit $ec, λ hashes [$h] vs mpirun [$href]; $(notes "$T/a2.log")"; fi

# (b)/(b2) SIGUSR1 to the batch shell after the first checkpoint -> exit 75 -> requeue -> resume
requeue_case() {  # requeue_case NAME NTASKS
  local n=$1 k=$2 J st ec rrc
  J=$(search_job "$n" "$LONG" --ntasks="$k") || { bad "($n) sbatch failed"; return; }
  if ! wait_file "$T/$n/ckpt/step_*.h5" 90 "$J"; then bad "($n) no checkpoint after 90 s: $(notes "$T/$n.log")"; return; fi
  scancel --signal=USR1 --batch "$J"
  if wait_requeued "$J" && grep -q "exiting with 75" "$T/$n.log" && grep -q "requeueing $J" "$T/$n.log"; then
    ok "($n) $k task(s): SIGUSR1 reached every rank, dsonas checkpointed and exited 75, job $J requeued ($(job_field "$J" JobState), $(job_field "$J" Reason))"
  else bad "($n) not requeued: state $(job_field "$J" JobState) restarts $(job_field "$J" Restarts); $(notes "$T/$n.log" 4)"; fi
  # the uninterrupted reference, same ranks and --checkpoint-every, while the job waits
  # shellcheck disable=SC2086   # $LONG: options, word-split on purpose
  if [ "$k" = 1 ]; then bg_wait "$BIN" search --config "$T/tiny.cfg" $LONG --out "$T/${n}ref" >"$T/${n}ref.out" 2>&1; rrc=$?
  else bg_wait "${MPIRUN[@]}" "$BIN" search --config "$T/tiny.cfg" $LONG --out "$T/${n}ref" >"$T/${n}ref.out" 2>&1; rrc=$?; fi
  release "$J"
  st=$(wait_final "$J" 120); ec=$(job_field "$J" ExitCode)
  if [ "$st" = COMPLETED ] && [ "$ec" = 0:0 ] && grep -q "resumed from .*step_" "$T/$n.log"; then
    ok "($n) job $J resumed from its checkpoint and COMPLETED ($(grep -o 'resumed from [^ ]*' "$T/$n.log" | tail -1 | sed "s|$T/||"))"
  else bad "($n) after requeue: state $st exit $ec; $(notes "$T/$n.log")"; fi
  if [ "$rrc" -ne 0 ]; then bad "($n) direct reference run failed rc=$rrc: $(tail -2 "$T/${n}ref.out")"
  elif [ -s "$T/$n/model.h5" ] && same_model "$T/${n}ref/model.h5" "$T/$n/model.h5" 2>"$T/cmp.log"; then
    ok "($n) final model.h5 of the requeued $k-task job byte-identical (every dataset) to the uninterrupted direct run"
  else bad "($n) models differ: $(tail -1 "$T/cmp.log" 2>/dev/null)"; fi
}
requeue_case b 1
requeue_case b2 2

# (c) dsonas fails (bad option -> exit 2) -> job FAILED with ExitCode 2:0
J=$(search_job c "--no-such-option") || bad "(c) sbatch failed"
st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
if [ "$st" = FAILED ] && [ "$ec" = 2:0 ] && [ "$(job_field "$J" Restarts)" = 0 ]; then ok "(c) bad option: job $J FAILED, ExitCode $ec, not requeued"
else bad "(c) job $J: state $st exit $ec restarts $(job_field "$J" Restarts); $(notes "$T/c.log")"; fi

# (h) SIGTERM is not a reason to requeue: scancel must end a job for good
J=$(search_job h1 "$LONG" --ntasks=2) || bad "(h) sbatch failed"
if wait_file "$T/h1/ckpt/step_*.h5" 90 "$J"; then
  scancel --signal=TERM --batch "$J"
  st=$(wait_final "$J" 60); ec=$(job_field "$J" ExitCode)
  if [ "$st" = FAILED ] && [ "$ec" = 75:0 ] && [ "$(job_field "$J" Restarts)" = 0 ] && grep -q "exiting with 75" "$T/h1.log" \
     && grep -q "not requeueing" "$T/h1.log"; then
    ok "(h) SIGTERM to the batch shell: the ranks checkpointed and exited 75, job $J not requeued (FAILED, 75:0)"
  else bad "(h) SIGTERM: job $J $st $ec restarts $(job_field "$J" Restarts); $(notes "$T/h1.log" 4)"; fi
else bad "(h) no checkpoint after 90 s: $(notes "$T/h1.log")"; fi
J=$(search_job h2 "$LONG" --ntasks=2) || bad "(h) sbatch failed"
if wait_file "$T/h2/ckpt/step_*.h5" 90 "$J"; then
  scancel "$J"
  st=$(wait_final "$J" 60); sleep 3
  if [ "$st" = CANCELLED ] && [ "$(job_field "$J" JobState)" = CANCELLED ] && [ "$(job_field "$J" Restarts)" = 0 ]; then
    ok "(h) scancel: job $J CANCELLED and stays so (not requeued)"
  else bad "(h) scancel: job $J $st, now $(job_field "$J" JobState), restarts $(job_field "$J" Restarts); $(notes "$T/h2.log" 4)"; fi
else bad "(h) no checkpoint after 90 s: $(notes "$T/h2.log")"; fi

# (d) pipeline.sh: search job, then retrain job after it
cat > "$T/pipe.cfg" <<'CFG'
threads = 1
log-every = 500
checkpoint-every = 500
[space]
preset = tiny
[data]
dataset = synthetic
batch = 8
synthetic-train = 64
synthetic-test = 16
[pretrain]
max-steps = 100
[search]
max-steps = 3000
gamma = 0.005
lambda-lr-mult = 5
[retrain]
max-steps = 200
CFG
pipe() {  # pipe DIR [env...]: run pipeline.sh, echo its output
  local d=$1; shift
  (cd "$T" && env DSONAS_BIN="$BIN" DSONAS_CONFIG=pipe.cfg DSONAS_SBATCH_ARGS="--ntasks=2" "$@" "$ROOT/slurm/pipeline.sh" "$d")
}
if out=$(pipe p 2>&1) && ids=$(sed -n 's/^DSONAS_JOBS=\([0-9]*:[0-9]*\)$/\1/p' <<<"$out") && [ -n "$ids" ]; then
  S=${ids%:*} R=${ids#*:}
  ok "(d) pipeline.sh submitted search job $S and retrain job $R (dependency $(job_field "$R" Dependency))"
  if wait_file "$T/p/search/ckpt/step_*.h5" 90 "$S"; then
    scancel --signal=USR1 --batch "$S"
    if wait_requeued "$S" && [ "$(job_field "$R" JobState)" = PENDING ] && [ "$(job_field "$R" Reason)" = Dependency ]; then
      ok "(d) search job $S requeued by SIGUSR1 mid-search; retrain job $R still PENDING (Dependency)"
    else bad "(d) search job $S restarts $(job_field "$S" Restarts), retrain job $R $(job_field "$R" JobState)/$(job_field "$R" Reason)"; fi
    release "$S"
  else bad "(d) no search checkpoint after 90 s: $(notes "$T/p/slurm-search-$S.log")"; fi
  st=$(wait_final "$S" 120); st2=$(wait_final "$R" 120)
  if [ "$st" = COMPLETED ] && [ "$st2" = COMPLETED ] && [ -s "$T/p/search/model.h5" ] && [ -s "$T/p/arch.json" ] \
     && [ -s "$T/p/retrain/network.h5" ] && [ -s "$T/p/retrain/log.rank1" ] && [ -s "$T/p/retrain/eval_test/eval.json" ] \
     && grep -q "resumed from" "$T/p/slurm-search-$S.log"; then
    ok "(d) both COMPLETED: pretrain, search (resumed), arch.json, retrain/network.h5 (2 ranks), eval_test/eval.json $(grep -o '"top1":[0-9.]*' "$T/p/retrain/eval_test/eval.json")"
  else bad "(d) search $S $st, retrain $R $st2: $(notes "$T/p/slurm-search-$S.log" 2) | $(notes "$T/p/slurm-retrain-$R.log" 3)"; fi
else bad "(d) pipeline.sh failed: $out"; fi

# (d2) the search job fails -> the retrain job is cancelled
if out=$(pipe p2 DSONAS_SEARCH_ARGS=--no-such-option 2>&1) && ids=$(sed -n 's/^DSONAS_JOBS=//p' <<<"$out") && [ -n "$ids" ]; then
  S=${ids%:*} R=${ids#*:}
  st=$(wait_final "$S" 60); st2=$(wait_final "$R" 60)
  if [ "$st" = FAILED ] && [ "$(job_field "$S" ExitCode)" = 2:0 ] && [ "$st2" = CANCELLED ]; then
    ok "(d2) failing search job $S FAILED (2:0), retrain job $R CANCELLED ($(job_field "$R" Reason))"
  else bad "(d2) search $S $st $(job_field "$S" ExitCode), retrain $R $st2"; fi
else bad "(d2) pipeline.sh failed: $out"; fi

# (d3) study.sh: the prepare job, one array task per retrain, the report job after all of them
cat > "$T/study.cfg" <<'CFG'
threads = 1
log-every = 100
[space]
preset = tiny
[data]
dataset = synthetic
batch = 8
synthetic-train = 64
synthetic-test = 16
[pretrain]
max-steps = 20
[search]
max-steps = 60
gamma = 0.01
lambda-lr-mult = 5
[retrain]
max-steps = 30
[study]
random = 1
seeds = 2
CFG
if out=$(cd "$T" && env DSONAS_BIN="$BIN" DSONAS_CONFIG=study.cfg "$ROOT/slurm/study.sh" "$T/study" 2>&1) \
   && ids=$(sed -n 's/^DSONAS_JOBS=//p' <<<"$out") && [ -n "$ids" ]; then
  P=${ids%%:*}; rest=${ids#*:}; A=${rest%%:*}; R=${rest#*:}
  stp=$(wait_final "$P" 120); str=$(wait_final "$R" 240)
  if [ "$stp" = COMPLETED ] && [ "$str" = COMPLETED ] && grep -q "6 of 6 retrains" "$T/study/study.md" \
     && [ "$(ls "$T"/study/retrain/*/eval_test/eval.json | wc -l)" = 6 ] && grep -q "task array $A: 6 retrains" <<<"$out"; then
    ok "(d3) study.sh: prepare job $P, task array $A (6 retrains, afterok), report job $R COMPLETED; study.md with 6 of 6"
  else bad "(d3) study: prepare $stp, report $str; $(tail -2 "$T"/study/slurm-study-report-*.log 2>/dev/null)"; fi
else bad "(d3) study.sh failed: $out"; fi

# (e) a 2-value sweep as a job array; task 0 requeued on its own
A=$(cd "$T" && DSONAS_BIN=$BIN DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/sw DSONAS_SWEEP="search.gamma=0.01,0.03" \
      DSONAS_ARGS="--max-steps 3000 --checkpoint-every 500 --log-every 1000" \
      sbatch --parsable --array=0-1 --output="$T/sw-%A_%a.log" "$ROOT/slurm/sweep.sbatch") || bad "(e) sbatch failed"
if wait_file "$T/sw/search.gamma_0.01/ckpt/step_*.h5" 90 "${A}_0"; then
  scancel --signal=USR1 --batch "${A}_0"
  wait_requeued "${A}_0" || bad "(e) task ${A}_0 not requeued: $(notes "$T/sw-${A}_0.log")"
  release "${A}_0"
else bad "(e) no checkpoint of task 0 after 90 s: $(notes "$T/sw-${A}_0.log")"; fi
st0=$(wait_final "${A}_0" 120); st1=$(wait_final "${A}_1" 120)
g0=$(grep -h '^gamma' "$T/sw/search.gamma_0.01/config.resolved.cfg" 2>/dev/null); g1=$(grep -h '^gamma' "$T/sw/search.gamma_0.03/config.resolved.cfg" 2>/dev/null)
if [ "$st0" = COMPLETED ] && [ "$st1" = COMPLETED ] && [ "$(job_field "${A}_0" Restarts)" = 1 ] && [ "$(job_field "${A}_1" Restarts)" = 0 ] \
   && [ "$g0" = "gamma = 0.01" ] && [ "$g1" = "gamma = 0.03" ] && [ -s "$T/sw/search.gamma_0.01/model.h5" ] && [ -s "$T/sw/search.gamma_0.03/model.h5" ] \
   && grep -q "resumed from" "$T/sw-${A}_0.log"; then
  ok "(e) sweep array $A: both tasks COMPLETED, task 0 requeued alone and resumed; folders $(cd "$T/sw" && echo *) with their own gamma"
else bad "(e) sweep $A: tasks $st0/$st1, restarts $(job_field "${A}_0" Restarts)/$(job_field "${A}_1" Restarts), [$g0] [$g1]; $(notes "$T/sw-${A}_0.log" 2)"; fi

# (e2) a sweep file: array task k takes row k (two options varied), one folder per row
cat > "$T/rows.txt" <<'ROWS'
# γ x W:λ steps (tests/e2e/slurm.sh)
search.gamma=0.01 search.w-steps=1

  search.gamma=0.03   search.w-steps=3   # a trailing comment
ROWS
printf 'search.gamma=0.01 w-steps\nsearch.gamma=0.02\n' >"$T/bad_rows.txt"
rng=$("$ROOT/slurm/sweep.sbatch" --array-range "$T/rows.txt" 2>&1); nrows=$(grep -cv '^\s*\(#\|$\)' "$T/rows.txt")
[ "$rng" = 0-1 ] && [ "$rng" = "0-$((nrows - 1))" ] || bad "(e2) sweep.sbatch --array-range: '$rng', grep counts $nrows rows"
sweep_file_job() {  # sweep_file_job NAME FILE ARRAY: echo the array job id
  (cd "$T" && DSONAS_BIN=$BIN DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/$1 DSONAS_SWEEP_FILE=$2 \
     sbatch --parsable --array="$3" --output="$T/$1-%A_%a.log" "$ROOT/slurm/sweep.sbatch")
}
A=$(sweep_file_job sf rows.txt "$rng") || bad "(e2) sbatch failed"
B=$(sweep_file_job sfbad bad_rows.txt 0,3) || bad "(e2) sbatch of the bad file failed"
st0=$(wait_final "${A}_0" 90); st1=$(wait_final "${A}_1" 90)
d0=$T/sf/search.gamma_0.01__search.w-steps_1 d1=$T/sf/search.gamma_0.03__search.w-steps_3
cfgv() { grep -h "^$2 = " "$1/config.resolved.cfg" 2>/dev/null | paste -sd' '; }
v0="$(cfgv "$d0" gamma), $(cfgv "$d0" w-steps)"; v1="$(cfgv "$d1" gamma), $(cfgv "$d1" w-steps)"
if [ "$st0" = COMPLETED ] && [ "$st1" = COMPLETED ] && [ "$(job_field "${A}_0" ExitCode)" = 0:0 ] && [ "$(job_field "${A}_1" ExitCode)" = 0:0 ] \
   && [ "$v0" = "gamma = 0.01, w-steps = 1" ] && [ "$v1" = "gamma = 0.03, w-steps = 3" ] && [ -s "$d0/model.h5" ] && [ -s "$d1/model.h5" ] \
   && [ "$(tail -1 "$d0/sweep_row.txt" 2>/dev/null)" = "search.gamma=0.01 search.w-steps=1" ] \
   && [ "$(tail -1 "$d1/sweep_row.txt" 2>/dev/null)" = "search.gamma=0.03 search.w-steps=3" ] && [ "$(ls "$T/sf" | wc -l)" = 2 ]; then
  ok "(e2) sweep file, array $A --array=$rng: both tasks COMPLETED; folders $(cd "$T/sf" && echo *) hold [$v0] / [$v1] and their rows"
else bad "(e2) sweep file array $A: tasks $st0/$st1, [$v0] [$v1], folders $(ls "$T/sf" 2>&1 | paste -sd' '); $(notes "$T/sf-${A}_0.log" 2) | $(notes "$T/sf-${A}_1.log" 2)"; fi
stb0=$(wait_final "${B}_0" 60); stb3=$(wait_final "${B}_3" 60)
if [ "$stb0" = FAILED ] && [ "$(job_field "${B}_0" ExitCode)" = 2:0 ] && grep -q "bad_rows.txt line 1 (row 0): 'w-steps' is not KEY=VALUE" "$T/sfbad-${B}_0.log" \
   && [ "$stb3" = FAILED ] && [ "$(job_field "${B}_3" ExitCode)" = 2:0 ] && grep -q "array task 3 but .* has 2 rows" "$T/sfbad-${B}_3.log" \
   && [ ! -e "$T/sfbad" ]; then
  ok "(e2) malformed row: task ${B}_0 FAILED 2:0; task ${B}_3 past the 2 rows FAILED 2:0; both said why, no folder made"
else bad "(e2) bad sweep file $B: tasks $stb0 $(job_field "${B}_0" ExitCode) / $stb3 $(job_field "${B}_3" ExitCode): $(tail -1 "$T/sfbad-${B}_0.log" 2>&1) | $(tail -1 "$T/sfbad-${B}_3.log" 2>&1)"; fi

# (f) device and thread options from the allocation, seen by a stub binary
cat > "$T/stub" <<'EOF'
#!/bin/bash
# prints what it was given; writes OUT/log.rank<r> like dsonas unless STUB_SILENT is set
echo "stub rank ${SLURM_PROCID:-?} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} args: $*"
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
[ -n "${STUB_SILENT:-}" ] || { mkdir -p "$out" && echo "stub" >>"$out/log.rank${SLURM_PROCID:-0}"; }
EOF
chmod +x "$T/stub"
stub_job() {  # stub_job NAME sbatch-options...
  local n=$1; shift
  (cd "$T" && DSONAS_BIN=$T/stub DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/$n \
     sbatch --parsable --output="$T/$n.log" "$@" "$ROOT/slurm/search.sbatch")
}
if [ "$GPUS" -gt 0 ]; then
  J=$(stub_job f1 --ntasks=2 --gpus-per-task=1); st=$(wait_final "$J" 60)
  if [ "$st" = COMPLETED ] && [ "$(grep -c '^stub rank .* --device cuda' "$T/f1.log")" = 2 ] \
     && [ "$(grep -o 'CUDA_VISIBLE_DEVICES=[^ ]*' "$T/f1.log" | sort -u | wc -l)" = 2 ] && ! grep -q 'CUDA_VISIBLE_DEVICES=unset\|=[0-9],' "$T/f1.log"; then
    ok "(f) --gpus-per-task=1: both ranks got --device cuda and a GPU of their own ($(grep -o 'CUDA_VISIBLE_DEVICES=[^ ]*' "$T/f1.log" | sort | paste -sd' '))"
  else bad "(f) GPU job $J $st: $(grep '^stub\|step:' "$T/f1.log" | tr '\n' ' ')"; fi
fi
J=$(stub_job f2 --ntasks=2 --cpus-per-task=1); st=$(wait_final "$J" 60)
if [ "$st" = COMPLETED ] && grep -q 'step: srun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task=1 ' "$T/f2.log" \
   && [ "$(grep -c '^stub rank .* --threads 1 ' "$T/f2.log")" = 2 ] && ! grep -q -- '--device' "$T/f2.log"; then
  ok "(f) --cpus-per-task=1: srun --cpus-per-task=1, --threads 1 on both ranks, no --device on a CPU job"
else bad "(f) CPU job $J $st: $(grep '^stub\|step:' "$T/f2.log" | tr '\n' ' ')"; fi
# a step that srun reports as done but that wrote nothing is launched again, then the job fails
J=$(STUB_SILENT=1 DSONAS_LAUNCH_RETRIES=1 DSONAS_LAUNCH_RETRY_SECS=1 stub_job f3); st=$(wait_final "$J" 60)
if [ "$st" = FAILED ] && [ "$(job_field "$J" ExitCode)" = 1:0 ] && [ "$(grep -c '^stub rank 0' "$T/f3.log")" = 2 ] \
   && grep -q "did not write .*log.rank0, 2 times" "$T/f3.log"; then
  ok "(f) a step that exits 0 without writing its log was launched again once, then job $J FAILED (1:0)"
else bad "(f) silent-step job $J $st $(job_field "$J" ExitCode): $(notes "$T/f3.log" 4)"; fi

# (i) a step without a signal handler (like `dsonas eval`) killed by the forwarded SIGUSR1 is
# run again after a requeue; past DSONAS_MAX_REQUEUES the job ends FAILED with 75 instead
cat > "$T/sleeper" <<'EOF'
#!/bin/bash
while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
mkdir -p "$out" && echo started >>"$out/log.rank${SLURM_PROCID:-0}"
exec sleep 60
EOF
chmod +x "$T/sleeper"
J=$(cd "$T" && DSONAS_BIN=$T/sleeper DSONAS_CONFIG=none DSONAS_OUT=$T/i DSONAS_MAX_REQUEUES=0 \
      sbatch --parsable --ntasks=2 --output="$T/i.log" "$ROOT/slurm/search.sbatch") || bad "(i) sbatch failed"
if wait_file "$T/i/log.rank0" 60 "$J"; then
  sleep 1; scancel --signal=USR1 --batch "$J"
  st=$(wait_final "$J" 60)
  if [ "$st" = FAILED ] && [ "$(job_field "$J" ExitCode)" = 75:0 ] && grep -q "ended by a signal (exit 138) after SIGUSR1" "$T/i.log" \
     && grep -q "DSONAS_MAX_REQUEUES=0" "$T/i.log"; then
    ok "(i) a step killed by the forwarded SIGUSR1 (exit 138) counts as a requeue; with DSONAS_MAX_REQUEUES=0 job $J FAILED 75:0"
  else bad "(i) job $J $st $(job_field "$J" ExitCode): $(notes "$T/i.log" 4)"; fi
else bad "(i) the sleeper did not start: $(notes "$T/i.log")"; fi

# (g) srun returns 0 for a step that never launched (its PMIx socket name is taken: what a job
# requeued and restarted at once met here): lib.sh sees no output and launches it again
J=$(cd "$T" && DSONAS_BIN=$BIN DSONAS_CONFIG=$T/tiny.cfg DSONAS_OUT=$T/g DSONAS_LAUNCH_RETRY_SECS=3 \
      sbatch --parsable --hold --output="$T/g.log" "$ROOT/slurm/search.sbatch") || bad "(g) sbatch failed"
: >"$T/cluster/spool/stepd.slurm.pmix.$J.0"   # the socket path of the job's first step, taken
scontrol release "$J"
end=$((SECONDS + 30))
until grep -q "launching it again" "$T/g.log" 2>/dev/null || [ $SECONDS -ge $end ]; do sleep 0.2; done
rm -f "$T/cluster/spool/stepd.slurm.pmix.$J.0"
st=$(wait_final "$J" 60)
if [ "$st" = COMPLETED ] && grep -q "launch failed" "$T/g.log" && grep -q "exited with 0" "$T/g.log" \
   && grep -q "launching it again" "$T/g.log" && [ -s "$T/g/model.h5" ]; then
  ok "(g) srun returned 0 for a step that failed to launch; lib.sh launched it again and job $J COMPLETED with model.h5"
else bad "(g) job $J $st: $(grep '^\[search\|^srun' "$T/g.log" | tail -4 | tr '\n' ' ')"; fi

# (j) an installed tree: make install into a prefix, `module load dsonas` (Lmod) in the submitting
# shell, sbatch $DSONAS_HOME/slurm/search.sbatch with no DSONAS_BIN: the job finds and runs the
# installed binary, and its model.h5 says it was written by that binary
PJ=$T/prefix
if make -s -C "$ROOT" --no-print-directory BUILD="$BUILD_ARG" install PREFIX="$PJ" >"$T/j-install.log" 2>&1; then
  J=$(cd "$T" && env -u DSONAS_BIN bash --noprofile --norc -c "source /usr/share/lmod/lmod/init/bash && module use '$PJ/modulefiles' \
        && module load dsonas && DSONAS_CONFIG='$T/tiny.cfg' DSONAS_OUT='$T/j' sbatch --parsable --output='$T/j.log' \"\$DSONAS_HOME/slurm/search.sbatch\"" 2>"$T/j.err") \
    || bad "(j) module load + sbatch failed: $(tail -2 "$T/j.err")"
  st=$(wait_final "$J" 60)
  vline=$("$PJ/bin/dsonas" --version | head -1)
  if [ "$st" = COMPLETED ] && grep -q "binary $PJ/bin/dsonas" "$T/j.log" && [ -s "$T/j/model.h5" ] \
     && "$PJ/bin/dsonas" inspect "$T/j/model.h5" 2>&1 | grep -qxF "written by: $vline"; then
    ok "(j) installed tree: module load dsonas, sbatch \$DSONAS_HOME/slurm/search.sbatch → job $J COMPLETED with the installed binary; model.h5 written by '$vline'"
  else bad "(j) job $J: state $st; $(notes "$T/j.log")"; fi
else bad "(j) make install failed: $(tail -3 "$T/j-install.log")"; fi

retries=$(grep -l "launching it again" "$T"/*.log "$T"/*/slurm-*.log 2>/dev/null | grep -v 'f3.log\|/g.log')
[ -z "$retries" ] || echo "note: srun reported a step done that never ran, relaunched by lib.sh, in: $(tr '\n' ' ' <<<"${retries//$T\//}")"
