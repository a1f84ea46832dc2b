#!/usr/bin/env bash
# End-to-end tests of the dsonas binary: bad input is refused with exit 2 and one
# line naming the file or field, with nothing written; pretrain → search runs,
# writes its files and is deterministic; a mismatched --init is refused (exit 3).
# usage: tests/e2e/run_all.sh BUILD_DIR
set -uo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/dsonas
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'umount "$T/full" 2>/dev/null; rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }

# expect_fail NAME CODE PATTERN OUTDIR -- command...
expect_fail() {
  local name=$1 code=$2 pat=$3 out=$4; shift 5
  "$@" >"$T/stdout" 2>"$T/stderr"; local rc=$?
  local lines; lines=$(wc -l <"$T/stderr")
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code ($(head -c 300 "$T/stderr"))"; return; fi
  if [ "$lines" -ne 1 ]; then bad "$name: $lines lines on stderr, expected 1: $(cat "$T/stderr")"; return; fi
  if ! grep -q -- "$pat" "$T/stderr"; then bad "$name: message lacks '$pat': $(cat "$T/stderr")"; return; fi
  if [ -n "$out" ] && [ -e "$out" ]; then bad "$name: $out was created"; return; fi
  ok "$name  →  $(cat "$T/stderr")"
}

echo "e2e: bad input"
SYN="--data.dataset synthetic --space.preset tiny --data.batch 8 --data.synthetic-train 64 --data.synthetic-test 16 --threads 2"
for kind in truncated garbage badmagic badlabel mismatch; do
  "$PY" "$HERE/make_idx.py" "$T/idx_$kind" "$kind"
done
"$PY" "$HERE/make_idx.py" "$T/idx_good" good
expect_fail "missing data folder" 2 "/nonexistent/fm" "$T/o1" -- "$BIN" pretrain --data.dir /nonexistent/fm --out "$T/o1"
expect_fail "truncated IDX" 2 "train-images-idx3-ubyte.gz" "$T/o2" -- "$BIN" pretrain --data.dir "$T/idx_truncated" --out "$T/o2"
expect_fail "corrupt gzip" 2 "train-images-idx3-ubyte.gz" "$T/o3" -- "$BIN" pretrain --data.dir "$T/idx_garbage" --out "$T/o3"
expect_fail "bad magic" 2 "magic" "$T/o4" -- "$BIN" pretrain --data.dir "$T/idx_badmagic" --out "$T/o4"
expect_fail "label out of range" 2 "train-labels-idx1-ubyte.gz" "$T/o5" -- "$BIN" pretrain --data.dir "$T/idx_badlabel" --out "$T/o5"
expect_fail "count mismatch" 2 "train-" "$T/o6" -- "$BIN" pretrain --data.dir "$T/idx_mismatch" --out "$T/o6"
expect_fail "unknown option" 2 "bogus" "$T/o7" -- "$BIN" pretrain --bogus 1 --out "$T/o7"
expect_fail "negative lr" 2 "optim.lr" "$T/o8" -- "$BIN" search $SYN --optim.lr -0.1 --out "$T/o8"
expect_fail "L = 0" 2 "space.levels" "$T/o9" -- "$BIN" search $SYN --space.levels 0 --out "$T/o9"
expect_fail "bad op" 2 "space.ops" "$T/o10" -- "$BIN" search $SYN --space.ops sep3,conv7 --out "$T/o10"
expect_fail "missing config" 2 "/nonexistent.cfg" "$T/o11" -- "$BIN" search --config /nonexistent.cfg --out "$T/o11"
printf '[optim]\nlr = 0.1\nbogus-key = 3\n' >"$T/bad.cfg"
expect_fail "unknown config key" 2 "bad.cfg" "$T/o12" -- "$BIN" search --config "$T/bad.cfg" --out "$T/o12"
expect_fail "bad penalty" 2 "search.penalty" "$T/o13" -- "$BIN" search $SYN --search.penalty flops --out "$T/o13"
expect_fail "missing --init" 2 "--init" "$T/o14" -- "$BIN" search $SYN --init "$T/nothing" --out "$T/o14"
expect_fail "unknown command" 2 "frobnicate" "" -- "$BIN" frobnicate
expect_fail "bad device" 2 "--device" "$T/o15" -- "$BIN" search $SYN --device tpu --out "$T/o15"
expect_fail "bad gpu-math" 2 "gpu-math: 'fp16' (expected fp32, tf32 or bf16)" "$T/o15m" -- "$BIN" search $SYN --device cuda --gpu-math fp16 --out "$T/o15m"
expect_fail "gpu-math on the cpu" 2 "--gpu-math: tf32 needs --device cuda" "$T/o15c" -- "$BIN" search $SYN --gpu-math tf32 --out "$T/o15c"
# validate --device cuda: with CUDA compiled in, a note on this machine's GPUs (none on a
# login node or CI: still exit 0); without CUDA, a BAD line and exit 2
vout=$("$BIN" validate $SYN --device cuda 2>&1); vrc=$?
if grep -q "built without CUDA" <<<"$vout"; then
  if [ "$vrc" -eq 2 ] && grep -q "^BAD  --device cuda: this dsonas was built without CUDA" <<<"$vout"; then ok "validate --device cuda without CUDA: BAD, exit 2"
  else bad "validate --device cuda without CUDA: exit $vrc: $vout"; fi
