#!/usr/bin/env bash
# Every jobs/*.cfg must be usable as it stands.  Usage: tests/e2e/jobs.sh BUILD_DIR
# For each file:
#   parse  `dsonas bench --config F --bench.steps 0`: every option and section parses and the
#          model builds (prints its sizes; no training).  A file that does not parse fails here.
#   data   `dsonas validate --config F` against files in the dataset's real format: tiny
#          CIFAR-10 binaries / tiny packed ImageNet shards written here (--data.dir), Debian's
#          Fashion-MNIST for fmnist (skipped, and said so, when that package is missing).
#   retrain  *_retrain.cfg: one short `dsonas retrain --arch baseline` with the file's [retrain]
#          settings (schedule, target width rule, dropout, drop-path, aux head, cutout, smoothing;
#          a fixed width is replaced by 8) on tiny data, 1-6 steps; the [retrain] sections of the
#          search configs must equal their *_retrain.cfg's.
#   ImageNet: should this dsonas accept data.dataset = imagenet only in `validate` (as before its
#   loader was wired into training), parse and retrain run with --data.dataset synthetic (same
#   3x224x224 input) and say so.
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$(cd "$1" 2>/dev/null && pwd)/dsonas
PY=/usr/bin/python3
[ -x "$BIN" ] || { echo "FAIL no $1/dsonas"; echo "jobs: 0 passed, 1 failed"; exit 1; }
T=$(mktemp -d /tmp/dsonas-jobs.XXXXXX)
trap 'rm -rf "$T"' EXIT
PASS=0 FAILN=0 T0=$SECONDS
ok()   { echo "ok   $*"; PASS=$((PASS + 1)); }
bad()  { echo "FAIL $*"; FAILN=$((FAILN + 1)); }
note() { echo "note $*"; }

# --- fixtures in the real formats ----------------------------------------------------------
mkdir -p "$T/cifar10"
"$PY" - "$T/cifar10" <<'EOF' || bad "could not write the CIFAR-10 fixture"
import os, sys
# CIFAR-10 binary version: records of 1 label byte + 3x32x32 pixels, 5 train batches + test
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        for k in range(4):
            f.write(bytes([k % 10]) + bytes((7 * k + j) % 256 for j in range(3072)))
EOF
IMAGENET=
if "$PY" - "$T/jpeg" <<'EOF' 2>"$T/pil.log"; then
import os, sys
from PIL import Image   # Debian python3-pil (a dependency of python3-matplotlib)
for split in ("train", "val"):
    for c, colour in (("n01440764", (200, 30, 30)), ("n01443537", (30, 30, 200))):
        d = os.path.join(sys.argv[1], split, c)
        os.makedirs(d)
        for i in range(2):
            Image.new("RGB", (48 + 8 * i, 40), colour).save(os.path.join(d, "img%d.JPEG" % i), quality=90)
EOF
  if "$BIN" pack --src "$T/jpeg" --out "$T/imagenet" --threads 1 >"$T/pack.log" 2>&1; then IMAGENET=$T/imagenet
  else bad "dsonas pack of the ImageNet fixture failed: $(tail -2 "$T/pack.log")"; fi
else
  note "no PIL for $PY ($(tail -1 "$T/pil.log")): ImageNet configs are not validated against shards"
fi

