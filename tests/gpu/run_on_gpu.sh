#!/usr/bin/env bash
# run_on_gpu.sh — the one script for the GPU machine: CUDA backend tests (NCCL
# ones in their own process), an ImageNet-shape and a CIFAR-10 search step with
# the PyTorch twin (eager and torch.compile) beside each, a short Fashion-MNIST
# search, then what time is left for extras; all results under $OUT, written
# as each step ends (a run killed at any point leaves what it had).
#
# Prepare on the development machine (no GPU needed; ~10 min on 2 cores):
#     bash tests/gpu/make_bundle.sh             # -> build/gpu-bundle (git-ignored)
#     bash tests/gpu/run_on_gpu.sh --check-bundle   # the bundle matches this tree?
#     rm -rf build-*/ or exclude them            # untracked build folders travel and
#                                                # count against the 64 MiB limit
# Then one device call (DSONAS_HEAD: the output of `git rev-parse HEAD` here,
# pasted, for a device copy of the tree without .git):
#     run(command="DSONAS_HEAD=<commit> bash tests/gpu/run_on_gpu.sh",
#         carry=["build/gpu-bundle"], timeout_s=480)
# Dry run here (no GPU: every GPU step fails fast or skips, saying so; the CPU
# timing steps are skipped):
#     DSONAS_GPU_BIN=build OUT=/tmp/x bash tests/gpu/run_on_gpu.sh
#
# The bundle must come from this tree's sources: a bundle built at another
# commit, or from sources that differ from this tree's, is refused before any
# GPU work (tests/gpu/bundle_stamp.sh), with the command that rebuilds it.
#
# Budget: GPU_BUDGET_S (default 420 s; a first run must end within 480 s, so
# that a second try fits the 15 minutes of device time with the machine's
# start).  The time plan printed first lists every step's cap: the required
# steps' caps add up to at most the budget, and each extra runs only when its
# cap still fits the time left.  A step never outlives its cap (timeout).
#
# Libraries: the bundle's own (lib/, lib/fallback/) and the wheels' cuDNN,
# cuBLAS, NCCL go on LD_LIBRARY_PATH only on the command lines of the bundle's
# binaries (dsonas, gpu_tests, loader_bench); Python/PyTorch and
# compute-sanitizer keep the machine's own libraries.
#
# Exit: 0 the run went through its plan (test failures are results, in
# summary.json); 2 refused (stale or missing bundle, no binaries, a cuDNN older
# than the headers).
#
# Files written to $OUT (the device tool returns at most 8 files):
#   run.log          everything printed, with the plan and each step's time
#   env.txt          nvidia-smi, driver/CUDA/cuDNN versions, library resolution (ldd)
#   gpu_tests.log    gtest output: the tests, then the NCCL process, then reruns
#                    with DSONAS_CUDA_SYNC=1 and compute-sanitizer if they ran
#   gpu_tests.xml    gtest XML report of the tests (not the NCCL process)
#   bench.jsonl      one JSON line per dsonas bench run (label, args, result)
#   twin_cuda.json   PyTorch twin on CUDA, one JSON line per run
#   extra.jsonl      the short fmnist searches, the loader benchmark
#   summary.json     rewritten after every step: plan, steps (status, seconds),
#                    library versions (cuDNN/cuBLAS/NCCL/CUDA headers vs loaded,
#                    driver), tests (NCCL separately), img/s, ratios to the twin
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
BUNDLE_DIR=${BUNDLE_DIR:-$ROOT/build/gpu-bundle}
if [ "${1:-}" = "--check-bundle" ]; then
  exec bash "$ROOT/tests/gpu/bundle_stamp.sh" check "$BUNDLE_DIR/MANIFEST.txt"
fi
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/dsonas-gpu.XXXXXX)
: > "$TMP/steps.jsonl"
exec > >(tee -a "$OUT/run.log") 2>&1
T0=$(date +%s)
BUDGET=${GPU_BUDGET_S:-420}
FIRST_RUN_LIMIT=480
JOBS=${JOBS:-16}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
say() { echo; echo "=== [$(elapsed)s] $*"; }

