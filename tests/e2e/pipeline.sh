#!/usr/bin/env bash
# End-to-end tests of step 3 and of the whole method as one command:
#  * dsonas pipeline on a tiny synthetic config: every stage's folder, arch.json,
#    report.md with both networks; re-running it redoes nothing;
#  * dsonas retrain: bad --arch (missing, malformed, not fitting the config)
#    refused with exit 2 and the field named, nothing written; kill -9 and
#    resume byte-identical to the uninterrupted run; --retrain.target-macs;
#  * dsonas eval: top-1/top-5, per-class accuracy and a confusion matrix whose
#    counts add up to the test set.
# usage: tests/e2e/pipeline.sh BUILD_DIR
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
same_model() { "$PY" "$HERE/same_model.py" "$1" "$2"; }
expect_fail() {  # NAME CODE PATTERN OUTDIR -- command...
  local name=$1 code=$2 pat=$3 out=$4; shift 5
  "$@" >"$T/stdout" 2>"$T/stderr"; local rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code ($(head -c 300 "$T/stderr"))"; return; fi
  if [ "$(wc -l <"$T/stderr")" -ne 1 ]; then bad "$name: expected one line on stderr: $(cat "$T/stderr")"; return; fi
  if ! grep -q -- "$pat" "$T/stderr"; then bad "$name: message lacks '$pat': $(cat "$T/stderr")"; return; fi
  if [ -n "$out" ] && [ -e "$out" ]; then bad "$name: $out was created"; return; fi
  ok "$name  →  $(cat "$T/stderr")"
}

SYN="--data.dataset synthetic --space.preset tiny --data.synthetic-train 512 --data.synthetic-test 128 --threads 2 --progress false --log-every 10"
STAGES="--pretrain.max-steps 20 --search.max-steps 60 --search.gamma 0.02 --search.lambda-lr-mult 5 --retrain.max-steps 30"

echo "e2e: dsonas pipeline (tiny synthetic)"
if "$BIN" pipeline $SYN $STAGES --out "$T/p" >"$T/p1.log" 2>&1; then
  ok "pipeline ran: $(grep '^pipeline done' "$T/p1.log")"
else bad "pipeline: $(tail -3 "$T/p1.log")"; fi
missing=""
for f in pretrain/model.h5 search/model.h5 search/lambda_trajectory.h5 arch.json arch.dot retrain/network.h5 \
         retrain/arch.json retrain/eval_test/eval.json retrain/eval_test/confusion.csv baseline/network.h5 report.md; do
  [ -s "$T/p/$f" ] || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "every stage's output is there (pretrain, search, arch.json, retrain, baseline, report.md)"
else bad "missing:$missing"; fi
if grep -q "| found (DSO-NAS) |" "$T/p/report.md" && grep -q "| hand-made baseline (sep3 chains) |" "$T/p/report.md" \
   && grep -q "arch.png" "$T/p/report.md" && grep -q "no seed-to-seed spread is known for this configuration" "$T/p/report.md" \
   && grep -q "no seed-to-seed spread is known" "$T/p1.log"; then
  ok "report.md: picture, MACs, parameters and test accuracy of the found network and the baseline; the margin says no spread is known"
else bad "report.md incomplete: $(head -c 400 "$T/p/report.md")"; fi
# the baseline was retrained at (about) the found network's MACs
if "$PY" - "$T/p" <<'EOF'
import json, sys
f = json.load(open(sys.argv[1] + "/retrain/eval_test/eval.json"))
b = json.load(open(sys.argv[1] + "/baseline/eval_test/eval.json"))
r = b["macs"] / f["macs"]
print("    MACs found %d, baseline %d (ratio %.3f)" % (f["macs"], b["macs"], r))
sys.exit(0 if 0.75 <= r <= 1.33 else 1)
EOF
then ok "baseline retrained at the found architecture's MACs (width from retrain.target-macs)"
else bad "baseline MACs far from the found network's"; fi
before=$(stat -c %Y "$T/p/retrain/network.h5")
metrics_before=$(cat "$T"/p/{pretrain,search,retrain,baseline}/metrics.jsonl | md5sum)
if "$BIN" pipeline $SYN $STAGES --out "$T/p" >"$T/p2.log" 2>&1 && [ "$(grep -c 'nothing to do' "$T/p2.log")" -eq 4 ] \
   && [ "$(stat -c %Y "$T/p/retrain/network.h5")" = "$before" ] \
   && [ "$(cat "$T"/p/{pretrain,search,retrain,baseline}/metrics.jsonl | md5sum)" = "$metrics_before" ]; then
  ok "re-running the pipeline redoes nothing (4 stages: 'nothing to do'; their metrics.jsonl, final lines included, unchanged)"
