#!/usr/bin/env bash
# End-to-end tests of data-parallel runs under `mpirun -np 2` (CPU, MPI):
#  * 2 ranks × batch B against 1 rank × batch 2B over 60 steps: losses and λ
#    agree within the stated tolerance (BN statistics are per rank, so the two
#    are not the same computation; tests/mpi/test_dist.cpp checks the exact
#    equivalence with per-rank BN bit for bit); λ byte-identical on both ranks;
#  * kill -9 of both ranks, resume: byte-identical to the uninterrupted 2-rank run;
#  * one rank killed mid-run: the job ends non-zero within 60 s;
#  * a NaN injected on rank 1 is caught before the reduction (exit 4, rank named);
#  * resume with another world size: refused (exit 3) unless --allow-world-size-change,
#    which re-shards from the epoch's sample counter and rescales the step counter;
#    the λ trajectory keeps every record across such changes and later resumes.
# usage: tests/e2e/mpi.sh BUILD_DIR      (MPIRUN overrides the launcher; KEEP_T=DIR
#        runs in DIR and keeps it, for debugging)
set -uo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/dsonas
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
MPIRUN=${MPIRUN:-OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none}
T=${KEEP_T:-$(mktemp -d)}
[ -n "${KEEP_T:-}" ] || trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }
mpi2() { env OMP_NUM_THREADS=1 bash -c "$MPIRUN -np 2 $*"; }
# mpirun may return while a rank it signalled is still exiting; a new run on the
# same folder would then (rightly) find the run lock held
wait_gone() {
  local pid; pid=$(cut -d' ' -f1 "$1/run.lock" 2>/dev/null) || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}
same_model() { "$PY" "$HERE/same_model.py" "$1" "$2"; }

echo "e2e: data-parallel search on 2 MPI ranks (tiny synthetic)"
SYN="--data.dataset synthetic --space.preset tiny --data.synthetic-train 2048 --data.synthetic-test 64 --threads 1 --progress false --log-every 10"

# 1. 2 ranks × 32 vs 1 rank × 64
"$BIN" search $SYN --max-steps 60 --data.batch 64 --out "$T/one" >"$T/one.log" 2>&1 || bad "1 rank × 64: $(tail -2 "$T/one.log")"
if mpi2 "$BIN" search $SYN --max-steps 60 --data.batch 32 --out "$T/two" >"$T/two.log" 2>&1; then
  ok "2 ranks × batch 32 ran 60 steps (global batch 64)"
else bad "2 ranks × 32: $(tail -3 "$T/two.log")"; fi
if "$PY" - "$T/one" "$T/two" <<'EOF'
import json, sys
import h5py, numpy as np
def losses(d):
    return [json.loads(l)["loss"] for l in open(d + "/metrics.jsonl") if '"loss"' in l and "final" not in l]
def lam(d):
    out = []
    h5py.File(d + "/model.h5", "r")["lambda"].visititems(lambda n, o: out.append(o[()]) if isinstance(o, h5py.Dataset) else None)
    return np.concatenate(out)
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b) == 6, (len(a), len(b))
rel = max(abs(x - y) / x for x, y in zip(a, b))
dl = float(np.abs(lam(sys.argv[1]) - lam(sys.argv[2])).max())
print("    loss windows: max relative difference %.4f (tolerance 0.10); λ max |difference| %.4f (tolerance 0.10)" % (rel, dl))
sys.exit(0 if rel <= 0.10 and dl <= 0.10 else 1)
EOF
then ok "2 ranks × B matches 1 rank × 2B within tolerance over 60 steps"
else bad "2 ranks × B vs 1 rank × 2B outside tolerance"; fi
h0=$(grep -o "λ hash [0-9a-f]*" "$T/two/log.rank0"); h1=$(grep -o "λ hash [0-9a-f]*" "$T/two/log.rank1")
if [ -n "$h0" ] && [ "$h0" = "$h1" ] && [ -s "$T/two/log.rank1" ] && [ ! -e "$T/two/metrics.rank1" ]; then
  ok "λ byte-identical on both ranks at the end ($h0); per-rank logs log.rank0/1"
else bad "λ hashes: rank 0 '$h0', rank 1 '$h1'"; fi
if grep -q '"ranks":2' "$T/two/metrics.jsonl" && grep -q '"reduce_share"' "$T/two/metrics.jsonl"; then
  ok "metrics name the ranks and the reduction's share of step time"