elif [ "$vrc" -eq 0 ] && grep -q "^note: --device cuda (gpu-math fp32): " <<<"$vout"; then
  ok "validate --device cuda: $(grep '^note: --device cuda' <<<"$vout")"
else bad "validate --device cuda: exit $vrc: $vout"; fi

echo "e2e: pretrain → search (tiny synthetic)"
if "$BIN" pretrain $SYN --max-steps 30 --log-every 10 --out "$T/run/pretrain" >"$T/pre.log" 2>&1 \
   && [ -s "$T/run/pretrain/model.h5" ] && [ -s "$T/run/pretrain/metrics.jsonl" ] && [ -s "$T/run/pretrain/log.rank0" ]; then
  ok "pretrain wrote model.h5, metrics.jsonl, log.rank0"
else bad "pretrain: $(tail -3 "$T/pre.log")"; fi
SEARCH="$BIN search $SYN --max-steps 60 --log-every 10 --search.gamma 0.05 --search.lambda-lr-mult 5 --init $T/run/pretrain"
if $SEARCH --out "$T/run/search" >"$T/s1.log" 2>&1 && $SEARCH --out "$T/run/search2" >"$T/s2.log" 2>&1; then
  ok "search ran twice"
else bad "search: $(tail -3 "$T/s1.log" "$T/s2.log")"; fi
if "$PY" - "$T/run/search/model.h5" "$T/run/search2/model.h5" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
lam = [n for n in names if n.startswith("lambda/")]
assert lam, "no lambda datasets"
for n in names:
    assert np.array_equal(a[n][()], b[n][()]), "differs: " + n
zeros = sum(int((a[n][()] == 0).sum()) for n in lam)
total = sum(a[n].size for n in lam)
assert zeros > 0, "search produced no exact zeros"
print("  identical model files; %d of %d λ exactly zero" % (zeros, total))
PYEOF
then ok "two identical searches give byte-identical weights and λ"; else bad "search determinism / sparsity"; fi
if diff <(grep -o '"loss":[^,]*' "$T/run/search/metrics.jsonl") <(grep -o '"loss":[^,]*' "$T/run/search2/metrics.jsonl") >/dev/null; then
  ok "identical loss trajectories"; else bad "loss trajectories differ"; fi
expect_fail "existing run folder" 2 "already holds a run" "" -- $SEARCH --out "$T/run/search"
if [ -s "$T/run/search/model.h5" ]; then ok "existing run left intact"; else bad "existing run damaged"; fi
expect_fail "mismatched --init" 3 "space.widths" "$T/o16" -- "$BIN" search $SYN --space.widths 4,16 --init "$T/run/pretrain" --out "$T/o16"

