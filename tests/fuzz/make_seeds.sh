#!/usr/bin/env bash
# make_seeds.sh — the seed inputs of every fuzz harness, made from real files: the
# job configurations, architectures and HDF5 files written by real (tiny) runs of
# dsonas, a real ImageNet pack of generated JPEGs, IDX and CIFAR files in the real
# formats.  The campaigns (tests/fuzz/run.sh) start from these; what they keep is
# merged into tests/fuzz/corpus/<harness>.
#   bash tests/fuzz/make_seeds.sh BUILD_DIR OUT_DIR
set -euo pipefail
BUILD=${1:-build}
OUT=${2:?usage: make_seeds.sh BUILD_DIR OUT_DIR}
BIN=$(cd "$BUILD" && pwd)/dsonas
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$OUT"/{config,arch_json,space_json,manifest,idx,cifar,jpeg,h5_inspect,h5_shard}

# config: every job file as a config file (byte 0 even), and command lines (odd)
i=0
for f in "$ROOT"/jobs/*.cfg; do
  { printf '\0\0'; cat "$f"; } >"$OUT/config/job_$(basename "$f" .cfg)"
done
printf '\1\1--space.preset\ntiny\n--data.dataset\nsynthetic\n--data.batch\n8\n--max-steps\n5\n--out\n/tmp/x' >"$OUT/config/argv_search"
printf '\1\2--arch\nbaseline\n--retrain.lr\n0.1\n--dropout\n0.2\n--out\n/tmp/x\n--space.widths\n4,8' >"$OUT/config/argv_retrain"
printf '\1\5--config\n/nonexistent\n--space.ops\nsep3,max3\n--space.units\n1,1' >"$OUT/config/argv_pipeline"

# tiny runs: model, checkpoint, trajectory; derive → arch.json; retrain → network files
SYN=(--data.dataset synthetic --space.preset tiny --space.levels 2 --space.ops sep3,max3 --space.units 1,1 --space.widths 2,4 --space.stem-channels 2 --data.batch 8 --data.synthetic-train 64 --data.synthetic-test 16 --threads 1)
"$BIN" search "${SYN[@]}" --max-steps 20 --checkpoint-every 10 --out "$T/s" >/dev/null
"$BIN" derive --run "$T/s" --out "$T/arch.json" >/dev/null
"$BIN" retrain "${SYN[@]}" --arch "$T/arch.json" --max-steps 4 --checkpoint-every 2 --out "$T/r" >/dev/null
"$BIN" retrain "${SYN[@]}" --arch baseline --max-steps 2 --retrain.drop-path 0.2 --retrain.label-smoothing 0.1 --out "$T/rb" >/dev/null
cp "$T/s/model.h5" "$OUT/h5_inspect/model.h5"
cp "$T/s/ckpt/step_00000010.h5" "$OUT/h5_inspect/checkpoint.h5"
cp "$T/s/lambda_trajectory.h5" "$OUT/h5_inspect/trajectory.h5"
cp "$T/r/network.h5" "$OUT/h5_inspect/network.h5"
cp "$T/r/ckpt/$(cat "$T/r/ckpt/latest")" "$OUT/h5_inspect/network_checkpoint.h5"
cp "$T/rb/network.h5" "$OUT/h5_inspect/network_baseline.h5"

# architecture JSON: the tiny run's, and the ones kept with the results
cp "$T/arch.json" "$OUT/arch_json/tiny.json"
n=0
for f in "$ROOT"/docs/results/*/arch.json "$ROOT"/docs/results/*/*/arch.json; do
  [ -f "$f" ] && cp "$f" "$OUT/arch_json/result_$((n++)).json"
done

# the space attribute of a model file, and of every preset
"$PY" - "$T/s/model.h5" "$OUT/space_json" <<'EOF'
import h5py, sys
with h5py.File(sys.argv[1], "r") as f:
    s = f.attrs["space"]
    open(sys.argv[2] + "/tiny.json", "wb").write(s if isinstance(s, bytes) else s.encode())
EOF
for p in fmnist cifar10 imagenet; do
  "$BIN" inspect "$T/s/model.h5" >/dev/null  # (the binary works)
  "$BIN" search --space.preset "$p" --help >/dev/null 2>&1 || true