else bad "metrics lack ranks/reduce_share"; fi

# 2. kill -9 of both ranks after step 35, resume: byte-identical
RES="$BIN search $SYN --max-steps 60 --data.batch 32 --checkpoint-every 10 --search.gamma 0.02 --search.lambda-lr-mult 5"
mpi2 $RES --out "$T/ra" >"$T/ra.log" 2>&1 || bad "uninterrupted 2-rank run: $(tail -2 "$T/ra.log")"
DSONAS_FAULT=kill-after-step:35 mpi2 $RES --out "$T/rb" >"$T/rb1.log" 2>&1; rc=$?
if [ "$rc" -ne 0 ] && [ "$(cat "$T/rb/ckpt/latest" 2>/dev/null)" = step_00000030.h5 ]; then
  ok "kill -9 of both ranks after step 35: exit $rc, latest = step 30"
else bad "2-rank kill run: rc=$rc, ckpt: $(ls "$T/rb/ckpt" 2>&1)"; fi
wait_gone "$T/rb"
[ -e "$T/rb/run.lock" ] && ok "the killed run left its lock behind; its process is gone, so the lock is stale"
cp -r "$T/rb" "$T/wc"  # for the world-size tests below
if mpi2 $RES --out "$T/rb" --resume >"$T/rb2.log" 2>&1 && grep -q "resumed from .*step_00000030.h5" "$T/rb2.log" \
   && same_model "$T/ra/model.h5" "$T/rb/model.h5" && same_model "$T/ra/ckpt/step_00000060.h5" "$T/rb/ckpt/step_00000060.h5" \
   && diff <(grep -o '"loss":[^,]*' "$T/ra/metrics.jsonl") <(grep -o '"loss":[^,]*' "$T/rb/metrics.jsonl") >/dev/null; then
  ok "2-rank resume after kill -9: model, final checkpoint and metrics byte-identical to the uninterrupted run"
else bad "2-rank resume: $(tail -3 "$T/rb2.log")"; fi

# 3. one rank killed mid-run: the other must not hang
start=$(date +%s)
DSONAS_FAULT=kill-after-step:20@1 timeout 120 bash -c "OMP_NUM_THREADS=1 $MPIRUN -np 2 $BIN search $SYN --data.batch 32 --max-steps 100000 --out $T/rk" >"$T/rk.log" 2>&1; rc=$?
secs=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$secs" -le 60 ] && grep -q "step 20/" "$T/rk.log"; then
  ok "rank 1 killed with SIGKILL at step 20: job exited $rc after ${secs} s (no hang)"
else bad "killed rank: rc=$rc after ${secs} s"; fi

# 4. NaN on rank 1, caught before the reduction
DSONAS_FAULT=nan-grad:5@1 mpi2 "$BIN" search $SYN --max-steps 60 --data.batch 32 --out "$T/nan" >"$T/nan.log" 2>&1; rc=$?
if [ "$rc" -eq 4 ] && grep -q "dsonas: rank 1: step 5: non-finite .* on rank 1 (found before the reduction)" "$T/nan.log" \
   && [ ! -e "$T/nan/model.h5" ]; then
  ok "NaN on rank 1 at step 5: exit 4, $(grep -o 'non-finite [^(]*' "$T/nan.log" | head -1)"
else bad "NaN injection: rc=$rc $(grep dsonas: "$T/nan.log" | head -2)"; fi

# 5. world size change on resume
"$BIN" search $SYN --data.batch 32 --checkpoint-every 10 --max-steps 80 --out "$T/wc" --resume >"$T/w1.log" 2>&1; rc=$?
if [ "$rc" -eq 3 ] && grep -q "world_size: checkpoint=2 now=1" "$T/w1.log"; then
  ok "resume of a 2-rank checkpoint on 1 rank refused: $(grep -o 'world_size: [^(]*' "$T/w1.log")"
else bad "world-size change not refused: rc=$rc $(tail -2 "$T/w1.log")"; fi
"$BIN" search $SYN --data.batch 32 --checkpoint-every 10 --max-steps 80 --out "$T/wc" --resume --allow-world-size-change >"$T/w2.log" 2>&1; rc=$?
if [ "$rc" -eq 0 ] && grep -q "world size changed from 2 to 1 ranks" "$T/w2.log" && grep -q "search stopped after 80 steps" "$T/w2.log" \
   && grep -q "step counter rescaled for the new global batch: 30 steps of 64 -> 60 steps of 32" "$T/w2.log"; then
  ok "--allow-world-size-change: resumed on 1 rank with a warning, step 30 of 64 -> 60 of 32, ran to step 80"
