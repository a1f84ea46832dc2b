#!/usr/bin/env bash
# End-to-end tests of `dsonas export` (README "Using the found network elsewhere"):
#  * real networks retrained a few steps on Fashion-MNIST: the network of a real (short)
#    search with the auxiliary head, dropout and drop-path on; the hand-made baseline;
#    a variant of the baseline with two blocks reduced to their shortcut (identity and
#    id_conv) and single-branch reductions (tests/e2e/edit_arch.py); and a network with
#    the ImageNet stem on RGB ImageNet shards (dsonas pack of a JPEG tree made here);
#  * each exported as TorchScript and as ONNX (dynamic batch, and a fixed --batch) and
#    run by PyTorch (torch.jit.load) and by OpenCV's DNN module on the images of
#    `dsonas eval --logits`, in a Python process that imports no dsonas code
#    (tests/e2e/export_check.py): the ONNX checker, opset 17, the metadata, the input
#    contract, and the logits equal to dsonas's own within 1e-4;
#  * bad input: missing run folder, a file that is not a network file, a folder without
#    network.h5, bad --format, --batch with pytorch, a missing output folder, a foreign
#    file at --out, a damaged network file, and the tool failing (a Python package
#    missing, the interpreter missing): exit code, one line naming the problem, no
#    output file and no temporary file left.
# Needs Debian's python3-torch, python3-h5py, python3-onnx, python3-opencv and
# dataset-fashion-mnist (`make deps` installs them); fails, saying so, without them.
# usage: tests/e2e/export.sh BUILD_DIR
set -uo pipefail
BUILD=${1:-build}
BIN=$(cd "$BUILD" && pwd)/dsonas
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }
expect_fail() {  # NAME CODE PATTERN OUTFILE -- command...
  local name=$1 code=$2 pat=$3 out=$4; shift 5
  "$@" >"$T/stdout" 2>"$T/stderr"; local rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$name: exit $rc, expected $code ($(head -c 300 "$T/stderr"))"; return; fi
  if [ "$(wc -l <"$T/stderr")" -ne 1 ]; then bad "$name: expected one line on stderr: $(cat "$T/stderr")"; return; fi
  if ! grep -q -- "$pat" "$T/stderr"; then bad "$name: message lacks '$pat': $(cat "$T/stderr")"; return; fi
  if [ -n "$out" ] && [ -e "$out" ]; then bad "$name: $out was created"; return; fi
  if [ -n "$out" ] && ls "$out".tmp* >/dev/null 2>&1; then bad "$name: a temporary file was left: $(ls "$out".tmp*)"; return; fi
  ok "$name  →  $(cat "$T/stderr")"
}

echo "e2e: dsonas export"
if ! "$PY" -c "import torch, h5py, numpy, onnx, cv2" 2>"$T/imp"; then
  bad "Python modules missing ($(tail -1 "$T/imp")): make deps installs python3-torch python3-h5py python3-onnx python3-opencv"
  echo "e2e export: $pass passed, $fail failed"; exit 1
fi
FM=/usr/share/datasets/fashion-mnist
if [ ! -f "$FM/t10k-images-idx3-ubyte.gz" ]; then
  bad "$FM missing: make deps installs dataset-fashion-mnist"
  echo "e2e export: $pass passed, $fail failed"; exit 1
fi

FMN="--config $ROOT/jobs/fmnist_demo.cfg --data.dir $FM --space.stem-channels 8 --space.widths 8,16,32 --threads 2 --progress false --log-every 20"
RT="--max-steps 100"
# a real search (short and with a strong penalty, so that it prunes), derive, retrain
if "$BIN" pretrain $FMN --max-steps 20 --search.bn-reestimate 64 --data.eval-batches 2 --out "$T/pre" >"$T/pre.log" 2>&1 \
   && "$BIN" search $FMN --init "$T/pre" --max-steps 80 --search.gamma 0.02 --search.lambda-lr-mult 5 \
        --search.bn-reestimate 64 --data.eval-batches 2 --out "$T/search" >"$T/search.log" 2>&1 \
   && "$BIN" derive --run "$T/search" --out "$T/found.json" >"$T/derive.log" 2>&1 \
   && "$BIN" retrain $FMN --arch "$T/found.json" $RT --retrain.aux-head true --retrain.dropout 0.2 \
        --retrain.drop-path 0.2 --out "$T/found" >"$T/found.log" 2>&1; then
  ok "Fashion-MNIST: search → derive ($(grep -o 'live ops: [0-9]* ([^)]*) of [0-9]*' "$T/derive.log")) → retrain $RT with aux head, dropout, drop-path"