echo "e2e: checkpoints and bit-exact resume (tiny synthetic search)"
RES="$BIN search $SYN --max-steps 60 --log-every 10 --search.gamma 0.02 --search.lambda-lr-mult 5"
same_model() { "$PY" "$(dirname "${BASH_SOURCE[0]}")/same_model.py" "$1" "$2"; }  # every dataset byte-identical
$RES --out "$T/ra" >"$T/ra.log" 2>&1 || bad "uninterrupted run A: $(tail -2 "$T/ra.log")"
{ DSONAS_FAULT=kill-after-step:35 $RES --checkpoint-every 10 --out "$T/rb" >"$T/rb1.log" 2>&1; rc=$?; } 2>/dev/null
if [ "$rc" -eq 137 ] && [ -s "$T/rb/ckpt/step_00000030.h5" ] && [ "$(cat "$T/rb/ckpt/latest")" = step_00000030.h5 ]; then
  ok "kill -9 after step 35: checkpoints 10..30 on disk, latest = step 30"
else bad "kill -9 run: rc=$rc, ckpt: $(ls "$T/rb/ckpt" 2>&1)"; fi
if $RES --checkpoint-every 10 --keep-last 4 --out "$T/rb" --resume >"$T/rb2.log" 2>&1 && grep -q "resumed from .*step_00000030.h5" "$T/rb2.log" \
   && grep -q "changed since the checkpoint: keep-last = 3 -> 4" "$T/rb2.log" \
   && same_model "$T/ra/model.h5" "$T/rb/model.h5" \
   && diff <(grep -o '"loss":[^,]*' "$T/ra/metrics.jsonl") <(grep -o '"loss":[^,]*' "$T/rb/metrics.jsonl") >/dev/null; then
  ok "resume after kill -9: final model byte-identical to the uninterrupted run, metrics identical"
  if $RES --checkpoint-every 10 --out "$T/ra2" >/dev/null 2>&1 && same_model "$T/ra2/ckpt/step_00000060.h5" "$T/rb/ckpt/step_00000060.h5"; then
    ok "final checkpoints (weights, λ, both momenta, BN statistics) byte-identical too"
  else bad "final checkpoints differ"; fi
else bad "resume after kill -9: $(tail -3 "$T/rb2.log")"; fi
DSONAS_FAULT=signal-after-step:25 $RES --out "$T/rc" >"$T/rc1.log" 2>&1; rc=$?
if [ "$rc" -eq 75 ] && [ -s "$T/rc/ckpt/step_00000025.h5" ]; then ok "SIGUSR1: checkpoint at the next step boundary, exit 75"
else bad "SIGUSR1: rc=$rc $(tail -2 "$T/rc1.log")"; fi
if $RES --out "$T/rc" --resume >"$T/rc2.log" 2>&1 && same_model "$T/ra/model.h5" "$T/rc/model.h5"; then
  ok "resume after SIGUSR1: byte-identical final model"
else bad "resume after SIGUSR1: $(tail -3 "$T/rc2.log")"; fi
cp "$T/rc/metrics.jsonl" "$T/rc_metrics_done"
if $RES --out "$T/rc" --resume >"$T/rc3.log" 2>&1 && grep -q "already finished" "$T/rc3.log" \
   && cmp -s "$T/rc_metrics_done" "$T/rc/metrics.jsonl" && grep -q '"event":"final"' "$T/rc/metrics.jsonl"; then
  ok "resume of a finished stage does nothing (metrics.jsonl unchanged, final line kept)"
