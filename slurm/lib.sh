# shellcheck shell=bash
# slurm/lib.sh — the part every dsonas batch script shares; sourced, never run or submitted.
# Sourced by slurm/search.sbatch, slurm/retrain.sbatch and slurm/sweep.sbatch (each finds it
# with the same few lines at its top: sbatch runs a *copy* of the script from Slurm's spool
# folder, so the script asks Slurm for the original's path).
#
# Functions
#   dsonas_setup NAME        once, first: reads the common variables below, chooses the device
#                            and thread options, installs the signal traps
#   dsonas_step --expect FILE CMD ARGS...
#                            runs `dsonas CMD [--config C] [device/threads] ARGS... $DSONAS_ARGS` as
#                            one job step on every task of the job (srun, in the background),
#                            waits for it and applies the requeue protocol (below); returns only
#                            when dsonas exited 0 and wrote FILE during the step (srun can return
#                            0 for a step that never launched: then the step is launched again,
#                            DSONAS_LAUNCH_RETRIES times, DSONAS_LAUNCH_RETRY_SECS apart)
#   dsonas_local CMD ARGS... runs a non-MPI dsonas command (derive, inspect) in the batch shell;
#                            exits the job with its code when it fails
#   dsonas_log MSG           one timestamped line into the job log
#   dsonas_die CODE MSG      log MSG and end the job with CODE
#
# Common environment (set at submission; sbatch exports the submitting shell's environment)
#   DSONAS_BIN          the dsonas binary          default: <repo>/build/dsonas in a checkout
#                       (<repo> = the folder above slurm/, found from this file's path); in an
#                       installed tree (make install: PREFIX/share/dsonas/slurm) PREFIX/bin/dsonas;
#                       else the dsonas on PATH (module load dsonas)
#   DSONAS_CONFIG       INI config (--config)      default: <repo>/jobs/fmnist.cfg; "none": no --config
#                       (installed: PREFIX/share/dsonas/jobs/fmnist.cfg = $DSONAS_HOME/jobs/...)
#   DSONAS_ARGS         extra dsonas options for every training step, word-split   default: empty
#   DSONAS_DEVICE       auto | cpu | cuda          default: auto = --device cuda when Slurm gave the
#                       job GPUs (sbatch --gpus-per-task=1 ...), else no --device option (the
#                       config's, or cpu).  Request GPUs at submission; the scripts hold no
#                       #SBATCH GPU line, so one script serves CPU and GPU partitions.
#   DSONAS_THREADS      --threads per rank         default: $SLURM_CPUS_PER_TASK when set (sbatch
#                       --cpus-per-task=N), else none (dsonas: the node's cores / ranks on it)
#   DSONAS_SRUN_MPI     srun --mpi plugin          default: pmix (`srun --mpi=list` shows yours;
#                       e.g. pmi2 where Open MPI was built against Slurm's PMI-2)
#   DSONAS_SRUN_ARGS    extra srun options, word-split (e.g. "--cpu-bind=cores")   default: empty
#   DSONAS_MAX_REQUEUES requeue at most this many times (SLURM_RESTART_COUNT)       default: 20
#                       past it an exit 75 ends the job FAILED with 75 (resubmit by hand)
#   DSONAS_LAUNCH_RETRIES, DSONAS_LAUNCH_RETRY_SECS   relaunches of a step that srun reports as
#                       done but that never ran (no output written), and the pause before each
#                                                                   default: 3, 10; then exit 1
#
# Launch: srun --mpi=$DSONAS_SRUN_MPI --kill-on-bad-exit=1 [--cpus-per-task=N] $DSONAS_BIN ...
# on all $SLURM_NTASKS tasks (sbatch --ntasks=N, or --nodes/--ntasks-per-node): one MPI rank per
# task, data parallel; one task per GPU with --gpus-per-task=1 (dsonas uses the first GPU it sees).
#
# Requeue protocol
#   * Every training step runs with --resume: each (re)start continues from the newest usable
#     checkpoint in its output folder (or starts when there is none; a finished stage returns
#     at once, so a requeued job skips the stages it already finished).
#   * SIGUSR1 or SIGTERM to the batch shell (#SBATCH --signal=B:USR1@60: SIGUSR1 60 s before
#     the time limit; `scancel --signal=USR1 --batch JOB` by hand) is passed to every rank as
#     SIGUSR1 (through srun, which forwards SIGUSR1 to all its tasks; srun turns a SIGTERM of its
#     own into SIGKILL).  dsonas writes a checkpoint at the next step boundary and exits 75.
#     dsonas also exits 75 by itself before SLURM_JOB_END_TIME minus --deadline-margin (120 s).
#   * dsonas exit 75 -> `scontrol requeue <this job>` (<array job>_<task> for an array task) and
#     the script exits 0: the job goes back to PENDING and later restarts the script from the
#     top (same job ID, same output folder).  A job depending on it (afterok) keeps waiting.
#   * Except after a SIGTERM: that is `scancel JOB`, a preemption or the time limit itself, and
#     the job is not requeued (a cancelled job must stay cancelled; Slurm requeues preempted
#     jobs itself): the script exits 75 once dsonas has stopped.
#   * dsonas exit 0 -> next step / job COMPLETED.  Any other code -> the script exits with it:
#     job FAILED with that ExitCode (2 bad usage/config/data, 3 checkpoint unusable, 4 non-finite,
#     1 internal error); it is not requeued.
#   * A signal that arrives between two steps stops the job before the next one (requeue; after
#     SIGTERM exit 75).  A step without a signal handler (eval) that dies of the forwarded
#     SIGUSR1 (exit > 128) is likewise requeued, and runs again.
#   * Preemption with a plain SIGTERM to every process reaches srun too, which then kills the
#     ranks at once: on preemptible partitions checkpoint periodically (--checkpoint-secs) or
#     let Slurm send the --signal first (PreemptParameters=send_user_signal).