else bad "--allow-world-size-change: rc=$rc $(tail -2 "$T/w2.log")"; fi
# the W loader continues from its epoch's sample counter, not from a batch
# boundary of the new sharding: 1 rank's step-70 checkpoint has taken 3 W
# batches of 32 of epoch 1 (96 samples); on 2 ranks the epoch goes on at
# offset 96 (a position-only state would have had to skip to sample 128)
mkdir -p "$T/wd/ckpt"; cp "$T/wc/ckpt/step_00000070.h5" "$T/wd/ckpt/"; echo step_00000070.h5 >"$T/wd/ckpt/latest"
mpi2 "$BIN" search $SYN --data.batch 32 --checkpoint-every 2 --max-steps 40 --out "$T/wd" --resume --allow-world-size-change >"$T/w3.log" 2>&1; rc=$?
st=$("$PY" - "$T/wd/ckpt/step_00000038.h5" <<'EOF'
import sys, h5py
a = h5py.File(sys.argv[1], "r")["state"].attrs
print("w_epoch %d w_position %d w_offset %d" % (a["w_epoch"], a["w_position"], a["w_offset"]))
EOF
)
if [ "$rc" -eq 0 ] && grep -q "70 steps of 32 -> 36 steps of 64" "$T/w3.log" && [ "$st" = "w_epoch 1 w_position 1 w_offset 96" ]; then
  ok "1 rank -> 2 ranks mid-epoch: step 70 of 32 -> 36 of 64, W loader at sample 96 + 1 batch ($st)"
else bad "1 -> 2 ranks re-shard: rc=$rc state '$st' $(grep -o 'step counter rescaled.*' "$T/w3.log")"; fi

# the λ trajectory across world changes: the 2 -> 1 run above (records at steps 10, 20,
# 30 of 2 ranks, 70, 80 of 1 rank) resumed from its step-70 checkpoint on 2 ranks
# (70 of 32 -> 36 of 64), killed after step 45 and resumed again (no change) to 60.
# Resume keeps the checkpoint's count of records, not those with step <= its step
# (which would drop the record at step 70); /images grows by the global batch per step.
# Retention (--keep-last 3) and resume's fallback must see one numbering: at the change
# the 1-rank checkpoints move to ckpt/world1_until_step70/ (step 70 itself after the
# first 2-rank checkpoint), and metrics.jsonl keeps the lines the checkpoint counted.
cp -r "$T/wc" "$T/we"; rm "$T/we/ckpt/step_00000080.h5"; echo step_00000070.h5 >"$T/we/ckpt/latest"
cp "$T/we/metrics.jsonl" "$T/we_metrics_before"
TW="$BIN search $SYN --data.batch 32 --checkpoint-every 10 --keep-last 3 --max-steps 60"
DSONAS_FAULT=kill-after-step:45 mpi2 $TW --out "$T/we" --resume --allow-world-size-change >"$T/we1.log" 2>&1; rc1=$?
wait_gone "$T/we"
mpi2 $TW --out "$T/we" --resume >"$T/we2.log" 2>&1; rc2=$?
if [ "$rc1" -ne 0 ] && grep -q "70 steps of 32 -> 36 steps of 64" "$T/we1.log" && [ "$rc2" -eq 0 ] \
   && grep -q "resumed from .*step_00000040.h5" "$T/we2.log" && grep -q "moved .* into .*world1_until_step70" "$T/we1.log" \
   && "$PY" - "$T/we" "$T/we_metrics_before" <<'EOF'