# ---- the time plan ----------------------------------------------------------------------
# name  cap_s  required  what
PLAN='
setup                     20 1 GPU and library facts, the bundle checked and unpacked, library versions
gpu_tests                 90 1 CUDA backend tests without the NCCL ones (one process)
nccl_tests                25 1 NCCL tests in their own process (NCCL_SOCKET_IFNAME=lo)
bench_imagenet            60 1 dsonas bench: ImageNet-shape search step (C=28, 224x224, batch 64), 3 timed steps
twin_imagenet             35 1 PyTorch twin of it, eager, same GPU
bench_cifar10             35 1 dsonas bench: CIFAR-10 search step (C=48, batch 64), 6 timed steps
twin_cifar10              25 1 PyTorch twin, eager
twin_cifar10_compiled     75 1 PyTorch twin, torch.compile (compilation not timed, but inside the cap)
fmnist_search             45 1 Fashion-MNIST: pretrain 200 steps, then search 300 steps (fp32)
rerun_failures            40 0 failed gpu_tests again with DSONAS_CUDA_SYNC=1
bench_cifar10_tf32        30 0 dsonas bench CIFAR-10 --gpu-math tf32
bench_cifar10_bf16        30 0 dsonas bench CIFAR-10 --gpu-math bf16
twin_cifar10_tf32         25 0 PyTorch twin with TF32
bench_fmnist              30 0 dsonas bench jobs/bench_fmnist.cfg
twin_fmnist               25 0 PyTorch twin of it, eager
twin_imagenet_compiled    70 0 PyTorch ImageNet twin, torch.compile
bench_imagenet_recompute  50 0 ImageNet step with --recompute blocks (peak memory)
bench_imagenet_bf16       45 0 ImageNet step --gpu-math bf16
fmnist_search_tf32        30 0 the fmnist search under --gpu-math tf32
fmnist_search_bf16        30 0 the fmnist search under --gpu-math bf16
loader_bench              60 0 JPEG loader on the machine cores (workers per GPU); not in a dry run
compute_sanitizer         90 0 compute-sanitizer memcheck of the primitive tests
bench_fmnist_profile      30 0 dsonas bench fmnist with the per-primitive profile
bench_cpu16               40 0 dsonas bench fmnist on 16 CPU cores, for scale; not in a dry run
'
cap() { awk -v n="$1" '$1 == n {print $2}' <<< "$PLAN"; }
what() { awk -v n="$1" '$1 == n {$1 = $2 = $3 = ""; sub(/^ +/, ""); print}' <<< "$PLAN"; }
REQUIRED_S=$(awk 'NF && $3 == 1 {s += $2} END {print s}' <<< "$PLAN")
EXTRA_S=$(awk 'NF && $3 == 0 {s += $2} END {print s}' <<< "$PLAN")

say "dsonas GPU run in $ROOT, results in $OUT"
echo "time plan: budget ${BUDGET}s (GPU_BUDGET_S; a first run must end within ${FIRST_RUN_LIMIT}s)"
printf '  %-26s %6s %8s  %s\n' step cap_s until_s what
awk -v B="$BUDGET" 'NF && $3 == 1 {c += $2; w = $0; sub(/^[^ ]+ +[0-9]+ +[01] +/, "", w);
    printf "  %-26s %6d %8d  %s\n", $1, $2, c, w}' <<< "$PLAN"
echo "  -- extras, in this order, each only when its cap fits the time left --"
awk 'NF && $3 == 0 {w = $0; sub(/^[^ ]+ +[0-9]+ +[01] +/, "", w); printf "  %-26s %6d %8s  %s\n", $1, $2, "", w}' <<< "$PLAN"
echo "required steps: ${REQUIRED_S}s of the ${BUDGET}s budget; extras: up to ${EXTRA_S}s more, run in the $(( BUDGET - REQUIRED_S ))s the required steps leave at their caps (more when they end early)"
[ "$REQUIRED_S" -le "$BUDGET" ] || echo "WARNING: the required steps' caps exceed the budget: the last ones may be skipped"
[ "$BUDGET" -le "$FIRST_RUN_LIMIT" ] || echo "WARNING: GPU_BUDGET_S=${BUDGET} exceeds the ${FIRST_RUN_LIMIT}s a first run may take"