if [ -z "${BASH_VERSION:-}" ]; then echo "slurm/lib.sh: needs bash" >&2; exit 2; fi

DSONAS_SLURM_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
DSONAS_REPO=$(dirname -- "$DSONAS_SLURM_DIR")

# The binary these scripts run unless DSONAS_BIN says otherwise: a checkout's build/dsonas;
# an installed tree's PREFIX/bin/dsonas (this file is PREFIX/share/dsonas/slurm/lib.sh); the
# dsonas on PATH (a loaded module); else the checkout's path (reported missing by the caller).
dsonas_default_bin() {
  local installed=$DSONAS_REPO/../../bin/dsonas
  if [ -x "$DSONAS_REPO/build/dsonas" ]; then echo "$DSONAS_REPO/build/dsonas"
  elif [ -x "$installed" ]; then echo "$(cd -- "$(dirname -- "$installed")" && pwd)/dsonas"
  elif command -v dsonas >/dev/null 2>&1; then command -v dsonas
  else echo "$DSONAS_REPO/build/dsonas"; fi
}

dsonas_log() {
  echo "[${DSONAS_SCRIPT:-dsonas} $(date +%H:%M:%S) job $(dsonas_self) restart ${SLURM_RESTART_COUNT:-0}] $*"
}

dsonas_die() {  # dsonas_die CODE MSG
  local code=$1; shift
  dsonas_log "ERROR: $*" >&2
  exit "$code"
}