else bad "found network: $(tail -n 2 "$T/pre.log" "$T/search.log" "$T/derive.log" "$T/found.log" 2>&1 | tr '\n' ' ')"; fi
# what the found network exercises: sums of several inputs, pooling and sep ops, internal ops
if "$PY" - "$T/found.json" "$T/found/network.h5" <<'EOF'
import json, sys, h5py
a = json.load(open(sys.argv[1]))
ops = [o for b in a["blocks"] for o in b["ops"]]
assert any(len(o["inputs"]) >= 2 for o in ops), "no op with several inputs"
assert {o["type"] for o in ops} == {"sep3", "sep5", "max3", "avg3"}, "not every op type"
assert any(not o["output"] for o in ops), "no internal op"
assert "aux" in h5py.File(sys.argv[2], "r")["params"], "no aux head in the network file"
EOF
then ok "the found network has ops with several inputs, every op type, internal ops, and an aux head in its file"
else bad "the found network does not exercise what this test needs (see above)"; fi
if "$BIN" retrain $FMN --arch baseline $RT --out "$T/base" >"$T/base.log" 2>&1; then
  ok "Fashion-MNIST: hand-made baseline retrained ($RT)"
else bad "baseline: $(tail -2 "$T/base.log")"; fi
if "$PY" "$HERE/edit_arch.py" "$T/base/arch.json" "$T/variant.json" --empty s2/u2 --empty s3/u1 \
        --branches s1/red=3x3 --branches s2/red=1x1 \
   && "$BIN" retrain $FMN --arch "$T/variant.json" $RT --retrain.aux-head true --out "$T/variant" >"$T/variant.log" 2>&1 \
   && "$PY" - "$T/variant/arch.json" <<'EOF'
import json, sys
a = json.load(open(sys.argv[1]))
b = {x["name"]: x for x in a["blocks"]}
r = {x["name"]: x["branches"] for x in a["reductions"]}
assert b["s2/u2"]["empty"] and b["s2/u2"]["shortcut"] == "identity" and not b["s2/u2"]["ops"]
assert b["s3/u1"]["empty"] and b["s3/u1"]["shortcut"] == "id_conv" and not b["s3/u1"]["ops"]
assert r == {"s1/red": ["3x3"], "s2/red": ["1x1"]}, r
EOF
  then
  ok "Fashion-MNIST: the baseline with s2/u2 and s3/u1 reduced to their shortcut (identity, id_conv), reductions 3x3 / 1x1 only, aux head"
else bad "variant: $(tail -2 "$T/variant.log")"; fi
# ImageNet stem, RGB, §8.2 normalisation: shards of a JPEG tree made here
"$PY" - "$T/jpeg" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(1)
for split, n in (("train", 6), ("val", 3)):
    for c in range(3):
        d = os.path.join(sys.argv[1], split, "n%03d" % c)
        os.makedirs(d)
        for i in range(n):
            a = rng.integers(0, 256, size=(240, 260 + 8 * i, 3), dtype=np.uint8)
            a[..., c] = np.clip(a[..., c].astype(int) + 80, 0, 255)
            Image.fromarray(a).save(os.path.join(d, "i%d.JPEG" % i), quality=90)
EOF
IN="--data.dataset imagenet --data.dir $T/inpk --space.preset imagenet --space.classes 3 --space.stem-channels 4 --space.units 1,1 --space.widths 4,8 --data.batch 4 --threads 2 --progress false"
if "$BIN" pack --src "$T/jpeg" --out "$T/inpk" --threads 1 >"$T/pack.log" 2>&1 \
   && "$BIN" retrain $IN --arch baseline --max-steps 4 --retrain.aux-head true --out "$T/inet" >"$T/inet.log" 2>&1; then
  ok "ImageNet shards: baseline with the ImageNet stem (3×224×224, 3 classes) retrained 4 steps"
else bad "ImageNet network: $(tail -n 2 "$T/pack.log" "$T/inet.log" | tr '\n' ' ')"; fi

# export each, compare with dsonas eval's logits in PyTorch and OpenCV
for net in found base variant inet; do
  [ -s "$T/$net/network.h5" ] || { bad "$net: no network.h5 to export"; continue; }
  if ! "$BIN" eval --run "$T/$net" --logits "$T/$net.logits.h5" --logits-count 64 --threads 2 >"$T/$net.eval.log" 2>&1; then
    bad "$net: eval --logits: $(tail -1 "$T/$net.eval.log")"; continue
  fi
  if "$BIN" export --run "$T/$net" --format pytorch --out "$T/$net.pt" >"$T/$net.x1" 2>&1 \
     && "$BIN" export --run "$T/$net/network.h5" --format onnx --out "$T/$net.onnx" >"$T/$net.x2" 2>&1 \
     && "$BIN" export --run "$T/$net" --format onnx --batch 3 --out "$T/$net.b3.onnx" >"$T/$net.x3" 2>&1; then
    if (cd / && "$PY" -I "$HERE/export_check.py" "$T/$net.logits.h5" "$T/$net.pt" "$T/$net.onnx" "$T/$net/network.h5" \
          --tol 1e-4 --batch-onnx "$T/$net.b3.onnx" 3) >"$T/$net.check" 2>&1; then
      ok "$net: $(cat "$T/$net.check"); sizes: pt $(stat -c %s "$T/$net.pt"), onnx $(stat -c %s "$T/$net.onnx") bytes"
    else bad "$net: $(tail -3 "$T/$net.check")"; fi
  else bad "$net: export: $(cat "$T/$net.x1" "$T/$net.x2" "$T/$net.x3" | tail -3)"; fi