# ---- step bookkeeping: every step ends with a line in steps.jsonl and a new summary.json --
STEP="" STEP_T=0
jstr() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g' | tr -d '\n\r')"; }
record() {  # NAME STATUS EXIT WALL_S NOTE
  printf '{"step": %s, "status": %s, "exit": %s, "wall_s": %s, "cap_s": %s, "at_s": %s, "note": %s}\n' \
    "$(jstr "$1")" "$(jstr "$2")" "${3:-null}" "${4:-0}" "$(cap "$1" || echo null)" "$(elapsed)" "$(jstr "${5:-}")" \
    >> "$TMP/steps.jsonl"
}
# start NAME: true when the step's cap fits the time left (else it is recorded as skipped)
start() {
  local c; c=$(cap "$1")
  if [ "$(left)" -lt "$c" ]; then
    echo "--- [$(elapsed)s] skipping $1: needs ${c}s, $(left)s left"
    record "$1" skipped null 0 "needs ${c}s, $(left)s left"
    write_summary
    return 1
  fi
  STEP=$1 STEP_T=$(date +%s)
  say "$1 (cap ${c}s): $(what "$1")"
  return 0
}
# finish RC [NOTE]: the step's status from its exit code (124/137: hit its cap)
finish() {
  local rc=$1 st=ok
  case "$rc" in 0) st=ok ;; 124|137) st=timeout ;; *) st=failed ;; esac
  record "$STEP" "$st" "$rc" $(( $(date +%s) - STEP_T )) "${2:-}"
  echo "--- [$(elapsed)s] $STEP: $st (exit $rc, $(( $(date +%s) - STEP_T ))s)"
  write_summary
}
skip() {  # NAME REASON
  echo "--- [$(elapsed)s] skipping $1: $2"
  record "$1" skipped null 0 "$2"
  write_summary
}

PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
GPU_NAME="" DRY=0 REFUSED=""
cat > "$TMP/summary.py" <<'EOF'
import json, os, re, sys
out, tmp, elapsed, budget, gpu, dry, refused, plan = sys.argv[1:9]
s = {"ok": not refused, "error": refused or None, "elapsed_s": int(elapsed), "budget_s": int(budget),
     "dry_run": dry == "1", "gpu": gpu or None}
if gpu:
    parts = [p.strip() for p in gpu.split(",")]
    if len(parts) >= 3:
        s["driver"] = parts[2]
# what Python (the twin, PyTorch) sees: the machine's own libraries, never the bundle's
s["python_ld_library_path"] = os.environ.get("LD_LIBRARY_PATH")
s["plan"] = [{"step": l.split()[0], "cap_s": int(l.split()[1]), "required": l.split()[2] == "1"}
             for l in plan.splitlines() if l.strip()]
s["steps"] = [json.loads(l) for l in open(os.path.join(tmp, "steps.jsonl")) if l.strip()]
try:
    s["versions"] = json.load(open(os.path.join(tmp, "versions.json")))
except Exception as e:
    s["versions"] = {"error": "not recorded (" + type(e).__name__ + ")"}

def sections(path):
    """gpu_tests.log split at its '===== ' marker lines: {title: [lines]}"""
    sec, cur = {"tests": []}, "tests"
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            if line.startswith("===== "):
                cur = line[6:].strip()
                sec[cur] = []
            else:
                sec[cur].append(line.rstrip("\n"))
    return sec

def tests_from(xml_path, lines):
    r = {}
    try:
        import xml.etree.ElementTree as ET
        root = ET.parse(xml_path).getroot()
        cases = list(root.iter("testcase"))
        r = {"source": "xml", "tests": len(cases),
             "failed_names": [c.get("classname") + "." + c.get("name") for c in cases if c.find("failure") is not None],
             "skipped_names": [c.get("classname") + "." + c.get("name") for c in cases if c.find("skipped") is not None]}
    except Exception:
        # no XML (the process was killed at its cap, or crashed): the log's per-test lines
        res, running = {}, None
        for l in lines:
            m = re.match(r"^\[ RUN      \] (\S+)$", l)
            if m:
                running = m.group(1)
            m = re.match(r"^\[\s+(OK|FAILED|SKIPPED)\s+\] (\S+) \(\d+ ms\)$", l)
            if m:
                res[m.group(2)] = m.group(1)
                running = None
        r = {"source": "log", "tests": len(res),
             "failed_names": [k for k, v in res.items() if v == "FAILED"],
             "skipped_names": [k for k, v in res.items() if v == "SKIPPED"]}
        if running:
            r["unfinished"] = running
    r["failed"] = len(r["failed_names"])
    r["skipped"] = len(r["skipped_names"])
    r["passed"] = r["tests"] - r["failed"] - r["skipped"]
    r["failed_names"] = r["failed_names"][:40]
    r["skipped_names"] = r["skipped_names"][:40]
    return r

sec = sections(os.path.join(out, "gpu_tests.log"))
if sec["tests"]:
    s["tests"] = tests_from(os.path.join(out, "gpu_tests.xml"), sec["tests"])