# This job as scontrol/scancel name it: <array job>_<task> for an array task (its own ID
# would be taken for the whole array when it equals the array's ID), else the job ID.
dsonas_self() {
  if [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && [ -n "${SLURM_ARRAY_TASK_ID:-}" ]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
  else
    echo "${SLURM_JOB_ID:-none}"
  fi
}

# Did Slurm give this job GPUs?  (Slurm sets these only for jobs that requested GPUs.)
dsonas_job_has_gpus() {
  [ -n "${SLURM_JOB_GPUS:-}" ] && return 0
  [ -n "${SLURM_GPUS_ON_NODE:-}" ] && [ "${SLURM_GPUS_ON_NODE}" != 0 ] && return 0
  [ -n "${SLURM_GPUS_PER_TASK:-}${SLURM_GPUS_PER_NODE:-}${SLURM_GPUS:-}" ] && return 0
  return 1
}

dsonas_setup() {  # dsonas_setup NAME
  DSONAS_SCRIPT=$1
  [ -n "${SLURM_JOB_ID:-}" ] || dsonas_log "note: not inside a Slurm job (SLURM_JOB_ID unset); srun will fail unless it can allocate"
  DSONAS_BIN=${DSONAS_BIN:-$(dsonas_default_bin)}
  DSONAS_CONFIG=${DSONAS_CONFIG:-$DSONAS_REPO/jobs/fmnist.cfg}
  DSONAS_ARGS=${DSONAS_ARGS:-}
  DSONAS_SRUN_MPI=${DSONAS_SRUN_MPI:-pmix}
  DSONAS_SRUN_ARGS=${DSONAS_SRUN_ARGS:-}
  DSONAS_MAX_REQUEUES=${DSONAS_MAX_REQUEUES:-20}
  DSONAS_LAUNCH_RETRIES=${DSONAS_LAUNCH_RETRIES:-3}
  DSONAS_LAUNCH_RETRY_SECS=${DSONAS_LAUNCH_RETRY_SECS:-10}
  [ -x "$DSONAS_BIN" ] || dsonas_die 2 "DSONAS_BIN=$DSONAS_BIN is not an executable (build it with make, or set DSONAS_BIN)"
  local v
  for v in DSONAS_MAX_REQUEUES DSONAS_LAUNCH_RETRIES DSONAS_LAUNCH_RETRY_SECS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || dsonas_die 2 "$v='${!v}' is not a number"
  done

  DSONAS_CONFIG_OPT=()
  if [ "$DSONAS_CONFIG" != none ]; then
    [ -f "$DSONAS_CONFIG" ] || dsonas_die 2 "DSONAS_CONFIG=$DSONAS_CONFIG: no such file (run from $PWD)"
    DSONAS_CONFIG_OPT=(--config "$DSONAS_CONFIG")
  fi

  DSONAS_RUN_OPT=()
  case ${DSONAS_DEVICE:-auto} in
    auto) if dsonas_job_has_gpus; then DSONAS_RUN_OPT+=(--device cuda); fi ;;
    cpu|cuda) DSONAS_RUN_OPT+=(--device "$DSONAS_DEVICE") ;;
    *) dsonas_die 2 "DSONAS_DEVICE='$DSONAS_DEVICE' (expected auto, cpu or cuda)" ;;
  esac
  if [ -n "${DSONAS_THREADS:-}" ]; then
    DSONAS_RUN_OPT+=(--threads "$DSONAS_THREADS")
  elif [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    DSONAS_RUN_OPT+=(--threads "$SLURM_CPUS_PER_TASK")
  fi

  # srun does not take --cpus-per-task over from sbatch (Slurm >= 22.05): pass it on, or every
  # task would be bound to one CPU where the cluster binds tasks.
  DSONAS_LAUNCH=(srun "--mpi=$DSONAS_SRUN_MPI" --kill-on-bad-exit=1)
  [ -z "${SLURM_CPUS_PER_TASK:-}" ] || DSONAS_LAUNCH+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
  local extra
  read -r -a extra <<<"$DSONAS_SRUN_ARGS"   # word-split, no globbing
  DSONAS_LAUNCH+=("${extra[@]}")
  read -r -a DSONAS_EXTRA_ARGS <<<"$DSONAS_ARGS"

  DSONAS_CHILD=
  DSONAS_SIGNAL=
  DSONAS_GOT_TERM=
  trap 'dsonas_forward USR1' USR1
  trap 'dsonas_forward TERM' TERM
  dsonas_log "$(hostname -s): ${SLURM_NTASKS:-1} task(s) on ${SLURM_JOB_NUM_NODES:-1} node(s), device ${DSONAS_DEVICE:-auto}${DSONAS_RUN_OPT[*]:+ (${DSONAS_RUN_OPT[*]})}, binary $DSONAS_BIN"
}

# Trap handler: remember the signal and pass it on to the running step as SIGUSR1 (dsonas
# treats USR1 and TERM alike; srun forwards USR1 to every task but kills them on TERM).
dsonas_forward() {
  DSONAS_SIGNAL=$1
  [ "$1" != TERM ] || DSONAS_GOT_TERM=1
  if [ -n "$DSONAS_CHILD" ] && kill -0 "$DSONAS_CHILD" 2>/dev/null; then
    dsonas_log "got SIG$1: passing SIGUSR1 to the ranks (srun $DSONAS_CHILD)"
    kill -USR1 "$DSONAS_CHILD" 2>/dev/null || true
  else
    dsonas_log "got SIG$1 between steps: the job stops before the next step"
  fi
}