else bad "pipeline re-run: $(grep -c 'nothing to do' "$T/p2.log") stages skipped; $(tail -2 "$T/p2.log")"; fi

# the pipeline's clock: every stage's log lines carry "pipeline left ~…" (and its metrics
# pipeline_eta_s); the steps the pipeline planned for each later stage (from its epochs and
# the dataset sizes the first stage reported) are the steps the stage itself then ran
if "$BIN" pipeline $SYN --pretrain.epochs 1 --search.epochs 2 --retrain.epochs 1 --search.target-zero-frac 0 \
     --search.stable-steps 0 --data.batch 16 --out "$T/pe" >"$T/pe.log" 2>&1 \
   && "$PY" - "$T/pe" "$T/pe.log" <<'EOF'
import json, re, sys
d, log = sys.argv[1], open(sys.argv[2]).read()
planned = dict(re.findall(r"== pipeline: \w+ → \S+/(\w+)  \((\d+) steps planned", log))
assert set(planned) == {"search", "retrain", "baseline"}, planned
msg = []
for st in ("pretrain", "search", "retrain", "baseline"):
    ran = int(re.search(r", (\d+) steps; ", open("%s/%s/log.rank0" % (d, st)).read()).group(1))
    lines = [json.loads(l) for l in open("%s/%s/metrics.jsonl" % (d, st)) if '"step"' in l and '"event"' not in l]
    assert lines and all("pipeline_eta_s" in l for l in lines), st
    assert lines[-1]["pipeline_eta_s"] is not None, st
    left = [l for l in open("%s/%s/log.rank0" % (d, st)) if " step " in l and "pipeline left ~" in l]
    assert left, st + ": no log line with the pipeline's time left"
    if st in planned:
        assert int(planned[st]) == ran, (st, planned[st], ran)
    msg.append("%s %d" % (st, ran))
print("    steps planned = steps run: " + ", ".join(msg))
EOF
then ok "pipeline clock: log lines show 'pipeline left ~', metrics pipeline_eta_s; the steps planned for search, retrain and baseline = the steps they ran"
else bad "pipeline clock: $(tail -3 "$T/pe.log")"; fi

echo "e2e: dsonas eval"
if "$BIN" eval --run "$T/p/retrain" --out "$T/ev" >"$T/ev.log" 2>&1 && "$PY" - "$T/ev" <<'EOF'
import csv, json, sys
d = sys.argv[1]
e = json.load(open(d + "/eval.json"))
rows = list(csv.reader(open(d + "/confusion.csv")))
counts = [[int(v) for v in r[1:]] for r in rows[1:]]
n = sum(map(sum, counts))
diag = sum(counts[i][i] for i in range(len(counts)))
assert n == e["images"] == 128, (n, e["images"])
assert abs(diag / n - e["top1"]) < 1e-6, (diag / n, e["top1"])
assert e["top5"] >= e["top1"]
per = list(csv.DictReader(open(d + "/per_class.csv")))
assert len(per) == len(counts) and sum(int(p["images"]) for p in per) == n
EOF
then ok "eval: $(cat "$T/ev.log")"
else bad "eval: $(tail -2 "$T/ev.log")"; fi
expect_fail "eval of a folder without network.h5" 3 "network.h5" "" -- "$BIN" eval --run "$T/p/search"

echo "e2e: dsonas retrain"
ARCH="$T/p/arch.json"
expect_fail "retrain: missing --arch file" 2 "--arch: $T/none.json does not exist" "$T/r1" -- "$BIN" retrain $SYN --arch "$T/none.json" --out "$T/r1"
sed 's/"levels": 3/"levels": "three"/' "$ARCH" >"$T/bad_type.json"
expect_fail "retrain: malformed arch.json" 2 "bad_type.json: .*levels" "$T/r2" -- "$BIN" retrain $SYN --arch "$T/bad_type.json" --out "$T/r2"
head -c 200 "$ARCH" >"$T/truncated.json"
expect_fail "retrain: truncated arch.json" 2 "truncated.json" "$T/r3" -- "$BIN" retrain $SYN --arch "$T/truncated.json" --out "$T/r3"
expect_fail "retrain: arch of another space" 2 "levels: arch=3 config=4" "$T/r4" -- "$BIN" retrain $SYN --space.levels 4 --arch "$ARCH" --out "$T/r4"
RT="$BIN retrain $SYN --arch $ARCH --max-steps 40 --checkpoint-every 10 --retrain.dropout 0.2 --retrain.drop-path 0.3 --retrain.label-smoothing 0.1 --retrain.cutout 8"
$RT --out "$T/ra" >"$T/ra.log" 2>&1 || bad "retrain A: $(tail -2 "$T/ra.log")"
{ DSONAS_FAULT=kill-after-step:25 $RT --out "$T/rb" >"$T/rb1.log" 2>&1; rc=$?; } 2>/dev/null
if [ "$rc" -eq 137 ] && [ "$(cat "$T/rb/ckpt/latest")" = step_00000020.h5 ] \
   && $RT --out "$T/rb" --resume >"$T/rb2.log" 2>&1 && grep -q "resumed from .*step_00000020.h5" "$T/rb2.log" \
   && same_model "$T/ra/network.h5" "$T/rb/network.h5" \
   && diff <(grep -o '"loss":[^,]*' "$T/ra/metrics.jsonl") <(grep -o '"loss":[^,]*' "$T/rb/metrics.jsonl") >/dev/null; then
  ok "retrain (dropout, drop-path, label smoothing, cutout): kill -9 at step 25, resume: network.h5 and metrics byte-identical"