cfg_value() {  # cfg_value FILE SECTION KEY: the value of KEY in [SECTION] ("" = top level)
  awk -v sec="$2" -v key="$3" '
    /^[ \t]*#/ || /^[ \t]*$/ { next }
    /^\[/ { cur = substr($0, 2, index($0, "]") - 2); next }
    cur == sec { split($0, kv, "="); k = kv[1]; gsub(/[ \t]/, "", k)
                 if (k == key) { v = substr($0, index($0, "=") + 1); gsub(/^[ \t]+|[ \t]+$/, "", v); print v; exit } }' "$1"
}
section() {  # section FILE NAME: the section's settings, comments and blank lines dropped
  awk -v sec="$2" '/^\[/ { cur = substr($0, 2, index($0, "]") - 2); next }
                   cur == sec && !/^[ \t]*#/ && !/^[ \t]*$/ { gsub(/[ \t]+/, " "); print }' "$1"
}

# run NAME -- command...: exit status of the command; its output in $T/out
run() { "$@" >"$T/out" 2>&1; }
not_yet_imagenet() { grep -q "data.dataset: 'imagenet'" "$T/out"; }

CFGS=("$ROOT"/jobs/*.cfg)
[ -e "${CFGS[0]}" ] || bad "no jobs/*.cfg"
for f in "${CFGS[@]}"; do
  n=jobs/$(basename "$f")
  ds=$(cfg_value "$f" data dataset); ds=${ds:-fmnist}
  dir=$(cfg_value "$f" data dir)
  # ---- parse ----
  how=""
  run "$BIN" bench --config "$f" --bench.steps 0 --threads 1
  rc=$?
  if [ $rc -ne 0 ] && [ "$ds" = imagenet ] && not_yet_imagenet; then
    how=" (with --data.dataset synthetic: this dsonas takes data.dataset = imagenet in validate only)"
    run "$BIN" bench --config "$f" --bench.steps 0 --threads 1 --data.dataset synthetic; rc=$?
  fi
  if [ $rc -eq 0 ] && grep -q '"weights":' "$T/out"; then
    ok "$n parses$how: $(grep -o '"preset":"[a-z_0-9]*"' "$T/out" | head -1), $(grep -o '"weights":[0-9]*' "$T/out"), $(grep -o '"total_lambda":[0-9]*' "$T/out"), dataset $ds"
  else
    bad "$n does not parse (exit $rc): $(grep -v '^activations' "$T/out" | tail -2)"
  fi
  # ---- data ----
  case $ds in
    cifar10)
      [ -n "$dir" ] || bad "$n: dataset cifar10 needs data.dir"
      if run "$BIN" validate --config "$f" --data.dir "$T/cifar10"; then ok "$n validates against CIFAR-10 binaries ($(tail -1 "$T/out"))"
      else bad "$n: validate on CIFAR-10 files failed: $(tail -2 "$T/out")"; fi ;;
    imagenet)
      [ -n "$dir" ] || bad "$n: dataset imagenet needs data.dir (the packed shards)"
      if [ -z "$IMAGENET" ]; then note "$n: not validated (no ImageNet fixture)"
      elif run "$BIN" validate --config "$f" --data.dir "$IMAGENET"; then ok "$n validates against packed ImageNet shards ($(tail -1 "$T/out"))"
      else bad "$n: validate on packed ImageNet shards failed: $(tail -2 "$T/out")"; fi ;;
    fmnist)
      if [ -d "${dir:-/usr/share/datasets/fashion-mnist}" ]; then
        if run "$BIN" validate --config "$f"; then ok "$n validates against ${dir:-the Debian Fashion-MNIST} ($(tail -1 "$T/out"))"
        else bad "$n: validate failed: $(tail -2 "$T/out")"; fi
      else note "$n: ${dir:-/usr/share/datasets/fashion-mnist} missing (dataset-fashion-mnist not installed): data not validated"; fi ;;
    synthetic) ;;
    *) bad "$n: unknown data.dataset '$ds'" ;;
  esac
done

# ---- the [retrain] sections agree ----
same_retrain() {  # same_retrain REFERENCE OTHER...
  local ref=$1 o; shift
  [ -n "$(section "$ref" retrain)" ] || { bad "$ref has no [retrain] section"; return; }
  for o in "$@"; do
    if diff <(section "$ref" retrain) <(section "$o" retrain) >"$T/diff"; then
      ok "[retrain] of jobs/$(basename "$o") equals that of jobs/$(basename "$ref")"
    else bad "[retrain] of jobs/$(basename "$o") differs from jobs/$(basename "$ref"): $(tr '\n' ' ' <"$T/diff")"; fi
  done
}
J=$ROOT/jobs
[ -f "$J/cifar10_retrain.cfg" ] && same_retrain "$J/cifar10_retrain.cfg" "$J/cifar10_share.cfg" "$J/cifar10_full.cfg"
[ -f "$J/imagenet_retrain.cfg" ] && same_retrain "$J/imagenet_retrain.cfg" "$J/imagenet_share.cfg" "$J/imagenet_full.cfg"

# ---- a short retrain with each *_retrain.cfg ----
for f in "$ROOT"/jobs/*_retrain.cfg; do
  [ -e "$f" ] || continue
  n=jobs/$(basename "$f")
  ds=$(cfg_value "$f" data dataset)
  # 1 image per rank step; the epochs must exceed a warm-up (warmup-linear:W needs W + 1)
  sched=$(cfg_value "$f" retrain lr-schedule)
  ep=1; [[ "$sched" =~ ^warmup-linear:([0-9]+)$ ]] && ep=$((BASH_REMATCH[1] + 1))
  data=(); how=""
  case $ds in
    cifar10) data=(--data.dir "$T/cifar10") ;;
    imagenet) data=(--data.dir "${IMAGENET:-/nonexistent}") ;;
  esac
  # --retrain.width 8 keeps it short where the file fixes the width (a target-* setting wins over it)
  common=(retrain --config "$f" --arch baseline --epochs "$ep" --retrain.batch 2 --retrain.width 8 --threads 2 --log-every 1)
  rm -rf "$T/rt"
  run "$BIN" "${common[@]}" "${data[@]}" --out "$T/rt"; rc=$?
  if [ $rc -ne 0 ] && { [ -z "$IMAGENET" ] || not_yet_imagenet; } && [ "$ds" = imagenet ]; then
    how=" on synthetic 3x224x224 data (this dsonas does not train on imagenet yet)"
    rm -rf "$T/rt"
    run "$BIN" "${common[@]}" --data.dataset synthetic --data.synthetic-train 2 --data.synthetic-test 2 --out "$T/rt"; rc=$?
  fi
  if [ $rc -eq 0 ] && [ -s "$T/rt/network.h5" ]; then
    ok "$n retrains$how: $(grep -o 'baseline (.*' "$T/out" | head -1 | cut -c1-110)"
  else bad "$n: short retrain failed (exit $rc): $(grep -v '^retrain epoch' "$T/out" | tail -2)"; fi
done

echo "jobs: $PASS passed, $FAILN failed ($((SECONDS - T0)) s)"
[ "$FAILN" -eq 0 ]