for title, lines in sec.items():
    if title.startswith("NCCL tests"):
        s["nccl_tests"] = tests_from(os.path.join(tmp, "nccl.xml"), lines)
s["bench"] = {}
p = os.path.join(out, "bench.jsonl")
for line in open(p) if os.path.exists(p) else []:
    rec = json.loads(line)
    r = rec.get("result") or {}
    b = {k: r.get(k) for k in ("img_per_s", "step_ms_median", "w_step_ms_median", "lambda_step_ms_median",
                               "peak_tensor_mb", "peak_rss_mb", "recompute", "batch", "gpu_math")}
    b.update({"exit": rec["exit"], "nvidia_smi_peak_mib": rec.get("nvidia_smi_peak_mib")})
    s["bench"][rec["label"]] = b
s["twin_cuda"] = {}
p = os.path.join(out, "twin_cuda.json")
for line in open(p) if os.path.exists(p) else []:
    rec = json.loads(line)
    s["twin_cuda"][rec["label"]] = {k: rec.get(k) for k in ("ok", "math", "compiled", "img_per_s",
                                                            "step_ms_mean_of_medians", "w_step_ms_median",
                                                            "lambda_step_ms_median", "peak_cuda_mb", "warmup_s",
                                                            "error")}
# dsonas img/s over the twin's, same space, batch and GPU (issue 6 target: >= 1.5 over eager)
pairs = (("bench_fmnist", "twin_fmnist"), ("bench_cifar10", "twin_cifar10"), ("bench_imagenet", "twin_imagenet"),
         ("bench_cifar10", "twin_cifar10_compiled"), ("bench_imagenet", "twin_imagenet_compiled"),
         ("bench_cifar10_tf32", "twin_cifar10_tf32"))
for a, b in pairs:
    d, t = s["bench"].get(a, {}), s["twin_cuda"].get(b, {})
    if d.get("img_per_s") and t.get("img_per_s"):
        s.setdefault("dsonas_over_twin_img_per_s", {})[a + " / " + b] = round(d["img_per_s"] / t["img_per_s"], 3)
for a, base in (("bench_cifar10_tf32", "bench_cifar10"), ("bench_cifar10_bf16", "bench_cifar10"),
                ("bench_imagenet_bf16", "bench_imagenet")):
    x, y = s["bench"].get(a, {}).get("img_per_s"), s["bench"].get(base, {}).get("img_per_s")
    if x and y:
        s.setdefault("speedup_over_fp32", {})[a] = round(x / y, 3)
p = os.path.join(out, "extra.jsonl")
for line in open(p) if os.path.exists(p) else []:
    rec = json.loads(line)
    if rec.get("label") == "loader_bench":
        s["loader"] = {k: rec.get(k) for k in ("cores", "train_img_s", "train_img_per_cpu_s", "eval_img_s_1worker",
                                                "decode_only_img_per_cpu_s")}
        per = (rec.get("train_img_per_cpu_s") or {}).get("1")
        gpu_ips = s["bench"].get("bench_imagenet", {}).get("img_per_s")
        if per and gpu_ips:
            import math
            s["loader"]["workers_to_feed_imagenet_step"] = {
                "gpu_img_per_s": gpu_ips, "per_worker_img_per_s": per,
                "workers": round(gpu_ips / per, 2), "with_30pct_headroom": math.ceil(1.3 * gpu_ips / per)}
    elif rec.get("label", "").startswith("fmnist_search_"):
        last = rec.get("last") or {}
        s.setdefault("fmnist_search_by_math", {})[rec["gpu_math"]] = {
            "wall_s": rec.get("wall_s"), "error": rec.get("error"),
            **{k: last.get(k) for k in ("step", "val_acc", "test_acc", "zero_lambda", "live_ops", "live_macs")}}
tmpf = os.path.join(out, "summary.json.tmp")
with open(tmpf, "w") as f:
    json.dump(s, f, indent=1)
os.replace(tmpf, os.path.join(out, "summary.json"))
EOF
write_summary() {
  "$PY" "$TMP/summary.py" "$OUT" "$TMP" "$(elapsed)" "$BUDGET" "$GPU_NAME" "$DRY" "$REFUSED" "$PLAN" \
    || echo "(summary.json not rewritten: the summary script failed)"
}
# refuse MESSAGE: the run stops before any GPU work, exit 2
refuse() {
  REFUSED=$1
  record setup refused 2 $(( $(date +%s) - STEP_T )) "$1"
  write_summary
  echo "run_on_gpu: REFUSED: $1"
  rm -rf "$TMP"
  exit 2
}

