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
trap 'rm -rf "$T"' EXIT
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