else bad "resume of finished stage: $(tail -2 "$T/rc3.log")"; fi
# corrupt the newest checkpoint of a killed run: fallback, or exit 3 when strict
{ DSONAS_FAULT=kill-after-step:35 $RES --checkpoint-every 10 --out "$T/rd" >/dev/null 2>&1; } 2>/dev/null
cp -r "$T/rd" "$T/re"
flip_weight_byte() {  # one byte of the stem weights' stored chunk
  "$PY" - "$1" <<'PYEOF'
import sys, h5py
p = sys.argv[1]
with h5py.File(p, "r") as f:  # HDF5 addresses count from the end of the user block (the seal)
    off = f["params/stem/conv/weight"].id.get_chunk_info(0).byte_offset + f.userblock_size
with open(p, "r+b") as f:
    f.seek(off + 5); b = f.read(1); f.seek(off + 5); f.write(bytes([b[0] ^ 0xFF]))
PYEOF
}
unseal() {  # zero the 512-byte seal: the file reads as one written before seals existed
  "$PY" -c "import sys; f = open(sys.argv[1], 'r+b'); f.write(bytes(512))" "$1"
}
flip_weight_byte "$T/rd/ckpt/step_00000030.h5"
expect_fail "flipped byte, --strict-resume: the seal (whole-file CRC-32) refuses it before HDF5 reads it" 3 \
  "step_00000030.h5: damaged: CRC-32 of its contents is" "" -- $RES --checkpoint-every 10 --out "$T/rd" --resume --strict-resume
cp "$T/rd/ckpt/step_00000030.h5" "$T/unsealed.h5"
mkdir -p "$T/ru" && cp -r "$T/rd/." "$T/ru/" && unseal "$T/ru/ckpt/step_00000030.h5"
expect_fail "flipped byte in a file without a seal: Fletcher32 names the dataset" 3 "params/stem/conv/weight" "" -- \
  $RES --checkpoint-every 10 --out "$T/ru" --resume --strict-resume
if $RES --checkpoint-every 10 --out "$T/rd" --resume >"$T/rd2.log" 2>&1 && grep -q "unusable" "$T/rd2.log" \
   && grep -q "resumed from .*step_00000020.h5" "$T/rd2.log" && same_model "$T/ra/model.h5" "$T/rd/model.h5"; then
  ok "flipped byte detected (seal), fell back to step 20, still byte-identical at the end"
else bad "corrupt fallback: $(tail -3 "$T/rd2.log")"; fi
# validate --resume: the same checkpoint walk and checks as --resume, no training
if "$BIN" validate $SYN --resume "$T/re" >"$T/v1.log" 2>&1 && grep -q "ok   $T/re/ckpt/step_00000030.h5 (resume): search step 30, written by 1 rank" "$T/v1.log"; then
  ok "validate --resume names the checkpoint resume would load: $(grep -o 'search step 30, written by 1 rank' "$T/v1.log")"
else bad "validate --resume: $(tail -3 "$T/v1.log")"; fi
cp -r "$T/re" "$T/rv" && flip_weight_byte "$T/rv/ckpt/step_00000030.h5"
if "$BIN" validate $SYN --resume "$T/rv" >"$T/v2.log" 2>&1 && grep -q "step_00000020.h5 (resume): search step 20.*step_00000030.h5 skipped (.*damaged: CRC-32" "$T/v2.log"; then
  ok "validate --resume with a corrupt newest checkpoint: falls back to step 20 as resume would, and says why"
else bad "validate --resume fallback: $(tail -3 "$T/v2.log")"; fi
expect_fail "validate --resume, changed seed" 2 "step_00000030.h5: seed: checkpoint=1 now=7" "" -- "$BIN" validate $SYN --resume "$T/re" --seed 7
expect_fail "validate --resume, no such folder" 2 "--resume: $T/nope is not a folder" "" -- "$BIN" validate $SYN --resume "$T/nope"
cp -r "$T/re" "$T/rl" && rm "$T/rl/ckpt/latest"
if $RES --checkpoint-every 10 --out "$T/rl" --resume >"$T/rl.log" 2>&1 && grep -q "resumed from .*step_00000030.h5" "$T/rl.log"; then
  ok "missing latest pointer: newest checkpoint found by scanning"
else bad "missing latest: $(tail -2 "$T/rl.log")"; fi
f="$T/re/ckpt/step_00000030.h5"; truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
if $RES --checkpoint-every 10 --out "$T/re" --resume >"$T/re2.log" 2>&1 && grep -q "resumed from .*step_00000020.h5" "$T/re2.log"; then
  ok "truncated newest checkpoint: fell back to step 20"