dsonas_requeue() {  # dsonas_requeue WHY: requeue this job and exit 0 (exit 75 instead: see below)
  local self
  self=$(dsonas_self)
  if [ -n "$DSONAS_GOT_TERM" ]; then
    # SIGTERM is scancel, a preemption or the time limit itself: never requeue on it (a
    # cancelled job would come back; Slurm requeues preempted jobs by itself)
    dsonas_die 75 "$1; SIGTERM (scancel, preemption or the time limit): not requeueing; to continue, resubmit the same job (it resumes) or scontrol requeue $self"
  fi
  if [ "${SLURM_RESTART_COUNT:-0}" -ge "$DSONAS_MAX_REQUEUES" ]; then
    dsonas_die 75 "$1; already requeued ${SLURM_RESTART_COUNT:-0} times (DSONAS_MAX_REQUEUES=$DSONAS_MAX_REQUEUES): not requeueing; resubmit the same job to continue"
  fi
  dsonas_log "$1: requeueing $self"
  scontrol requeue "$self" || dsonas_die 75 "scontrol requeue $self failed (is the partition requeue-enabled? JobRequeue / --requeue); resubmit the same job to continue"
  exit 0
}

dsonas_step() {  # dsonas_step --expect FILE CMD ARGS...
  [ "$1" = --expect ] || dsonas_die 1 "dsonas_step: --expect FILE missing (internal)"
  local expect=$2 cmd=$3; shift 3
  local argv=("$DSONAS_BIN" "$cmd" "${DSONAS_CONFIG_OPT[@]}" "${DSONAS_RUN_OPT[@]}" "$@" "${DSONAS_EXTRA_ARGS[@]}")
  local try=0 rc mark
  while :; do
    [ -z "$DSONAS_SIGNAL" ] || dsonas_requeue "stopped by SIG$DSONAS_SIGNAL before '$cmd'"
    mark=$(mktemp "${TMPDIR:-/tmp}/dsonas-step.XXXXXX")
    dsonas_log "step: ${DSONAS_LAUNCH[*]} ${argv[*]}"
    "${DSONAS_LAUNCH[@]}" "${argv[@]}" &
    DSONAS_CHILD=$!
    # `wait` also returns (status > 128) when a trapped signal arrives: wait again as long as
    # srun is still there (a zombie counts; the wait that collects it gives its exit status)
    wait "$DSONAS_CHILD" && rc=0 || rc=$?
    while kill -0 "$DSONAS_CHILD" 2>/dev/null; do
      wait "$DSONAS_CHILD" && rc=0 || rc=$?
    done
    DSONAS_CHILD=
    dsonas_log "dsonas $cmd exited with $rc"
    # srun can return 0 for a step whose tasks never started ("task 0 launch failed"; seen
    # when a requeued job restarts at once and its step ID's PMIx socket is still taken):
    # the step counts as done only if dsonas wrote $expect during it.
    if [ "$rc" -eq 0 ] && [ -z "$(find "$expect" -newer "$mark" 2>/dev/null)" ]; then
      rm -f "$mark"
      try=$((try + 1))
      [ "$try" -le "$DSONAS_LAUNCH_RETRIES" ] ||
        dsonas_die 1 "srun returned 0 but dsonas $cmd did not write $expect, $try times: the step never ran (see srun's errors above)"
      dsonas_log "srun returned 0 but dsonas $cmd did not write $expect: the step did not run; launching it again in ${DSONAS_LAUNCH_RETRY_SECS} s (retry $try of $DSONAS_LAUNCH_RETRIES)"
      sleep "$DSONAS_LAUNCH_RETRY_SECS" & wait $! || true   # a trapped signal ends the sleep
      continue
    fi
    rm -f "$mark"
    break
  done
  case $rc in
    0)  ;;   # a signal that came meanwhile stops the job before its next step
    75) dsonas_requeue "dsonas $cmd wrote a checkpoint and exited 75" ;;
    *)  # a step without signal handling (eval) dies of the forwarded SIGUSR1: run it again later
        [ -z "$DSONAS_SIGNAL" ] || [ "$rc" -le 128 ] || dsonas_requeue "dsonas $cmd ended by a signal (exit $rc) after SIG$DSONAS_SIGNAL"
        dsonas_die "$rc" "dsonas $cmd failed with exit code $rc (2 usage/config/data, 3 checkpoint, 4 non-finite, 1 internal); not requeued" ;;
  esac
}

dsonas_local() {  # dsonas_local CMD ARGS...
  dsonas_log "local: $DSONAS_BIN $*"
  local rc=0
  "$DSONAS_BIN" "$@" || rc=$?
  [ "$rc" -eq 0 ] || dsonas_die "$rc" "dsonas $1 failed with exit code $rc"
}