import os, sys, json, h5py, numpy as np
d, before = sys.argv[1], sys.argv[2]
ck = sorted(f for f in os.listdir(d + "/ckpt") if f.endswith(".h5"))
assert ck == ["step_00000040.h5", "step_00000050.h5", "step_00000060.h5"], ck
# the 1-rank run had checkpoints 70 (resumed from) and 80 (removed above); the 2-rank
# ones before it were set aside by the 2 -> 1 change of the earlier test
aside = sorted(os.listdir(d + "/ckpt/world1_until_step70"))
assert aside == ["step_00000070.h5"], aside
aside2 = sorted(os.listdir(d + "/ckpt/world2_until_step30"))
assert aside2 == ["step_00000010.h5", "step_00000020.h5", "step_00000030.h5"], aside2
with h5py.File(d + "/ckpt/world1_until_step70/step_00000070.h5", "r") as f:
    c70 = dict(f["state"].attrs)
pre = [l for l in open(before).read().splitlines()[: c70["metrics_lines"]] if '"event":"final"' not in l]
now = open(d + "/metrics.jsonl").read().splitlines()
assert now[: len(pre)] == pre, "metrics lines of the runs before the change were not kept"
assert sum('"event":"final"' in l for l in now) == 1
with h5py.File(d + "/lambda_trajectory.h5", "r") as f:
    step, images = list(f["step"][()]), f["images"][()]
    n = {k: f[k].shape[0] for k in ("loss", "acc", "live_macs", "zero_lambda", "live_edges")}
    f["lambda"].visititems(lambda k, o: n.update({k: o.shape[0]}) if isinstance(o, h5py.Dataset) else None)
with h5py.File(d + "/ckpt/step_00000040.h5", "r") as f:
    c40 = dict(f["state"].attrs)
with h5py.File(d + "/ckpt/step_00000060.h5", "r") as f:
    c60 = dict(f["state"].attrs)
# steps in the numbering of their time: 2 ranks (global batch 64) to 30, 1 rank (32)
# 30 -> 60 .. 70, 2 ranks (64) 70 -> 36 .. 60
assert step == [10, 20, 30, 70, 40, 50, 60], step
want = np.cumsum([10 * 64, 10 * 64, 10 * 64, (70 - 60) * 32, (40 - 36) * 64, 10 * 64, 10 * 64])
assert list(images) == list(want), (list(images), list(want))
assert (np.diff(images) > 0).all()
assert set(n.values()) == {7}, n
assert (c40["traj_records"], c40["images_seen"]) == (5, want[4]), c40
assert (c60["traj_records"], c60["images_seen"]) == (7, want[6]), c60
assert c60["metrics_lines"] == len(now), (c60["metrics_lines"], len(now))
print("    /step %s, /images %s; ckpt %s; %d metrics lines (%d from before the change)" % (step, list(images), ck, len(now), len(pre)))
EOF
then ok "2 -> 1 -> 2 ranks and a further kill + resume: every trajectory record and metrics line kept, /images += global batch per step, old-numbered checkpoints set aside"
else bad "trajectory across world changes: rc=$rc1/$rc2 $(tail -2 "$T/we2.log")"; fi

# retrain: the same re-shard and rescale (2 ranks -> 1)
RT="$BIN retrain $SYN --arch baseline --retrain.target-macs 50000 --data.batch 32 --checkpoint-every 10 --max-steps 30"
DSONAS_FAULT=kill-after-step:15 mpi2 $RT --out "$T/rw" >"$T/rw1.log" 2>&1
wait_gone "$T/rw"
ws2=$("$PY" -c 'import h5py,sys; print(h5py.File(sys.argv[1],"r").attrs["world_size"])' "$T/rw/ckpt/step_00000010.h5" 2>&1)
if $RT --out "$T/rw" --resume --allow-world-size-change >"$T/rw2.log" 2>&1 \
   && grep -q "step counter rescaled for the new global batch: 10 steps of 64 -> 20 steps of 32" "$T/rw2.log" \
   && grep -q "retrain done" "$T/rw2.log" && [ "$ws2" = 2 ] && [ -f "$T/rw/ckpt/world2_until_step10/step_00000010.h5" ] \
   && [ "$("$PY" -c 'import h5py,sys; print(h5py.File(sys.argv[1],"r").attrs["world_size"])' "$T/rw/ckpt/step_00000030.h5")" = 1 ]; then
  ok "retrain resumed from 2 ranks on 1: step 10 of 64 -> 20 of 32, finished; world_size attributes 2 then 1, the 2-rank checkpoint set aside"
else bad "retrain world-size change: world_size attribute '$ws2'; $(ls -R "$T/rw/ckpt" | tr '\n' ' '); $(tail -2 "$T/rw2.log")"; fi

echo "e2e mpi: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
