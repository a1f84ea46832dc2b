#!/usr/bin/env bash
# run_on_gpu.sh — the one script for the GPU machine: CUDA backend tests, the
# GPU benchmark (dsonas bench --device cuda on bench_fmnist and the cifar10
# preset, the PyTorch twin on CUDA beside it, the same dsonas bench on the
# machine's CPU for scale), peak GPU memory, all results under $OUT.
#
# Prepare on the development machine (no GPU needed; ~10 min on 2 cores):
#     bash tests/gpu/make_bundle.sh             # -> build/gpu-bundle/bundle.tar.xz (git-ignored)
#     rm -rf build-*/ or exclude them            # untracked build folders travel and
#                                                # count against the 64 MiB limit
# Then one device call:
#     run(command="bash tests/gpu/run_on_gpu.sh", carry=["build/gpu-bundle"], timeout_s=570)
#
# Without a carried bundle the script tries to build on the machine (make -j16,
# cuDNN/NCCL headers and libraries from the Python wheels); that needs Boost,
# HDF5, OpenBLAS, libjpeg-turbo and GoogleTest headers, which the GPU machine
# lacked when last described (MACHINE.md) — it then says so and stops.
#
# Budget: GPU_BUDGET_S (default 500 s) for the whole script; every step checks
# what is left and is skipped (and says so) when it would not fit.
#
# Files written to $OUT (the device tool returns at most 8 files):
#   run.log          everything printed, with timings per step
#   env.txt          nvidia-smi, driver/CUDA/cuDNN versions, library resolution (ldd)
#   gpu_tests.log    gtest output (+ a DSONAS_CUDA_SYNC=1 rerun of failures)
#   gpu_tests.xml    gtest XML report
#   sanitizer.log    compute-sanitizer memcheck of a subset (if available)
#   bench.jsonl      one JSON line per dsonas bench run (label, device, result)
#   twin_cuda.json   PyTorch twin on CUDA, one JSON line per space
#   summary.json     the above condensed: tests passed/failed/skipped, img/s,
#                    step times, peak memory (dsonas allocator, nvidia-smi, torch)
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/dsonas-gpu.XXXXXX)
exec > >(tee -a "$OUT/run.log") 2>&1
T0=$(date +%s)
BUDGET=${GPU_BUDGET_S:-500}
JOBS=${JOBS:-16}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
step() { echo; echo "=== [$(elapsed)s] $*"; }
# fits SECONDS: true when that many seconds are still left
fits() { [ "$(left)" -ge "$1" ]; }

step "dsonas GPU run in $ROOT, results in $OUT, budget ${BUDGET}s"

# ---- 1. environment: GPU, Python wheels, library paths ---------------------------
PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
{
  echo "# nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "# nvcc"; (command -v nvcc && nvcc --version) 2>&1 || echo "no nvcc on PATH"
  echo "# python: $PY"; "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1
  echo "# uname"; uname -a
} > "$OUT/env.txt" 2>&1
GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${GPU_NAME:-none found by nvidia-smi}"
grep -m2 -E "^torch|^3\." "$OUT/env.txt"

# lib and include folders of the nvidia-* wheels (cuDNN, cuBLAS, NCCL, cudart, …)
"$PY" - > "$TMP/nvdirs" 2>/dev/null <<'EOF'
import os
roots = []
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    pass
libs, incs = set(), set()
for r in roots:
    for dp, dn, fn in os.walk(r):
        b = os.path.basename(dp)
        if b == "lib" and any(".so" in f for f in fn):
            libs.add(dp)
        if b == "include" and any(f.endswith(".h") for f in fn):
            incs.add(dp)
print(":".join(sorted(libs)))
print(":".join(sorted(incs)))
EOF
NV_LIBS=$(sed -n 1p "$TMP/nvdirs")
NV_INCS=$(sed -n 2p "$TMP/nvdirs")
echo "wheel lib folders: ${NV_LIBS:-none found}"
# the carried bundle (tests/gpu/make_bundle.sh): unpack it outside the tree
BUNDLE=$TMP/dsonas-gpu
if [ -f "$ROOT/build/gpu-bundle/bundle.tar.xz" ]; then
  "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$ROOT/build/gpu-bundle/bundle.tar.xz" "$TMP" 2>&1 || tar -C "$TMP" -xJf "$ROOT/build/gpu-bundle/bundle.tar.xz"