else bad "truncated fallback: $(tail -3 "$T/re2.log")"; fi
expect_fail "resume with another seed" 3 "seed: checkpoint=1 now=2" "" -- $RES --seed 2 --out "$T/rb" --resume
if same_model "$T/ra/lambda_trajectory.h5" "$T/rb/lambda_trajectory.h5" && "$PY" - "$T/rb/lambda_trajectory.h5" <<'PYEOF'
import sys, h5py, numpy as np
s = h5py.File(sys.argv[1], "r")["step"][()]
assert list(s) == list(range(10, 61, 10)), list(s)
PYEOF
then ok "λ trajectory after kill -9 + resume: steps 10..60, no gap or duplicate, byte-identical"
else bad "λ trajectory after resume"; fi
for point in ckpt-after-data ckpt-before-rename ckpt-before-latest; do
  { DSONAS_FAULT=$point:30 $RES --checkpoint-every 10 --out "$T/k_$point" >/dev/null 2>&1; rc=$?; } 2>/dev/null
  latest=$(cat "$T/k_$point/ckpt/latest" 2>/dev/null)
  if [ "$rc" -eq 137 ] && [ "$latest" = step_00000020.h5 ] \
     && $RES --checkpoint-every 10 --out "$T/k_$point" --resume >"$T/k.log" 2>&1 \
     && grep -q "resumed from .*step_00000020.h5" "$T/k.log" && ! ls "$T/k_$point/ckpt" | grep -q tmp \
     && same_model "$T/ra/model.h5" "$T/k_$point/model.h5"; then
    ok "kill -9 at $point of checkpoint 30: latest still names step 20, resume from it is byte-identical"
  else bad "kill at $point: rc=$rc latest=$latest $(tail -2 "$T/k.log" 2>/dev/null)"; fi
done
# a full disk: a 4.5 MB tmpfs holds three checkpoints of the tiny model, not four
mkdir -p "$T/full"
if mount -t tmpfs -o size=4500k tmpfs "$T/full" 2>"$T/mount.err"; then
  $RES --checkpoint-every 10 --keep-last 0 --out "$T/full/run" >"$T/full.log" 2>&1; rc=$?
  if [ "$rc" -eq 1 ] && grep -q "No space left on device" "$T/full.log" && [ "$(cat "$T/full/run/ckpt/latest")" = step_00000030.h5 ] \
     && ! ls "$T/full/run/ckpt" | grep -q tmp && "$BIN" inspect "$T/full/run/ckpt/step_00000030.h5" >/dev/null 2>&1; then
    ok "disk full while writing checkpoint 40: exit 1 with the errno text, no temporary left, step 30 intact"
  else bad "disk full: rc=$rc $(tail -1 "$T/full.log")"; fi
  umount "$T/full"
else
  echo "  SKIPPED  disk-full test: cannot mount a tmpfs here ($(head -c 200 "$T/mount.err"))"
fi
$RES --checkpoint-every 5 --keep-last 3 --keep-every 20 --out "$T/rf" >/dev/null 2>&1
if [ "$(cd "$T/rf/ckpt" && ls step_*.h5 | tr '\n' ' ')" = "step_00000020.h5 step_00000040.h5 step_00000050.h5 step_00000055.h5 step_00000060.h5 " ]; then
  ok "retention --keep-last 3 --keep-every 20: newest 3 + milestones 20, 40"
else bad "retention left: $(ls "$T/rf/ckpt")"; fi
mkdir -p "$T/rg" && echo "$$ $(hostname)" >"$T/rg/run.lock"
expect_fail "run lock held by a live process" 2 "in use by pid $$" "" -- $RES --out "$T/rg"
echo "999999 $(hostname)" >"$T/rg/run.lock"
if $RES --out "$T/rg" >"$T/rg.log" 2>&1 && [ ! -e "$T/rg/run.lock" ]; then ok "stale run lock (dead pid) taken over and released"
else bad "stale lock: $(tail -2 "$T/rg.log")"; fi
$RES --deadline +5 --deadline-margin 10 --out "$T/rh" >"$T/rh.log" 2>&1; rc=$?
if [ "$rc" -eq 75 ] && grep -q "deadline" "$T/rh.log" && $RES --out "$T/rh" --resume >/dev/null 2>&1 && same_model "$T/ra/model.h5" "$T/rh/model.h5"; then
  ok "deadline within the margin: checkpoint, exit 75; the resumed run is byte-identical"