else bad "retrain resume: rc=$rc $(tail -2 "$T/rb2.log")"; fi
if "$BIN" retrain $SYN --arch baseline --retrain.target-macs 50000 --max-steps 5 --out "$T/rt" >"$T/rt.log" 2>&1 \
   && grep -q "MACs closest to retrain.target-macs 5e+04" "$T/rt.log"; then
  ok "retrain --arch baseline --retrain.target-macs: $(grep -o 'at width.*parameters' "$T/rt.log")"
else bad "target-macs: $(tail -2 "$T/rt.log")"; fi

echo "e2e: adaptive latency penalty (docs/method.md §5.3)"
LAT="--search.penalty adaptive-latency --search.latency-iters 4 --search.latency-warmup 1 --data.batch 16 --max-steps 100 --search.gamma 0.02 --search.lambda-lr-mult 5"
if "$BIN" search $SYN --space.share true $LAT --out "$T/lat" >"$T/lat.log" 2>&1 \
   && [ "$(grep -c '"event":"latency"' "$T/lat/metrics.jsonl")" -ge 2 ] && grep -q "adaptive latency at step" "$T/lat/log.rank0"; then
  ok "share space: retrain network re-timed every epoch, factors used; $(grep -o 'adaptive latency at step [0-9]*: .*"timed":[0-9]*' "$T/lat.log" | head -1)"
else bad "adaptive latency: $(tail -2 "$T/lat.log")"; fi
expect_fail "adaptive latency on the full space" 2 "adaptive-latency needs the share space" "$T/lat2" -- "$BIN" search $SYN $LAT --out "$T/lat2"

echo "e2e: training on ImageNet HDF5 shards (a tiny JPEG tree made here, dsonas pack)"
"$PY" - "$T/jpeg" <<'EOF'
import os, sys
from PIL import Image
for split, n in (("train", 6), ("val", 2)):
    for c, col in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        d = os.path.join(sys.argv[1], split, "n%03d" % c)
        os.makedirs(d)
        for i in range(n):
            Image.new("RGB", (260 + 8 * i, 240), col).save(os.path.join(d, "i%d.JPEG" % i), quality=90)
EOF
IN="--data.dataset imagenet --data.dir $T/inpk --space.preset tiny --space.input 3x224x224 --space.classes 3 --data.batch 4 --threads 2 --progress false --search.bn-reestimate 8"
if "$BIN" pack --src "$T/jpeg" --out "$T/inpk" --threads 1 >"$T/pack.log" 2>&1 \
   && "$BIN" search $IN --data.split 0.5 --max-steps 6 --out "$T/ins" >"$T/ins.log" 2>&1 \
   && "$BIN" derive --run "$T/ins" --out "$T/ina.json" >/dev/null 2>&1 \
   && "$BIN" retrain $IN --arch "$T/ina.json" --max-steps 4 --out "$T/inr" >"$T/inr.log" 2>&1 \
   && "$BIN" eval --run "$T/inr" >"$T/ine.log" 2>&1 && grep -q "eval (test, 6 images)" "$T/ine.log"; then
  ok "pack → search → derive → retrain → eval on ImageNet shards: $(grep -o 'search done: val acc [0-9.]*' "$T/ins.log"); $(cut -c1-50 "$T/ine.log")"
else bad "ImageNet training: $(tail -n 2 "$T/pack.log" "$T/ins.log" "$T/inr.log" "$T/ine.log" 2>&1 | tr '\n' ' ')"; fi

echo "e2e pipeline: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