# ---- setup: environment, bundle, binaries, library versions ------------------------------
STEP=setup STEP_T=$(date +%s)
say "setup (cap $(cap setup)s): $(what setup)"
{
  echo "# nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi failed"
  echo "# nvcc"; (command -v nvcc && nvcc --version) 2>&1 || echo "no nvcc on PATH"
  echo "# python: $PY"; timeout 40 "$PY" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' 2>&1
  echo "# uname"; uname -a
  echo "# LD_LIBRARY_PATH of the script (unchanged by it): ${LD_LIBRARY_PATH-<unset>}"
} > "$OUT/env.txt" 2>&1
GPU_NAME=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null | head -1)
echo "GPU: ${GPU_NAME:-none found by nvidia-smi}"
if [ -z "$GPU_NAME" ]; then
  DRY=1
  echo "no GPU: a dry run (GPU steps fail fast or skip, saying so; CPU timing steps are skipped)"
fi
grep -m2 -E "^torch|^3\." "$OUT/env.txt"

# lib and include folders of the nvidia-* wheels (cuDNN, cuBLAS, NCCL, cudart, …)
timeout 20 "$PY" - > "$TMP/nvdirs" 2>/dev/null <<'EOF'
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
echo "wheel lib folders: ${NV_LIBS:-none found}"
SYS_CUDA_LIBS=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib
BUNDLE=$TMP/dsonas-gpu
BIN=""
if [ -n "${DSONAS_GPU_BIN:-}" ]; then
  # binaries given, e.g. a dry run on the development machine
  BIN=$TMP/bin; mkdir -p "$BIN"
  for b in dsonas gpu_tests loader_bench; do
    for f in "$DSONAS_GPU_BIN/$b" "$DSONAS_GPU_BIN/tests/$b"; do
      [ -x "$f" ] && { ln -sf "$(cd "$(dirname "$f")" && pwd)/$b" "$BIN/$b"; break; }
    done
  done
  echo "using the binaries of $DSONAS_GPU_BIN (no bundle check)"
else
  # the carried bundle (tests/gpu/make_bundle.sh): checked against this tree first
  if [ ! -f "$BUNDLE_DIR/bundle.tar.xz" ]; then
    refuse "no GPU bundle at $BUNDLE_DIR (carry build/gpu-bundle); build it with:  bash tests/gpu/make_bundle.sh"
  fi
  if ! bash "$ROOT/tests/gpu/bundle_stamp.sh" check "$BUNDLE_DIR/MANIFEST.txt"; then
    refuse "the bundle in $BUNDLE_DIR was built from other sources than this tree (above); rebuild it with:  bash tests/gpu/make_bundle.sh"
  fi
  timeout 60 "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' \
      "$BUNDLE_DIR/bundle.tar.xz" "$TMP" 2>&1 || timeout 60 tar -C "$TMP" -xJf "$BUNDLE_DIR/bundle.tar.xz"
  [ -x "$BUNDLE/bin/gpu_tests" ] && [ -x "$BUNDLE/bin/dsonas" ] && BIN=$BUNDLE/bin
  [ -n "$BIN" ] || refuse "the bundle $BUNDLE_DIR/bundle.tar.xz holds no bin/dsonas and bin/gpu_tests; rebuild it with:  bash tests/gpu/make_bundle.sh"
  head -4 "$BUNDLE/MANIFEST.txt" 2>/dev/null
fi
[ -x "$BIN/gpu_tests" ] && [ -x "$BIN/dsonas" ] || refuse "no dsonas and gpu_tests binaries in ${DSONAS_GPU_BIN:-the bundle}"
# only these binaries' command lines get the bundle's and the wheels' libraries
# (no empty element: an empty one would put the current folder on the path)
DSO_LIBPATH=$(printf '%s' "$BUNDLE/lib:${NV_LIBS}:${SYS_CUDA_LIBS}:${LD_LIBRARY_PATH:-}:$BUNDLE/lib/fallback" |
              tr -s ':' | sed 's/^://; s/:$//')
LIBS=(env "LD_LIBRARY_PATH=$DSO_LIBPATH")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-16}
{
  echo "# LD_LIBRARY_PATH on the dsonas / gpu_tests / loader_bench command lines: $DSO_LIBPATH"
  for b in "$BIN/gpu_tests" "$BIN/dsonas"; do echo "# ldd $b"; "${LIBS[@]}" ldd "$b"; done
} >> "$OUT/env.txt" 2>&1
if "${LIBS[@]}" ldd "$BIN/gpu_tests" "$BIN/dsonas" | grep -q "not found"; then
  echo "unresolved libraries:"; "${LIBS[@]}" ldd "$BIN/gpu_tests" "$BIN/dsonas" | grep "not found" | sort -u