else bad "deadline: rc=$rc $(tail -2 "$T/rh.log")"; fi

if "$BIN" inspect "$T/rb/ckpt/$(cat "$T/rb/ckpt/latest")" --diff "$T/ra/model.h5" >"$T/in1" 2>&1 && grep -q "exactly zero" "$T/in1" \
   && grep -q "step=60" "$T/in1" && grep -q "checkpoint-every: 0 vs 10\|checkpoint-every: 10 vs 0" "$T/in1" \
   && "$BIN" inspect "$T/rb/lambda_trajectory.h5" >"$T/in2" 2>&1 && grep -q "records: 6, steps 10 .. 60, training images 80 .. 480" "$T/in2" \
   && grep -q "^seal: CRC-32 [0-9a-f]\{8\} over [0-9]* bytes, ok$" "$T/in1" && grep -q "^seal: CRC-32 .*, ok$" "$T/in2"; then
  ok "inspect: checkpoint (sparsity, position, config diff, seal) and trajectory"
else bad "inspect: $(cat "$T/in1" "$T/in2" | tail -5)"; fi
"$BIN" --version >"$T/ver" 2>&1; rc=$?
vline=$(head -1 "$T/ver")
if [ "$rc" -eq 0 ] && echo "$vline" | grep -q "^dsonas [0-9][0-9.]* (commit " && grep -q "^build: .*USE_MPI=" "$T/ver" \
   && grep -q "^libraries: .*HDF5 .*Boost .*OpenBLAS" "$T/ver" && grep -qxF "written by: $vline" "$T/in1" \
   && grep -qxF "written by: $vline" "$T/in2"; then
  ok "dsonas --version; inspect prints it back from the checkpoint and the trajectory (written by)"
else bad "--version: rc=$rc $(head -3 "$T/ver"); $(grep written "$T/in1" "$T/in2")"; fi
expect_fail "inspect a non-HDF5 file" 3 "make_idx.py" "" -- "$BIN" inspect "$HERE/make_idx.py"
# issue 15's crash: a trajectory written by an earlier dsonas (no seal) whose /live_macs cannot be
# opened; that version's inspect died with SIGSEGV in Trajectory::read_all
expect_fail "inspect a trajectory whose /live_macs cannot be opened (was SIGSEGV)" 3 "dataset /live_macs cannot be opened" "" -- \
  "$BIN" inspect "$HERE/../fuzz/crashes/h5_inspect/issue15-trajectory-live-macs-unopenable.h5"

echo "e2e: the reference pruning schedule (dense, then rebuilds; zero λ wired between rebuilds)"
REF="$BIN search $SYN --max-steps 120 --log-every 10 --search.gamma 0.01 --search.lambda-lr-mult 5 --search.prune reference --search.prune-dense-epochs 3 --search.prune-every 3"
$REF --out "$T/pa" >"$T/pa.log" 2>&1 || bad "reference schedule run: $(tail -2 "$T/pa.log")"
nreb=$(grep -c "search: rebuild at step" "$T/pa.log")
rev=$(grep -o '"revivals":[0-9]*' "$T/pa/metrics.jsonl" | tail -1 | cut -d: -f2)
if [ "$nreb" -ge 3 ] && grep -q "search: rebuild at step 26 (epoch 4)" "$T/pa.log" && [ "${rev:-0}" -gt 0 ] \
   && "$PY" -c "import h5py, sys; r = h5py.File(sys.argv[1])['revivals'][()]; sys.exit(0 if r[-1] == $rev and (r[1:] >= r[:-1]).all() else 1)" "$T/pa/lambda_trajectory.h5"; then
  ok "reference schedule: first rebuild at the start of epoch 4, $nreb rebuilds, $rev revivals (metrics and trajectory /revivals agree)"