done
"$PY" - "$OUT/space_json" <<'EOF'
import sys
for name, s in {
    "fmnist": '{"preset":"fmnist","levels":4,"ops":["sep3","sep5","max3","avg3"],"input":[1,28,28],"classes":10,"stem":"conv3","stem_channels":16,"normal_units":[2,2,2],"widths":[16,32,64],"share":false,"total_lambda":748}',
    "imagenet_share": '{"preset":"imagenet","levels":4,"ops":["sep3","sep5","max3","avg3"],"input":[3,224,224],"classes":1000,"stem":"imagenet2x","stem_channels":28,"normal_units":[4,4,4,4],"widths":[28,56,112,224],"share":true,"total_lambda":128}',
}.items():
    open(f"{sys.argv[1]}/{name}.json", "w").write(s)
EOF

# IDX: 2 length bytes (little-endian), the image file, the label file; raw and gzipped
"$PY" "$ROOT/tests/e2e/make_idx.py" "$T/idx" good
"$PY" - "$T/idx" "$OUT/idx" <<'EOF'
import gzip, struct, sys
d, out = sys.argv[1], sys.argv[2]
im = gzip.open(d + "/t10k-images-idx3-ubyte.gz").read()
lb = gzip.open(d + "/t10k-labels-idx1-ubyte.gz").read()
n = 3  # keep the seeds small: 3 images
im = struct.pack(">IIII", 0x803, n, 28, 28) + im[16:16 + n * 784]
lb = struct.pack(">II", 0x801, n) + lb[8:8 + n]
for name, a, b in (("raw", im, lb), ("gz", gzip.compress(im, 9, mtime=0), gzip.compress(lb, 9, mtime=0))):
    open(f"{out}/{name}", "wb").write(struct.pack("<H", len(a)) + a + b)
EOF

# CIFAR-10 binary: 3 records (label byte + 3072 pixels)
"$PY" - "$OUT/cifar/test_batch_3" <<'EOF'
import random, sys
r = random.Random(3)
open(sys.argv[1], "wb").write(b"".join(bytes([k]) + bytes(r.randrange(256) for _ in range(3072)) for k in (0, 9, 4)))
EOF

# JPEG (byte 0: training or evaluation pipeline): baseline, progressive, grey, 4:4:4,
# a tall and a wide image, a 1×1 image
"$PY" - "$OUT/jpeg" "$T/jpg" <<'EOF'
import io, os, random, sys
from PIL import Image
out, src = sys.argv[1], sys.argv[2]
r = random.Random(5)
def img(w, h, mode="RGB"):
    im = Image.new(mode, (w, h))
    im.putdata([tuple(r.randrange(256) for _ in range(len(mode))) if len(mode) > 1 else r.randrange(256) for _ in range(w * h)])
    return im
cases = [("rgb", img(40, 30), {}), ("progressive", img(33, 17), {"progressive": True}),
         ("grey", img(24, 24, "L"), {}), ("444", img(20, 12), {"subsampling": 0}),
         ("tall", img(8, 70), {}), ("wide", img(90, 6), {"quality": 30}), ("one", img(1, 1), {})]
os.makedirs(src + "/train/n001", exist_ok=True)
os.makedirs(src + "/train/n002", exist_ok=True)
for k, (name, im, kw) in enumerate(cases):
    b = io.BytesIO()
    im.save(b, "JPEG", **kw)
    open(f"{out}/{name}", "wb").write(bytes([k % 2]) + b.getvalue())
    im.save(f"{src}/train/n00{1 + k % 2}/{name}.JPEG", "JPEG", **kw)
EOF

# ImageNet pack of those JPEGs: one train shard and its manifest
"$BIN" pack --src "$T/jpg" --out "$T/pack" --splits train --shard-size 16 --threads 1 >/dev/null
cp "$T/pack/manifest.json" "$OUT/manifest/tiny_pack.json"
# fuzz_h5_shard's input: the manifest with @BYTES@/@CRC@ for the shard's size and whole-file CRC
# (its jpeg_offset, jpeg_bytes and meta_crc32 as packed), 0, the shard
"$PY" - "$T/pack" "$OUT/h5_shard/tiny_pack" <<'EOF'
import json, sys
d, out = sys.argv[1], sys.argv[2]
m = open(d + "/manifest.json").read()
e = json.loads(m)["splits"]["train"]["shards"][0]
m = m.replace('"bytes": %d' % e["bytes"], '"bytes": @BYTES@').replace('"crc32": "%s"' % e["crc32"], '"crc32": "@CRC@"', 1)
open(out, "wb").write(m.encode() + b"\0" + open(d + "/train-00000.h5", "rb").read())
EOF
echo "make_seeds: $(find "$OUT" -type f | wc -l) seed files in $OUT"
