#!/usr/bin/env bash
# End-to-end tests of `dsonas study` on a tiny synthetic config:
#  * an uninterrupted study: the folders, the architectures (found, baseline, random
#    ones within the MAC tolerance), 2 × (1 + 1 + 2) retrains, study.md/json/csv/png;
#  * the same study interrupted twice (SIGUSR1 in the search, kill -9 in a retrain)
#    and re-run: the same report, byte for byte;
#  * the Slurm split: --study.prepare, one --study.task per retrain (any order),
#    --study.report: the same report again; --study.plan lists the tasks;
#  * a task out of range and a task before the plan exist are refused with exit 2.
# usage: tests/e2e/study.sh BUILD_DIR
set -uo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/dsonas
PY=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }

SYN="--data.dataset synthetic --space.preset tiny --data.synthetic-train 256 --data.synthetic-test 64 --data.batch 16 --threads 2 --progress false --log-every 10"
STAGES="--pretrain.max-steps 20 --search.max-steps 60 --search.gamma 0.01 --search.lambda-lr-mult 5 --retrain.max-steps 30 --checkpoint-every 10"
ST="--study.random 2 --study.seeds 2"
STUDY="$BIN study $SYN $STAGES $ST"
same_report() {  # the report files of two studies are identical
  for f in study.md study.json study.csv looks.jsonl plan.json archs/found.json archs/baseline.json archs/random_001.json archs/random_002.json; do
    cmp -s "$1/$f" "$2/$f" || { echo "    differs: $f"; return 1; }
  done
}

echo "e2e: dsonas study (tiny synthetic)"
if $STUDY --out "$T/a" >"$T/a.log" 2>&1; then ok "study ran: $(grep -c '^== study: .* → ' "$T/a.log") stages and retrains"
else bad "study: $(tail -3 "$T/a.log")"; fi
n=$(ls -d "$T"/a/retrain/*/eval_test 2>/dev/null | wc -l)
if [ "$n" -eq 8 ] && [ -s "$T/a/study.png" ] && grep -q "found_s1 took .*; 7 retrains left, ~.* (median retrain so far .*, of 1)" "$T/a.log" \
   && grep -q "random_002_s2 took .*; 0 retrains left$" "$T/a.log" && [ -s "$T/a/r1/search/model.h5" ] && grep -q '"tasks_done": 8' "$T/a/study.json"; then
  ok "8 retrains (found, baseline, 2 random × 2 seeds) evaluated; study.md, study.json, study.csv, study.png; the time left after each"
else bad "study outputs: $n evaluations; $(ls "$T/a")"; fi
if "$PY" - "$T/a" <<'PYEOF'
import json, sys
d = sys.argv[1]
s = json.load(open(d + "/study.json"))
target = s["target_macs"]
arch = {n: json.load(open("%s/archs/%s.json" % (d, n))) for n in ("found", "random_001", "random_002", "baseline")}
for n in ("random_001", "random_002"):
    assert abs(arch[n]["macs"] - target) <= 0.02 * target, (n, arch[n]["macs"], target)
assert arch["found"]["macs"] == target
for r in s["results"]:
    assert r["done"] and r["macs"] == arch[r["arch"]]["macs"], r
for g, n in (("found", 2), ("baseline", 2), ("random", 4)):
    assert s["groups"][g]["n"] == n, (g, s["groups"][g])
md = open(d + "/study.md").read()
assert "found vs random:" in md and "found vs hand-made:" in md
# the settings typed on the command line, as typed, in the report
assert s["command_line"][0] == "--data.dataset synthetic" and s["command_line"][-1] == "--study.seeds 2", s["command_line"]
assert "`--data.dataset synthetic --space.preset tiny" in md and "--study.random 2 --study.seeds 2` on the command line" in md
PYEOF
then ok "random architectures within ±2 % of the found one's MACs; every retrain at its architecture's MACs; groups 2/2/4; the command-line settings reported"
else bad "study contents"; fi

# interrupted twice, re-run: the same report
DSONAS_FAULT=signal-after-step:25 $STUDY --out "$T/b" >"$T/b1.log" 2>&1; rc1=$?
$STUDY --out "$T/b" --study.prepare >"$T/b2.log" 2>&1; rc2=$?
{ DSONAS_FAULT=kill-after-step:25 $STUDY --out "$T/b" >"$T/b3.log" 2>&1; rc3=$?; } 2>/dev/null
$STUDY --out "$T/b" >"$T/b4.log" 2>&1; rc4=$?
if [ "$rc1" -eq 75 ] && [ "$rc2" -eq 0 ] && [ "$rc3" -eq 137 ] && [ "$rc4" -eq 0 ] && grep -q "resuming" "$T/b4.log" \
   && same_report "$T/a" "$T/b"; then
  ok "SIGUSR1 in the search (exit 75), kill -9 in the first retrain, re-run: the same report, byte for byte"
else bad "interrupted study: exits $rc1 $rc2 $rc3 $rc4; $(tail -2 "$T/b4.log")"; fi

# the Slurm split, tasks in another order
ntask=$($STUDY --out "$T/c" --study.plan | wc -l)
ok_tasks=1
$STUDY --out "$T/c" --study.prepare >"$T/c1.log" 2>&1 || ok_tasks=0
for i in $(seq $((ntask - 1)) -1 0); do $STUDY --out "$T/c" --study.task "$i" >>"$T/c2.log" 2>&1 || ok_tasks=0; done
$STUDY --out "$T/c" --study.report >"$T/c3.log" 2>&1 || ok_tasks=0
if [ "$ntask" -eq 8 ] && [ "$ok_tasks" -eq 1 ] && same_report "$T/a" "$T/c"; then
  ok "--study.plan lists 8 tasks; --study.prepare, the tasks in reverse order, --study.report: the same report"
else bad "study split: $ntask tasks, $(tail -2 "$T/c3.log")"; fi

out=$($STUDY --out "$T/a" --study.task 8 2>&1); rc=$?
if [ "$rc" -eq 2 ] && echo "$out" | grep -q "study.task: 8 but the study has 8 tasks"; then ok "task out of range: exit 2"
else bad "task out of range: $rc $out"; fi
out=$($STUDY --out "$T/d" --study.task 0 2>&1); rc=$?
if [ "$rc" -eq 2 ] && echo "$out" | grep -q "plan.json is missing: run --study.prepare first"; then ok "a task before the plan: exit 2"
else bad "task before plan: $rc $out"; fi

echo "e2e study: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