else bad "reference schedule: $nreb rebuilds, revivals '$rev': $(grep rebuild "$T/pa.log" | head -2)"; fi
{ DSONAS_FAULT=kill-after-step:45 $REF --checkpoint-every 20 --out "$T/pb" >/dev/null 2>&1; } 2>/dev/null
if [ "$(cat "$T/pb/ckpt/latest" 2>/dev/null)" = step_00000040.h5 ] && $REF --checkpoint-every 20 --out "$T/pb" --resume >"$T/pb2.log" 2>&1 \
   && same_model "$T/pa/model.h5" "$T/pb/model.h5" && same_model "$T/pa/lambda_trajectory.h5" "$T/pb/lambda_trajectory.h5" \
   && diff <(grep -o '"revivals":[0-9]*' "$T/pa/metrics.jsonl") <(grep -o '"revivals":[0-9]*' "$T/pb/metrics.jsonl") >/dev/null; then
  ok "reference schedule: kill -9 at step 45, resume from step 40 across the rebuilds at 50, 74, 98: model, trajectory and revival counts byte-identical"
else bad "reference schedule resume: $(tail -3 "$T/pb2.log")"; fi
{ DSONAS_FAULT=kill-after-step:45 $REF --checkpoint-every 20 --out "$T/pc" >/dev/null 2>&1; } 2>/dev/null
expect_fail "resume under another pruning schedule" 3 "prune: checkpoint=reference:3:3 now=step" "" -- \
  "$BIN" search $SYN --max-steps 120 --search.gamma 0.01 --search.lambda-lr-mult 5 --checkpoint-every 20 --out "$T/pc" --resume
expect_fail "bad search.prune" 2 "search.prune: 'sometimes'" "$T/pd" -- $RES --search.prune sometimes --out "$T/pd"

echo "e2e: derive (architecture JSON, DOT, PNG)"
if "$BIN" search $SYN --max-steps 40 --search.gamma 0.02 --search.lambda-lr-mult 5 --out "$T/dv" >"$T/dv.log" 2>&1 \
   && "$BIN" derive --run "$T/dv" --out "$T/dv_a.json" --png "$T/dv_a.png" >"$T/dv_a.log" 2>&1 \
   && "$BIN" derive --run "$T/dv" --out "$T/dv_b.json" >"$T/dv_b.log" 2>&1; then
  ok "derive ran twice on a 40-step tiny search"
else bad "derive: $(tail -3 "$T/dv.log" "$T/dv_a.log" "$T/dv_b.log")"; fi
if cmp -s "$T/dv_a.json" "$T/dv_b.json" && cmp -s "$T/dv_a.dot" "$T/dv_b.dot" && grep -q '"format": "dsonas-architecture"' "$T/dv_a.json"; then
  ok "derive twice: byte-identical JSON and DOT"
else bad "derive output differs between two runs"; fi
n_inspect=$("$BIN" inspect "$T/dv/model.h5" 2>/dev/null | sed -n 's/^live ops: \([0-9]*\).*/\1/p')
n_json=$(grep -c '"level": ' "$T/dv_a.json")
n_print=$(sed -n 's/^live ops: \([0-9]*\).*/\1/p' "$T/dv_a.log")
if [ -n "$n_inspect" ] && [ "$n_inspect" = "$n_json" ] && [ "$n_inspect" = "$n_print" ]; then
  ok "live ops: inspect $n_inspect = ops in the JSON = derive summary"
else bad "live ops: inspect '$n_inspect', JSON '$n_json', derive '$n_print'"; fi
if grep -q '^digraph architecture' "$T/dv_a.dot" && [ "$(grep -c 'subgraph cluster_s[0-9]*_u' "$T/dv_a.dot")" -eq 2 ]; then
  ok "DOT written next to --out, one cluster per normal block"
else bad "DOT: $(head -3 "$T/dv_a.dot" 2>&1)"; fi
if command -v dot >/dev/null; then
  if [ "$(head -c 4 "$T/dv_a.png" 2>/dev/null | tail -c 3)" = PNG ]; then ok "PNG rendered by Graphviz"; else bad "no PNG although dot is installed"; fi
