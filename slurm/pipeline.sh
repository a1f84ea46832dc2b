#!/usr/bin/env bash
# Submit the whole DSO-NAS method as two dependent Slurm jobs (run this on the login node; it is
# not a batch script):
#   job 1  slurm/search.sbatch:  pretrain -> DIR/pretrain, then search -> DIR/search
#   job 2  slurm/retrain.sbatch: derive -> DIR/arch.json (+ arch.dot, arch.png), retrain ->
#          DIR/retrain, eval -> DIR/retrain/eval_test; submitted with
#          --dependency=afterok:<job 1> --kill-on-invalid-dep=yes: it starts only once job 1 has
#          COMPLETED (a requeue of job 1 keeps it waiting) and is cancelled if job 1 fails.
# The layout is that of `dsonas pipeline` (without the hand-made baseline and report.md).
#
#   slurm/pipeline.sh DIR
#   DSONAS_CONFIG=jobs/cifar10_share.cfg \
#     DSONAS_SBATCH_ARGS="--ntasks=2 --gpus-per-task=1 --cpus-per-task=8" \
#     DSONAS_SEARCH_SBATCH_ARGS="--time=24:00:00" DSONAS_RETRAIN_SBATCH_ARGS="--time=48:00:00" \
#     slurm/pipeline.sh runs/cifar10_share
#
# Prints the two job IDs ("search job N", "retrain job M") and, as its last line,
# "DSONAS_JOBS=N:M" for scripts.  Exit 0 when both were submitted; 2 on bad usage; if the
# second submission fails, the first job is cancelled and the script exits 1.
#
# Environment (all optional):
#   DSONAS_CONFIG              search config (pretrain + search)    default: <repo>/jobs/fmnist.cfg
#   DSONAS_RETRAIN_CONFIG      retrain config                       default: $DSONAS_CONFIG
#   DSONAS_PRETRAIN            the pretrain folder the search starts from: pretrained first by
#                              job 1 unless finished; "none": search from scratch (no pretrain)
#                                                                   default: DIR/pretrain
#   DSONAS_ARGS                dsonas options for every step of both jobs (word-split)
#   DSONAS_SEARCH_ARGS, DSONAS_RETRAIN_ARGS   options for one job only (appended to DSONAS_ARGS)
#   DSONAS_DERIVE_ARGS         derive options ("" for none)         default: --png DIR/arch.png
#   DSONAS_SBATCH_ARGS         sbatch options for both jobs (word-split), e.g. "--ntasks=2
#                              --gpus-per-task=1 --partition=gpu --account=X"
#   DSONAS_SEARCH_SBATCH_ARGS, DSONAS_RETRAIN_SBATCH_ARGS   sbatch options for one job only
#   DSONAS_BIN                 the binary (checked here)   default: as slurm/lib.sh (build/dsonas, or installed)
#   DSONAS_DEVICE, DSONAS_THREADS, DSONAS_SRUN_MPI, DSONAS_SRUN_ARGS, DSONAS_MAX_REQUEUES,
#   DSONAS_LAUNCH_RETRIES, DSONAS_LAUNCH_RETRY_SECS   passed on to the jobs (see slurm/lib.sh)
# DIR, the configs and the binary are made absolute here, so the jobs find them whatever their
# working folder; the word-split variables cannot carry paths with spaces.
#
# Requeue protocol: each job follows slurm/lib.sh (checkpoint and exit 75 on SIGUSR1 or before
# the time limit, `scontrol requeue`, resume; on SIGTERM = scancel/preemption: checkpoint, no
# requeue).  Running pipeline.sh again on the same DIR submits two new jobs that resume every
# stage from DIR (finished stages return at once).
#
# Job logs: DIR/slurm-search-<id>.log and DIR/slurm-retrain-<id>.log.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
if [ $# -ne 1 ] || [ "${1:0:1}" = - ]; then usage; fi
die() { echo "pipeline.sh: $*" >&2; exit "${2:-2}"; }
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$HERE")
source "$HERE/lib.sh"  # dsonas_default_bin: the checkout's build/dsonas or the installed one
command -v sbatch >/dev/null || die "sbatch not found: run this where Slurm commands work"
D=$(abs "$1")
CONFIG=$(abs "${DSONAS_CONFIG:-$REPO/jobs/fmnist.cfg}")
RCONFIG=$(abs "${DSONAS_RETRAIN_CONFIG:-$CONFIG}")
[ -f "$CONFIG" ] || die "DSONAS_CONFIG=$CONFIG: no such file"
[ -f "$RCONFIG" ] || die "DSONAS_RETRAIN_CONFIG=$RCONFIG: no such file"
BIN=$(abs "${DSONAS_BIN:-$(dsonas_default_bin)}")
[ -x "$BIN" ] || die "DSONAS_BIN=$BIN is not an executable (build it with make, or set DSONAS_BIN)"
read -r -a SB_BOTH <<<"${DSONAS_SBATCH_ARGS:-}"
read -r -a SB_SEARCH <<<"${DSONAS_SEARCH_SBATCH_ARGS:-}"
read -r -a SB_RETRAIN <<<"${DSONAS_RETRAIN_SBATCH_ARGS:-}"
mkdir -p "$D"

PRE=${DSONAS_PRETRAIN:-$D/pretrain}
[ "$PRE" = none ] || PRE=$(abs "$PRE")
# The jobs read their settings from the environment that sbatch passes on (--export=ALL):
# env(1) sets them for one sbatch only, whatever characters they hold.
SID=$(env DSONAS_BIN="$BIN" DSONAS_CONFIG="$CONFIG" DSONAS_OUT="$D/search" DSONAS_PRETRAIN="$PRE" \
        DSONAS_ARGS="${DSONAS_ARGS:-} ${DSONAS_SEARCH_ARGS:-}" DSONAS_LIB_DIR="$HERE" \
        sbatch --parsable --export=ALL --job-name=dsonas-search --output="$D/slurm-search-%j.log" \
        "${SB_BOTH[@]}" "${SB_SEARCH[@]}" "$HERE/search.sbatch") ||
  die "sbatch of the search job failed" 1
SID=${SID%%;*}   # --parsable prints "id[;cluster]"
echo "search job $SID: $( [ "$PRE" != none ] && echo "pretrain -> $PRE, " )search -> $D/search"

if ! RID=$(env DSONAS_BIN="$BIN" DSONAS_CONFIG="$RCONFIG" DSONAS_OUT="$D/retrain" DSONAS_SEARCH="$D/search" \
             DSONAS_ARCH="$D/arch.json" DSONAS_DERIVE_ARGS="${DSONAS_DERIVE_ARGS---png $D/arch.png}" \
             DSONAS_ARGS="${DSONAS_ARGS:-} ${DSONAS_RETRAIN_ARGS:-}" DSONAS_LIB_DIR="$HERE" \
             sbatch --parsable --export=ALL --job-name=dsonas-retrain --output="$D/slurm-retrain-%j.log" \
             --dependency="afterok:$SID" --kill-on-invalid-dep=yes \
             "${SB_BOTH[@]}" "${SB_RETRAIN[@]}" "$HERE/retrain.sbatch"); then
  scancel "$SID" || true
  die "sbatch of the retrain job failed; search job $SID cancelled" 1
fi
RID=${RID%%;*}
echo "retrain job $RID (after job $SID completes): derive -> $D/arch.json, retrain -> $D/retrain, eval -> $D/retrain/eval_test"
echo "monitor: squeue -j $SID,$RID; tail -f $D/slurm-search-$SID.log; $D/search/metrics.jsonl"
echo "DSONAS_JOBS=$SID:$RID"