fi
# library versions: built against (headers) vs loaded, the driver; a cuDNN
# older than the headers' major version stops the run here
DSONAS_VERSIONS_JSON="$TMP/versions.json" timeout 20 "${LIBS[@]}" "$BIN/gpu_tests" \
  --gtest_filter='CudnnStatus.*:CudnnVersion.*:CudaLibraries.*' > "$TMP/versions.log" 2>&1
vrc=$?
grep -E "^\[ VERSIONS \]|FAILED|cuDNN" "$TMP/versions.log" | head -8
{ echo "# library versions (gpu_tests CudaLibraries.*, exit $vrc)"; cat "$TMP/versions.json" 2>/dev/null; } >> "$OUT/env.txt"
if [ "$vrc" != 0 ] && grep -q '"verdict": "refuse"' "$TMP/versions.json" 2>/dev/null; then
  refuse "$(sed -n 's/.*"line": "\([^"]*\)".*/\1/p' "$TMP/versions.json" | head -1)"
fi
finish "$vrc" "library versions recorded"

# ---- the CUDA backend tests: everything but NCCL, then NCCL in its own process ------------------
FAILED_TESTS=""
if start gpu_tests; then
  timeout "$(cap gpu_tests)" "${LIBS[@]}" "$BIN/gpu_tests" --gtest_filter='-*Nccl*:CudnnStatus.*:CudnnVersion.*:CudaLibraries.*' \
    --gtest_output="xml:$OUT/gpu_tests.xml" > "$OUT/gpu_tests.log" 2>&1
  rc=$?
  grep -E "^\[  (PASSED  |FAILED  |SKIPPED )\] [0-9]|tests ran" "$OUT/gpu_tests.log" | head -5
  grep -E "^\[  FAILED  \] [A-Za-z]" "$OUT/gpu_tests.log" | head -20
  FAILED_TESTS=$(grep -E "^\[  FAILED  \] [A-Za-z].* \([0-9]+ ms\)$" "$OUT/gpu_tests.log" | awk '{print $4}' | sort -u | head -20 | tr '\n' ':')
  finish "$rc"
fi
# NCCL bootstraps over sockets: on a machine without a network it may hang, so
# it runs alone, on loopback, with a short cap, after the other tests
if start nccl_tests; then
  echo "===== NCCL tests (own process, NCCL_SOCKET_IFNAME=lo)" >> "$OUT/gpu_tests.log"
  timeout "$(cap nccl_tests)" env NCCL_SOCKET_IFNAME=lo NCCL_DEBUG=WARN "${LIBS[@]}" "$BIN/gpu_tests" \
    --gtest_filter='*Nccl*' --gtest_output="xml:$TMP/nccl.xml" >> "$OUT/gpu_tests.log" 2>&1
  rc=$?
  sed -n '/^===== NCCL tests/,$p' "$OUT/gpu_tests.log" | grep -E "^\[  (PASSED  |FAILED  |SKIPPED )\] [0-9]|^\[  (FAILED  |SKIPPED )\] .*\([0-9]+ ms\)$|NCCL WARN" | head -8
  finish "$rc"
fi

# ---- benchmarks -------------------------------------------------------------------------------------
# bench NAME ARGS…: one dsonas bench run, capped; its JSON (with the peak of
# nvidia-smi's memory.used during the run) becomes one line of bench.jsonl
bench() {
  local name=$1; shift
  start "$name" || return 0
  local smi=$TMP/smi_$name.txt json=$TMP/$name.json smipid=""
  rm -f "$json"
  if [ "$DRY" = 0 ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$smi" 2>/dev/null &
    smipid=$!
  fi
  echo "dsonas bench $*"
  timeout "$(cap "$name")" "${LIBS[@]}" "$BIN/dsonas" bench "$@" --bench.json "$json" 2>&1 | tail -40
  local rc=${PIPESTATUS[0]}
  [ -n "$smipid" ] && { kill "$smipid" 2>/dev/null; wait "$smipid" 2>/dev/null; }
  local smimax
  smimax=$(sort -n "$smi" 2>/dev/null | tail -1)
  "$PY" - "$name" "$rc" "${smimax:-}" "$json" "$*" >> "$OUT/bench.jsonl" <<'EOF'
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
  tail -1 "$OUT/bench.jsonl" | cut -c1-300
  finish "$rc"
}

# twin NAME FROM_BENCH STEPS [twin_cuda.py options…]: the PyTorch twin on CUDA on
# the space of that bench run (the machine's own Python and libraries)
twin() {
  local name=$1 src=$2 from=$TMP/$2.json steps=$3
  shift 3
  if [ ! -f "$from" ]; then skip "$name" "no dsonas result of $src to take the space from"; return 0; fi
  start "$name" || return 0
  PYTHONUNBUFFERED=1 timeout "$(cap "$name")" "$PY" tests/gpu/twin_cuda.py --space-from "$from" --batch 64 \
    --steps "$steps" --label "$name" --out "$OUT/twin_cuda.json" "$@" 2>&1 | tail -3 | cut -c1-300
  finish "${PIPESTATUS[0]}"
}

# fmnist_search NAME MATH: the search stage of jobs/fmnist_demo.cfg (300 steps)
# from one fp32 pretrain (200 steps); its last metrics line goes to extra.jsonl
FM=""
for d in "$BUNDLE_DIR/fashion-mnist" /usr/share/datasets/fashion-mnist; do
  [ -f "$d/train-images-idx3-ubyte.gz" ] && { FM=$d; break; }
done
FMARGS="--config jobs/fmnist_demo.cfg --device cuda --threads 16 --data.dir $FM --progress false"
fmnist_search() {
  local name=$1 m=$2
  if [ -z "$FM" ]; then skip "$name" "no Fashion-MNIST files (make_bundle.sh copies them)"; return 0; fi
  start "$name" || return 0
  local t1 rc=0
  t1=$(date +%s)
  if [ ! -f "$TMP/fm_pre/model.h5" ]; then
    timeout $(( $(cap "$name") / 2 )) "${LIBS[@]}" "$BIN/dsonas" pretrain $FMARGS --out "$TMP/fm_pre" 2>&1 | tail -2
    rc=${PIPESTATUS[0]}
  fi
  local rest=$(( $(cap "$name") - ($(date +%s) - t1) ))
  [ "$rest" -ge 1 ] || rc=124  # (timeout 0 would mean no limit)
  if [ "$rc" = 0 ]; then
    timeout "$rest" "${LIBS[@]}" "$BIN/dsonas" search $FMARGS --gpu-math "$m" \
      --max-steps 300 --init "$TMP/fm_pre" --out "$TMP/fm_$m" 2>&1 | tail -2
    rc=${PIPESTATUS[0]}
  fi
  "$PY" - "$m" "$TMP/fm_$m/metrics.jsonl" "$(( $(date +%s) - t1 ))" "$rc" >> "$OUT/extra.jsonl" <<'EOF'
import json, sys
m, path, secs, rc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = {"label": "fmnist_search_" + m, "gpu_math": m, "wall_s": secs, "exit": rc}
try:
    lines = [json.loads(l) for l in open(path) if l.strip()]
    rec["last"] = lines[-1] if lines else None
except Exception as e:
    rec["error"] = str(e)
print(json.dumps(rec))
EOF
  tail -1 "$OUT/extra.jsonl" | cut -c1-300
  finish "$rc"
}

# one line per convolution shape on stderr: which cuDNN algorithm or the GEMM path
export DSONAS_CUDA_VERBOSE=1
# (no --config for the presets: a file's [space] values would override them)
CIFAR="--space.preset cifar10 --data.batch 64 --device cuda --threads 16"
IMNET="--space.preset imagenet --data.batch 64 --device cuda --threads 16"
FMB="--config jobs/bench_fmnist.cfg --device cuda --threads 16"

# required steps, in priority order
bench bench_imagenet $IMNET --recompute none --bench.steps 3
twin twin_imagenet bench_imagenet 4
bench bench_cifar10 $CIFAR --recompute none --bench.steps 6
twin twin_cifar10 bench_cifar10 6
twin twin_cifar10_compiled bench_cifar10 6 --compile
fmnist_search fmnist_search fp32

# extras, while time is left
if [ -n "$FAILED_TESTS" ] && [ "$DRY" = 0 ]; then
  if start rerun_failures; then
    { echo; echo "===== rerun with DSONAS_CUDA_SYNC=1: $FAILED_TESTS"; } >> "$OUT/gpu_tests.log"
    timeout "$(cap rerun_failures)" env DSONAS_CUDA_SYNC=1 "${LIBS[@]}" "$BIN/gpu_tests" --gtest_filter="$FAILED_TESTS" \
      >> "$OUT/gpu_tests.log" 2>&1
    finish $?
  fi
else
  skip rerun_failures "$([ -n "$FAILED_TESTS" ] && echo "a dry run" || echo "no failed test")"
fi
bench bench_cifar10_tf32 $CIFAR --recompute none --bench.steps 6 --gpu-math tf32
bench bench_cifar10_bf16 $CIFAR --recompute none --bench.steps 6 --gpu-math bf16
twin twin_cifar10_tf32 bench_cifar10 6 --math tf32
bench bench_fmnist $FMB --bench.steps 20
twin twin_fmnist bench_fmnist 10
twin twin_imagenet_compiled bench_imagenet 4 --compile
bench bench_imagenet_recompute $IMNET --recompute blocks --bench.steps 3
bench bench_imagenet_bf16 $IMNET --recompute none --bench.steps 3 --gpu-math bf16
fmnist_search fmnist_search_tf32 tf32
fmnist_search fmnist_search_bf16 bf16

# the loader on this machine's cores: how many keep the GPU fed (a CPU timing: not in a dry run)
if [ "$DRY" = 1 ]; then
  skip loader_bench "a dry run: no CPU timings on the development machine"
elif [ ! -x "$BIN/loader_bench" ]; then
  skip loader_bench "no loader_bench in the bundle"
elif start loader_bench; then
  timeout "$(cap loader_bench)" "${LIBS[@]}" "$BIN/loader_bench" --images 256 --workers 1,4,8,16 --runs 3 \
    --json "$TMP/loader.json" 2>&1 | tail -3
  rc=${PIPESTATUS[0]}
  [ -s "$TMP/loader.json" ] && "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); r["label"]="loader_bench"; print(json.dumps(r))' \
      "$TMP/loader.json" >> "$OUT/extra.jsonl"
  finish "$rc"
fi

# compute-sanitizer on a subset (the machine's own libraries for the tool; the
# bundle's reach gpu_tests through env, a child the tool follows)
if ! command -v compute-sanitizer > /dev/null; then
  skip compute_sanitizer "compute-sanitizer not installed"
elif [ "$DRY" = 1 ]; then
  skip compute_sanitizer "a dry run"
elif start compute_sanitizer; then
  { echo; echo "===== compute-sanitizer memcheck"; } >> "$OUT/gpu_tests.log"
  timeout "$(cap compute_sanitizer)" compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    "${LIBS[@]}" "$BIN/gpu_tests" \
    --gtest_filter='CudaVsCpu.*:Shapes/PoolCuda.*:Relu/BnCuda.*:Shapes/ConvCuda.MatchesCpu/1*-CudaVsCpu.TrainStep*:CudaVsCpu.EvalBatch*:*Nccl*' \
    > "$TMP/sanitizer.log" 2>&1
  rc=$?
  echo "compute-sanitizer exit $rc ($(grep -c "Invalid\|ERROR SUMMARY" "$TMP/sanitizer.log") report lines)"
  grep -m5 "ERROR SUMMARY\|Invalid" "$TMP/sanitizer.log"
  tail -c 200000 "$TMP/sanitizer.log" >> "$OUT/gpu_tests.log"
  finish "$rc"
fi

bench bench_fmnist_profile $FMB --bench.steps 6 --bench.profile true
# the dsonas CPU backend on 16 cores, for scale (a CPU timing: not in a dry run)
if [ "$DRY" = 1 ]; then
  skip bench_cpu16 "a dry run: no CPU timings on the development machine"
else
  bench bench_cpu16 --config jobs/bench_fmnist.cfg --device cpu --threads 16 --bench.steps 6
fi

say "done in $(elapsed)s of the ${BUDGET}s budget"
write_summary
"$PY" - "$OUT/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
cnt = lambda t: {k: (t or {}).get(k) for k in ("passed", "failed", "skipped", "failed_names", "unfinished")}
print("summary:", json.dumps({"gpu": s.get("gpu"), "tests": cnt(s.get("tests")), "nccl_tests": cnt(s.get("nccl_tests")),
                              "steps": {x["step"]: x["status"] for x in s.get("steps", [])},
                              "dsonas_over_twin_img_per_s": s.get("dsonas_over_twin_img_per_s")}))
EOF
rm -rf "$TMP"
exit 0