fi
SYS_CUDA_LIBS=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib
export LD_LIBRARY_PATH="$BUNDLE/lib:${NV_LIBS}:${SYS_CUDA_LIBS}:${LD_LIBRARY_PATH:-}:$BUNDLE/lib/fallback"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}

# ---- 2. binaries: the carried bundle, else a build on this machine ---------------
BIN=""
if [ -x "$BUNDLE/bin/gpu_tests" ] && [ -x "$BUNDLE/bin/dsonas" ]; then
  BIN=$BUNDLE/bin
  step "using the carried bundle"; head -4 "$BUNDLE/MANIFEST.txt" 2>/dev/null
  # built from these sources? (md5 of src/backend/cuda and tests/gpu at bundle time)
  stale=$(grep -E '^[0-9a-f]{32}  ' "$BUNDLE/MANIFEST.txt" 2>/dev/null | md5sum -c --quiet 2>&1 | head -10)
  if [ -n "$stale" ]; then
    echo "WARNING: the bundle was built from other sources than this tree (rerun tests/gpu/make_bundle.sh):"
    echo "$stale"
  fi
else
  step "no carried bundle: trying to build here with -j$JOBS"
  find_dir() { for d in $(echo "$2" | tr ':' ' ') /usr/include /usr/local/include /usr/local/cuda/include; do [ -f "$d/$1" ] && { echo "$d"; return; }; done; }
  CUDNN_INC=$(find_dir cudnn.h "$NV_INCS"); NCCL_INC=$(find_dir nccl.h "$NV_INCS")
  missing=""
  for h in boost/program_options.hpp hdf5.h cblas.h gtest/gtest.h turbojpeg.h; do
    [ -n "$(find_dir "$h" "")" ] || missing="$missing $h"
  done
  [ -n "$CUDNN_INC" ] || missing="$missing cudnn.h"
  [ -n "$NCCL_INC" ] || missing="$missing nccl.h"
  if [ -n "$missing" ]; then
    echo "cannot build here: missing headers:$missing"
    echo "-> run 'bash tests/gpu/make_bundle.sh' on the development machine and carry build/gpu-bundle"
  else
    # link names (libcudnn.so, …) for the wheels' versioned libraries
    mkdir -p "$TMP/link"
    for l in cudnn nccl cublas cublasLt; do
      f=$(for d in $(echo "$NV_LIBS:$SYS_CUDA_LIBS" | tr ':' ' '); do ls "$d"/lib$l.so* 2>/dev/null; done | head -1)
      [ -n "$f" ] && ln -sf "$f" "$TMP/link/lib$l.so"
    done
    if make -j"$JOBS" BUILD=build-gpu USE_CUDA=1 USE_MPI=0 CUDNN_INC="$CUDNN_INC" NCCL_INC="$NCCL_INC" \
        CUDNN_LIB="$TMP/link" NCCL_LIB="$TMP/link" build-gpu/dsonas build-gpu/tests/gpu_tests > "$TMP/build.log" 2>&1; then
      BIN=$ROOT/build-gpu; mkdir -p "$BIN/tests"; ln -sf "$ROOT/build-gpu/tests/gpu_tests" "$BIN/gpu_tests"
    else
      echo "build failed:"; tail -30 "$TMP/build.log"
    fi
  fi
fi
{
  echo "# LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  [ -n "$BIN" ] && for b in "$BIN/gpu_tests" "$BIN/dsonas"; do echo "# ldd $b"; ldd "$b"; done
} >> "$OUT/env.txt" 2>&1
if [ -z "$BIN" ]; then
  echo '{"ok": false, "error": "no binaries (see run.log)"}' > "$OUT/summary.json"
  exit 2
fi
if ldd "$BIN/gpu_tests" "$BIN/dsonas" | grep -q "not found"; then
  echo "unresolved libraries:"; ldd "$BIN/gpu_tests" "$BIN/dsonas" | grep "not found" | sort -u
fi