else bad "Graphviz dot not installed (run make deps)"; fi
if PATH=/nonexistent "$BIN" derive --run "$T/dv/model.h5" --out "$T/dv_c.json" --png "$T/dv_c.png" >/dev/null 2>"$T/dv_c.err" \
   && grep -q "warning: Graphviz 'dot' not found" "$T/dv_c.err" && [ ! -e "$T/dv_c.png" ] && [ -s "$T/dv_c.json" ]; then
  ok "no dot on PATH: one warning, no PNG, exit 0"
else bad "derive without dot: $(cat "$T/dv_c.err")"; fi
"$BIN" derive --run "$T/dv" --out "$T/dv_w.json" --width 8 >/dev/null 2>&1
if grep -q '"widths": \[8, 16\]' "$T/dv_w.json" && grep -q '"stem_channels": 8' "$T/dv_w.json"; then
  ok "derive --width 8: stage widths 8/16"
else bad "derive --width: $(grep -m1 widths "$T/dv_w.json" 2>&1)"; fi
expect_fail "derive: missing run folder" 2 "$T/nothing" "$T/dv_m.json" -- "$BIN" derive --run "$T/nothing" --out "$T/dv_m.json"
expect_fail "derive: not a dsonas file" 3 "make_idx.py" "$T/dv_n.json" -- "$BIN" derive --run "$HERE/make_idx.py" --out "$T/dv_n.json"
echo keep >"$T/dv_keep.json"
expect_fail "derive: --out holds another file" 2 "dv_keep.json" "" -- "$BIN" derive --run "$T/dv" --out "$T/dv_keep.json"
if [ "$(cat "$T/dv_keep.json")" = keep ]; then ok "existing foreign --out left intact"; else bad "foreign --out overwritten"; fi

echo "e2e: CIFAR-10 binary files (small, written here in the real format)"
"$PY" - "$T/cifar" <<'PYEOF'
import os, random, sys
d = sys.argv[1]; os.makedirs(d, exist_ok=True); rnd = random.Random(7)
def write(name, n):
    with open(os.path.join(d, name), "wb") as f:
        for i in range(n):
            f.write(bytes([i % 10]) + bytes(rnd.randrange(256) for _ in range(3072)))
for k in range(1, 6): write("data_batch_%d.bin" % k, 16)
write("test_batch.bin", 16)
PYEOF
CIF="--data.dataset cifar10 --data.dir $T/cifar --space.preset tiny --space.input 3x32x32 --space.classes 10 --data.batch 8 --threads 2"
if "$BIN" search $CIF --max-steps 6 --log-every 2 --out "$T/cf" >"$T/cf.log" 2>&1 && grep -q '"test_acc"' "$T/cf/metrics.jsonl"; then
  ok "search on CIFAR-10 binary files (80 train / 16 test images)"
else bad "CIFAR-10 search: $(tail -3 "$T/cf.log")"; fi
expect_fail "CIFAR-10 without data.dir" 2 "data.dir" "$T/cf2" -- "$BIN" search --data.dataset cifar10 --space.preset cifar10 --out "$T/cf2"
head -c 5000 "$T/cifar/data_batch_3.bin" >"$T/cifar/x" && mv "$T/cifar/x" "$T/cifar/data_batch_3.bin"
expect_fail "truncated CIFAR-10 batch" 2 "data_batch_3.bin" "$T/cf3" -- "$BIN" search $CIF --out "$T/cf3"

echo "e2e: Fashion-MNIST files (installed by make deps)"
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if "$BIN" pretrain --config jobs/fmnist.cfg --max-steps 3 --log-every 1 --search.bn-reestimate 64 --data.eval-batches 2 --out "$T/fm" >"$T/fm.log" 2>&1 \
     && grep -q '"test_acc"' "$T/fm/metrics.jsonl"; then
    ok "3 pretrain steps on the real Fashion-MNIST"
  else bad "Fashion-MNIST pretrain: $(tail -3 "$T/fm.log")"; fi
else
  bad "Fashion-MNIST not installed (run make deps)"
fi

echo "e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