done
if ls "$T"/*.tmp* >/dev/null 2>&1; then bad "temporary files left: $(ls "$T"/*.tmp*)"; else ok "no temporary file left by the exports"; fi
grep -h "^export:" "$T"/found.x1 "$T"/found.x2 | sed 's/^/    /'

# an earlier export is replaced; a foreign file is not
if "$BIN" export --run "$T/base" --format onnx --out "$T/found.onnx" >/dev/null 2>&1 \
   && "$BIN" export --run "$T/base" --format pytorch --out "$T/found.pt" >/dev/null 2>&1 \
   && (cd / && "$PY" -I "$HERE/export_check.py" "$T/base.logits.h5" "$T/found.pt" "$T/found.onnx" "$T/base/network.h5") >/dev/null 2>&1; then
  ok "exporting onto an earlier export (onnx and pytorch) replaces it"
else bad "re-export onto an earlier export failed"; fi

# bad input
echo "e2e: dsonas export, bad input"
echo "not a network" >"$T/notes.txt"
cp "$T/notes.txt" "$T/keep.onnx"
expect_fail "missing run folder" 2 "export: --run $T/nothing: no such file or folder" "$T/o1.onnx" -- \
  "$BIN" export --run "$T/nothing" --format onnx --out "$T/o1.onnx"
expect_fail "a text file as the network" 3 "notes.txt" "$T/o2.onnx" -- \
  "$BIN" export --run "$T/notes.txt" --format onnx --out "$T/o2.onnx"
expect_fail "a search model file as the network" 3 "not a dsonas network file (format attribute 'dsonas-model'" "$T/o3.pt" -- \
  "$BIN" export --run "$T/search/model.h5" --format pytorch --out "$T/o3.pt"
expect_fail "a run folder without network.h5" 3 "export: --run $T/search holds no network.h5" "$T/o4.onnx" -- \
  "$BIN" export --run "$T/search" --format onnx --out "$T/o4.onnx"
expect_fail "bad --format" 2 "export: --format: 'tflite' (expected onnx or pytorch)" "$T/o5.onnx" -- \
  "$BIN" export --run "$T/base" --format tflite --out "$T/o5.onnx"
expect_fail "no --format" 2 "export: --format is required" "$T/o6.onnx" -- \
  "$BIN" export --run "$T/base" --out "$T/o6.onnx"
expect_fail "--batch with --format pytorch" 2 "export: --batch applies to --format onnx only" "$T/o7.pt" -- \
  "$BIN" export --run "$T/base" --format pytorch --batch 4 --out "$T/o7.pt"
expect_fail "--batch 0" 2 "export: --batch: expected a positive integer (got '0')" "$T/o8.onnx" -- \
  "$BIN" export --run "$T/base" --format onnx --batch 0 --out "$T/o8.onnx"
expect_fail "--out in a missing folder" 2 "export: --out $T/none/o.onnx: folder $T/none does not exist" "$T/none/o.onnx" -- \
  "$BIN" export --run "$T/base" --format onnx --out "$T/none/o.onnx"
expect_fail "--out is a file export did not write" 2 "exists and was not written by dsonas export; refusing to overwrite it" "" -- \
  "$BIN" export --run "$T/base" --format onnx --out "$T/keep.onnx"
if cmp -s "$T/notes.txt" "$T/keep.onnx"; then ok "the foreign file is untouched"; else bad "the foreign file was changed"; fi
"$PY" - "$T/base/network.h5" "$T/damaged.h5" <<'EOF'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[len(b) // 2] ^= 0x10
open(sys.argv[2], "wb").write(bytes(b))
EOF
expect_fail "a damaged network file (one flipped bit)" 3 "damaged.h5.*damaged" "$T/o9.onnx" -- \
  "$BIN" export --run "$T/damaged.h5" --format onnx --out "$T/o9.onnx"
mkdir -p "$T/fakemods"
echo 'raise ImportError("hidden by tests/e2e/export.sh")' >"$T/fakemods/onnx.py"
expect_fail "the tool fails: Python module onnx missing" 1 "export: utils/export_net.py failed (exit 1): needs the Python module 'onnx' (Debian package python3-onnx; \`make deps\` installs it)" "$T/o10.onnx" -- \
  env PYTHONPATH="$T/fakemods" "$BIN" export --run "$T/base" --format onnx --out "$T/o10.onnx"
expect_fail "the tool cannot start: DSONAS_PYTHON missing" 1 "export: cannot start $T/no-python" "$T/o11.pt" -- \
  env DSONAS_PYTHON="$T/no-python" "$BIN" export --run "$T/base" --format pytorch --out "$T/o11.pt"
expect_fail "eval --logits into a missing folder" 2 "--logits: $T/none/l.h5: folder $T/none does not exist" "$T/none/l.h5" -- \
  "$BIN" eval --run "$T/base" --logits "$T/none/l.h5"

echo "e2e export: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