# ---- 3. the CUDA backend tests ------------------------------------------------------
TESTS_RC=""
if fits 150; then
  step "gpu_tests (timeout $(( $(left) - 120 ))s)"
  timeout $(( $(left) - 120 )) "$BIN/gpu_tests" --gtest_output="xml:$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
  TESTS_RC=$?
  grep -E "^\[  (PASSED|FAILED|SKIPPED) \]|tests ran" "$OUT/gpu_tests.log" | head -40
  echo "gpu_tests exit $TESTS_RC"
  if [ "$TESTS_RC" != 0 ] && fits 200; then
    failed=$(grep -E "^\[  FAILED  \] [A-Za-z]" "$OUT/gpu_tests.log" | awk '{print $4}' | sed 's/,$//' | sort -u | head -20 | tr '\n' ':')
    if [ -n "$failed" ]; then
      step "rerunning the failures with DSONAS_CUDA_SYNC=1 (synchronize after every kernel)"
      { echo; echo "===== rerun with DSONAS_CUDA_SYNC=1: $failed"; } >> "$OUT/gpu_tests.log"
      DSONAS_CUDA_SYNC=1 timeout 60 "$BIN/gpu_tests" --gtest_filter="$failed" >> "$OUT/gpu_tests.log" 2>&1
    fi
  fi
else
  echo "skipping gpu_tests: not enough time left"
fi

# ---- 4. benchmarks --------------------------------------------------------------------
# bench LABEL TIMEOUT ARGS…: one dsonas bench run; its JSON (with the peak of
# nvidia-smi's memory.used during the run) becomes one line of bench.jsonl.
bench() {
  local label=$1 to=$2; shift 2
  if ! fits $(( to + 30 )); then echo "skipping bench $label: not enough time left"; return; fi
  step "bench $label: dsonas bench $*"
  local smi=$TMP/smi_$label.txt json=$TMP/bench_$label.json
  rm -f "$json"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$smi" 2>/dev/null &
  local smipid=$!
  timeout "$to" "$BIN/dsonas" bench "$@" --bench.json "$json" 2>&1 | tail -80
  local rc=${PIPESTATUS[0]}
  kill "$smipid" 2>/dev/null; wait "$smipid" 2>/dev/null
  local smimax
  smimax=$(sort -n "$smi" 2>/dev/null | tail -1)
  "$PY" - "$label" "$rc" "${smimax:-}" "$json" "$*" >> "$OUT/bench.jsonl" <<'EOF'
import json, sys
label, rc, smi, path, args = sys.argv[1:6]
rec = {"label": label, "exit": int(rc), "args": args, "nvidia_smi_peak_mib": float(smi) if smi.strip() else None}
try:
    rec["result"] = json.load(open(path))
except Exception as e:
    rec["result"] = None
    rec["error"] = str(e)
print(json.dumps(rec))
EOF
  tail -1 "$OUT/bench.jsonl" | cut -c1-400
}

# twin LABEL BENCH_LABEL STEPS: the PyTorch twin on CUDA on the space of that bench run
twin() {
  local label=$1 from=$TMP/bench_$2.json steps=$3
  if [ ! -f "$from" ]; then echo "skipping twin $label: no dsonas result to take the space from"; return; fi
  if ! fits 60; then echo "skipping twin $label: not enough time left"; return; fi
  step "PyTorch twin on CUDA: $label"
  PYTHONUNBUFFERED=1 timeout $(( $(left) - 30 )) "$PY" tests/gpu/twin_cuda.py --space-from "$from" --batch 64 \
    --steps "$steps" --label "$label" --out "$OUT/twin_cuda.json" 2>&1 | tail -5
}

# one line per convolution shape on stderr: which cuDNN algorithm or the GEMM path
export DSONAS_CUDA_VERBOSE=1
bench fmnist_cuda 90 --config jobs/bench_fmnist.cfg --device cuda --threads 16 --bench.steps 20
bench fmnist_cuda_profile 90 --config jobs/bench_fmnist.cfg --device cuda --threads 16 --bench.steps 6 --bench.profile true
twin fmnist_twin_cuda fmnist_cuda 10
# (no --config for cifar10: the file's [space] values would override the preset's)
bench cifar10_cuda 150 --space.preset cifar10 --data.batch 64 --device cuda --threads 16 --recompute none --bench.steps 8
twin cifar10_twin_cuda cifar10_cuda 6
bench cifar10_cuda_recompute 120 --space.preset cifar10 --data.batch 64 --device cuda --threads 16 --recompute blocks --bench.steps 4
bench fmnist_cpu16 90 --config jobs/bench_fmnist.cfg --device cpu --threads 16 --bench.steps 6

