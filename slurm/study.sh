#!/usr/bin/env bash
# Submit a `dsonas study` (found vs hand-made vs random architectures of the same cost, several
# retrain seeds, statistics; run/study.hpp) as three dependent Slurm jobs (run this on the login
# node; it is not a batch script):
#   job 1        slurm/study.sbatch prepare: search(es) → DIR/r1, …, architectures → DIR/archs,
#                the task plan → DIR/plan.json
#   array job 2  one retrain + evaluation per array task (--array=0-<N−1>, N from
#                `dsonas study --study.plan`), --dependency=afterok:<job 1>
#   job 3        the report → DIR/study.md, study.json, study.csv, study.png,
#                --dependency=afterok:<array job 2> (every task COMPLETED)
# Each job follows slurm/lib.sh's requeue protocol; running study.sh again on the same DIR
# submits new jobs that keep every finished part (a finished task returns at once).
#
#   slurm/study.sh DIR
#   DSONAS_CONFIG=jobs/fmnist_study.cfg DSONAS_SBATCH_ARGS="--ntasks=2 --cpus-per-task=1" slurm/study.sh runs/study
#
# Environment (all optional): DSONAS_CONFIG (default <repo>/jobs/fmnist_study.cfg), DSONAS_ARGS
# (dsonas options for every part), DSONAS_SBATCH_ARGS (sbatch options for every job),
# DSONAS_PREPARE_SBATCH_ARGS, DSONAS_TASK_SBATCH_ARGS, DSONAS_REPORT_SBATCH_ARGS (one part only),
# DSONAS_BIN (default as in slurm/lib.sh: <repo>/build/dsonas, or the installed one), and what slurm/lib.sh reads.
# Prints the job IDs and, as its last line, "DSONAS_JOBS=P:A:R".  Exit 0 when all three were
# submitted; 2 on bad usage; 1 if a submission fails (the jobs already submitted are cancelled).
# Job logs: DIR/slurm-study-<part>-<id>[_<task>].log.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
if [ $# -ne 1 ] || [ "${1:0:1}" = - ]; then usage; fi
die() { echo "study.sh: $*" >&2; exit "${2:-2}"; }
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname -- "$HERE")
source "$HERE/lib.sh"  # dsonas_default_bin: the checkout's build/dsonas or the installed one
command -v sbatch >/dev/null || die "sbatch not found: run this where Slurm commands work"
D=$(abs "$1")
CONFIG=$(abs "${DSONAS_CONFIG:-$REPO/jobs/fmnist_study.cfg}")
[ -f "$CONFIG" ] || die "DSONAS_CONFIG=$CONFIG: no such file"
BIN=$(abs "${DSONAS_BIN:-$(dsonas_default_bin)}")
[ -x "$BIN" ] || die "DSONAS_BIN=$BIN is not an executable (build it with make, or set DSONAS_BIN)"
read -r -a SB_ALL <<<"${DSONAS_SBATCH_ARGS:-}"
read -r -a SB_P <<<"${DSONAS_PREPARE_SBATCH_ARGS:-}"
read -r -a SB_T <<<"${DSONAS_TASK_SBATCH_ARGS:-}"
read -r -a SB_R <<<"${DSONAS_REPORT_SBATCH_ARGS:-}"
read -r -a ARGS <<<"${DSONAS_ARGS:-}"
N=$("$BIN" study --config "$CONFIG" "${ARGS[@]}" --out "$D" --study.plan | wc -l) ||
  die "dsonas study --study.plan failed (see above)"
[ "$N" -ge 1 ] || die "the study has no task"
mkdir -p "$D"

submit() {  # submit PART [sbatch options...]: echo the job id
  local part=$1; shift
  local id
  id=$(env DSONAS_BIN="$BIN" DSONAS_CONFIG="$CONFIG" DSONAS_OUT="$D" DSONAS_STUDY_PART="$part" \
         DSONAS_ARGS="${DSONAS_ARGS:-}" DSONAS_LIB_DIR="$HERE" \
         sbatch --parsable --export=ALL --job-name="dsonas-study-$part" "$@" "$HERE/study.sbatch") || return 1
  echo "${id%%;*}"
}
P=$(submit prepare --output="$D/slurm-study-prepare-%j.log" "${SB_ALL[@]}" "${SB_P[@]}") ||
  die "sbatch of the prepare job failed" 1
echo "prepare job $P: search(es), architectures and plan → $D"
if ! A=$(submit task --array="0-$((N - 1))" --output="$D/slurm-study-task-%A_%a.log" \
           --dependency="afterok:$P" --kill-on-invalid-dep=yes "${SB_ALL[@]}" "${SB_T[@]}"); then
  scancel "$P" || true
  die "sbatch of the task array failed; job $P cancelled" 1
fi
echo "task array $A: $N retrains (after job $P completes) → $D/retrain"
if ! R=$(submit report --output="$D/slurm-study-report-%j.log" --dependency="afterok:$A" --kill-on-invalid-dep=yes \
           "${SB_ALL[@]}" "${SB_R[@]}"); then
  scancel "$P" "$A" || true
  die "sbatch of the report job failed; jobs $P and $A cancelled" 1
fi
echo "report job $R (after every task completes) → $D/study.md"
echo "DSONAS_JOBS=$P:$A:$R"