# ---- 5. compute-sanitizer on a subset (Firecracker machines; gVisor refuses it) ---------
if command -v compute-sanitizer > /dev/null && fits 120; then
  step "compute-sanitizer memcheck on the primitive tests (timeout $(( $(left) - 60 ))s)"
  timeout $(( $(left) - 60 )) compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/gpu_tests" \
    --gtest_filter='CudaVsCpu.*:Shapes/PoolCuda.*:Relu/BnCuda.*:Shapes/ConvCuda.MatchesCpu/1*-CudaVsCpu.TrainStep*:CudaVsCpu.EvalBatch*' \
    > "$OUT/sanitizer.log" 2>&1
  echo "compute-sanitizer exit $? ($(grep -c "Invalid\|ERROR SUMMARY" "$OUT/sanitizer.log") report lines)"
  grep -m5 "ERROR SUMMARY\|Invalid" "$OUT/sanitizer.log"
else
  echo "skipping compute-sanitizer (not installed or no time left)" | tee "$OUT/sanitizer.log"
fi

# ---- 6. summary ---------------------------------------------------------------------------
step "summary"
"$PY" - "$OUT" "${TESTS_RC:-none}" "$(elapsed)" "${GPU_NAME:-}" > "$OUT/summary.json" <<'EOF'
import json, os, re, sys
out, tests_rc, elapsed, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = {"elapsed_s": elapsed, "gpu": gpu or None, "gpu_tests_exit": tests_rc}
try:
    import xml.etree.ElementTree as ET
    r = ET.parse(os.path.join(out, "gpu_tests.xml")).getroot()
    s["tests"] = {k: int(r.get(k, 0)) for k in ("tests", "failures", "errors", "disabled")}
    skipped = [c.get("classname") + "." + c.get("name") for c in r.iter("testcase") if c.find("skipped") is not None]
    failed = [c.get("classname") + "." + c.get("name") for c in r.iter("testcase") if c.find("failure") is not None]
    s["tests"]["skipped"] = len(skipped)
    s["tests"]["skipped_names"] = skipped[:40]
    s["tests"]["failed_names"] = failed[:40]
except Exception as e:
    s["tests"] = {"error": str(e)}
s["bench"] = {}
for line in open(os.path.join(out, "bench.jsonl")) if os.path.exists(os.path.join(out, "bench.jsonl")) else []:
    rec = json.loads(line)
    r = rec.get("result") or {}
    s["bench"][rec["label"]] = {k: r.get(k) for k in ("img_per_s", "step_ms_median", "w_step_ms_median",
                                                       "lambda_step_ms_median", "peak_tensor_mb", "peak_rss_mb",
                                                       "recompute", "batch")}
    s["bench"][rec["label"]].update({"exit": rec["exit"], "nvidia_smi_peak_mib": rec.get("nvidia_smi_peak_mib")})
s["twin_cuda"] = {}
p = os.path.join(out, "twin_cuda.json")
for line in open(p) if os.path.exists(p) else []:
    rec = json.loads(line)
    s["twin_cuda"][rec["label"]] = {k: rec.get(k) for k in ("ok", "img_per_s", "step_ms_mean_of_medians",
                                                            "w_step_ms_median", "lambda_step_ms_median",
                                                            "peak_cuda_mb", "error")}
for a, b in (("fmnist_cuda", "fmnist_twin_cuda"), ("cifar10_cuda", "cifar10_twin_cuda")):
    d, t = s["bench"].get(a, {}), s["twin_cuda"].get(b, {})
    if d.get("img_per_s") and t.get("img_per_s"):
        s.setdefault("dsonas_over_twin_img_per_s", {})[a] = round(d["img_per_s"] / t["img_per_s"], 3)
print(json.dumps(s, indent=1))
EOF
cat "$OUT/summary.json"
rm -rf "$TMP"
step "done in $(elapsed)s"
exit 0
