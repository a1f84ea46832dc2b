#!/usr/bin/env bash
# test_device_script.sh — the GPU run script and the GPU choice, dry-run on
# this machine (no GPU; a USE_CUDA=1 build: dsonas and tests/gpu_tests):
#   * DSONAS_GPU_BIN=BUILD bash tests/gpu/run_on_gpu.sh ends with exit 0, prints
#     the time plan (required steps within the budget, the budget within the
#     480 s of a first run) and writes summary.json: every step of the plan
#     once, the library versions (headers vs loaded), the host tests passed and
#     the device tests skipped, the NCCL tests from their own process;
#   * the bundle's libraries reach only the binaries: LD_LIBRARY_PATH is never
#     exported, Python sees the caller's value unchanged;
#   * dsonas --device cuda chooses its GPU before MPI_Init from the launcher's
#     node-local rank: a bad value is refused (exit 2, one line naming it).
# usage: bash tests/gpu/test_device_script.sh BUILD_DIR
set -uo pipefail
BUILD=$(cd "${1:-build}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }
if [ ! -x "$BUILD/tests/gpu_tests" ] || [ ! -x "$BUILD/dsonas" ]; then
  echo "test_device_script: SKIPPED: $BUILD has no tests/gpu_tests or dsonas (a USE_CUDA=1 build is needed)"
  exit 0
fi

echo "run_on_gpu.sh dry run (DSONAS_GPU_BIN=$BUILD)"
MARK=/nonexistent/caller-ld-path
t0=$(date +%s)
env LD_LIBRARY_PATH=$MARK DSONAS_GPU_BIN="$BUILD" OUT="$T/out" OMP_NUM_THREADS=2 bash "$ROOT/tests/gpu/run_on_gpu.sh" \
  > "$T/log" 2>&1
rc=$?
secs=$(( $(date +%s) - t0 ))
[ "$rc" -eq 0 ] && ok "exit 0 in ${secs}s" || bad "exit $rc: $(tail -20 "$T/log")"
grep -q "^time plan: budget 420s" "$T/log" && ok "prints the time plan" || bad "no time plan: $(head -5 "$T/log")"
req=$(sed -n 's/^required steps: \([0-9]*\)s of the \([0-9]*\)s budget.*/\1 \2/p' "$T/log")
if [ -n "$req" ] && [ "${req% *}" -le "${req#* }" ] && [ "${req#* }" -le 480 ]; then
  ok "required steps ${req% *}s within the ${req#* }s budget (<= 480s)"
else
  bad "plan totals: '$req'"
fi
grep -q "^=== \[[0-9]*s\] done in" "$T/log" && ok "ran to its end" || bad "no 'done' line"

"$PY" - "$T/out/summary.json" "$MARK" "$T/log" > "$T/py" 2>&1 <<'EOF'
import json, re, sys
s = json.load(open(sys.argv[1]))
mark, log = sys.argv[2], open(sys.argv[3]).read()
def check(cond, msg):
    print(("ok " if cond else "BAD ") + msg)
check(s["ok"] is True and s["dry_run"] is True, "summary: ok, a dry run")
plan = [p["step"] for p in s["plan"]]
steps = [x["step"] for x in s["steps"]]
check(sorted(steps) == sorted(plan), "summary: every step of the plan recorded once (%d)" % len(plan))
check(all(x["status"] in ("ok", "failed", "skipped", "timeout") for x in s["steps"]), "summary: step statuses known")
check(sum(p["cap_s"] for p in s["plan"] if p["required"]) <= s["budget_s"] <= 480, "summary: required caps within budget")
v = s.get("versions", {})
check(v.get("cudnn", {}).get("header", 0) >= 90000 and v["cudnn"].get("library", 0) > 0 and v["cudnn"]["verdict"] != "refuse"
      and v.get("cublas", {}).get("library", 0) > 0 and v.get("nccl", {}).get("library", 0) > 0
      and "driver_cuda_version" in v, "summary: cuDNN/cuBLAS/NCCL versions (header and library) and the driver recorded")
t = s.get("tests", {})
check(t.get("passed", 0) >= 30 and t.get("failed") == 0 and t.get("skipped", 0) >= 70,
      "summary: host tests passed, device tests skipped (%s passed, %s skipped, %s failed)" % (t.get("passed"), t.get("skipped"), t.get("failed")))
n = s.get("nccl_tests", {})
check(n.get("tests", 0) >= 2 and n.get("failed") == 0, "summary: the NCCL tests ran in their own process (%s)" % n.get("tests"))
main = open(sys.argv[1].replace("summary.json", "gpu_tests.log")).read().split("===== NCCL tests")[0]
check(not re.search(r"^\[ RUN      \] \S*Nccl", main, re.M) and "NCCL tests (own process, NCCL_SOCKET_IFNAME=lo)" in open(sys.argv[1].replace("summary.json", "gpu_tests.log")).read(),
      "gpu_tests.log: no NCCL test in the main process; the NCCL section follows it")
check(s.get("python_ld_library_path") == mark, "Python sees the caller's LD_LIBRARY_PATH unchanged (%r)" % s.get("python_ld_library_path"))
env = open(sys.argv[1].replace("summary.json", "env.txt")).read()
check("# LD_LIBRARY_PATH on the dsonas / gpu_tests / loader_bench command lines: " in env and "::" not in
      env.split("command lines: ")[1].split("\n")[0], "env.txt: the binaries' library path, without an empty element")
bench = [json.loads(l) for l in open(sys.argv[1].replace("summary.json", "bench.jsonl"))]
check(len(bench) >= 3 and all(b["exit"] == 2 for b in bench), "bench.jsonl: one line per bench step, each refused for lack of a GPU")
check(all(x["status"] == "skipped" for x in s["steps"] if x["step"] in ("loader_bench", "bench_cpu16")), "no CPU timing in a dry run")
EOF
while read -r verdict msg; do
  if [ "$verdict" = ok ]; then ok "$msg"; else bad "$verdict $msg"; fi
done < "$T/py"
if grep -nE '^[^#]*export +LD_LIBRARY_PATH|^[^#]*\bLD_LIBRARY_PATH=[^ ]* *$' "$ROOT/tests/gpu/run_on_gpu.sh" | grep -v 'LIBS=(env'; then
  bad "run_on_gpu.sh sets LD_LIBRARY_PATH for the whole script (lines above)"
else
  ok "run_on_gpu.sh never exports LD_LIBRARY_PATH"
fi

echo "summary.json from the log when gpu_tests was killed at its cap (no XML)"
sed -n "/^cat > \"\$TMP\/summary.py\" <<'EOF'\$/,/^EOF\$/p" "$ROOT/tests/gpu/run_on_gpu.sh" | sed '1d;$d' > "$T/summary.py"
mkdir -p "$T/k/out" "$T/k/tmp"
: > "$T/k/tmp/steps.jsonl"
cat > "$T/k/out/gpu_tests.log" <<'EOF'
Note: Google Test filter = -*Nccl*
[ RUN      ] CudaVsCpu.Elementwise
[       OK ] CudaVsCpu.Elementwise (12 ms)
[ RUN      ] CudaVsCpu.Wsum
tests/gpu/test_backend_cuda.cpp:500: Failure
[  FAILED  ] CudaVsCpu.Wsum (7 ms)
[ RUN      ] Shapes/ConvCuda.MatchesCpu/2
[  SKIPPED ] Shapes/ConvCuda.MatchesCpu/2 (1 ms)
[ RUN      ] CudaVsCpu.TrainStepIsBitReproducible
===== NCCL tests (own process, NCCL_SOCKET_IFNAME=lo)
[ RUN      ] CudaVsCpu.NcclOneRankBucketsInOrder
[       OK ] CudaVsCpu.NcclOneRankBucketsInOrder (300 ms)
EOF
"$PY" "$T/summary.py" "$T/k/out" "$T/k/tmp" 99 420 "" 1 "" "setup 20 1 x" 2> "$T/k/err"
if "$PY" - "$T/k/out/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
t, n = s["tests"], s["nccl_tests"]
ok = (t["source"] == "log" and (t["passed"], t["failed"], t["skipped"]) == (1, 1, 1) and t["failed_names"] == ["CudaVsCpu.Wsum"]
      and t.get("unfinished") == "CudaVsCpu.TrainStepIsBitReproducible" and (n["passed"], n["failed"]) == (1, 0))
sys.exit(0 if ok else 1)
EOF
then ok "test counts, failures and the test running at the kill come from the log"
else bad "log fallback: $(cat "$T/k/out/summary.json" "$T/k/err" 2>/dev/null | head -c 600)"; fi

echo "dsonas --device cuda: the GPU is chosen before MPI_Init"
SYN="--data.dataset synthetic --space.preset tiny --data.batch 4 --threads 1"
# MPICH/Hydra's variable: Open MPI's singleton init ignores it, so only dsonas reads it
env MPI_LOCALRANKID=two "$BUILD/dsonas" bench $SYN --bench.steps 1 --device cuda > "$T/o" 2> "$T/e"; rc=$?
if [ "$rc" -eq 2 ] && [ "$(wc -l < "$T/e")" -eq 1 ] && grep -q "MPI_LOCALRANKID='two' is not a node-local rank" "$T/e"; then
  ok "a bad node-local rank variable: exit 2, one line naming it"
else
  bad "bad MPI_LOCALRANKID: exit $rc: $(cat "$T/e")"
fi
env MPI_LOCALRANKID=1 "$BUILD/dsonas" bench $SYN --bench.steps 1 --device cuda > "$T/o" 2> "$T/e"; rc=$?
if [ "$rc" -eq 2 ] && [ "$(wc -l < "$T/e")" -eq 1 ] && grep -q -- "--device cuda: no usable GPU" "$T/e"; then
  ok "no GPU: exit 2, one line (chosen from MPI_LOCALRANKID)"
else
  bad "MPI_LOCALRANKID=1 without GPU: exit $rc: $(cat "$T/e")"
fi
# the order, seen from Open MPI: OMPI_MCA_mpi_show_mca_params=enviro makes
# MPI_Init print its parameters; with a launcher variable the GPU is chosen (and
# here refused: no GPU) before MPI_Init, so nothing of MPI's is printed
env OMPI_MCA_mpi_show_mca_params=enviro "$BUILD/dsonas" bench $SYN --bench.steps 1 --device cuda > "$T/o" 2> "$T/e0"
env OMPI_MCA_mpi_show_mca_params=enviro MPI_LOCALRANKID=1 "$BUILD/dsonas" bench $SYN --bench.steps 1 --device cuda \
  > "$T/o" 2> "$T/e1"
if ! grep -q "mpi_show_mca_params" "$T/e0"; then
  echo "  (skipped: this dsonas does not initialise Open MPI, USE_MPI=0: the order cannot be seen)"
elif grep -q "mpi_show_mca_params" "$T/e1" || [ "$(wc -l < "$T/e1")" -ne 1 ]; then
  bad "with MPI_LOCALRANKID the GPU was not chosen before MPI_Init: $(cat "$T/e1")"
else
  ok "with a launcher variable the GPU is chosen before MPI_Init (without one, after it, as before)"
fi
env MPI_LOCALRANKID=two "$BUILD/dsonas" bench $SYN --device cpu --bench.steps 0 > "$T/o" 2> "$T/e"; rc=$?
[ "$rc" -eq 0 ] && ok "--device cpu never reads the variable" || bad "--device cpu with a bad variable: exit $rc: $(cat "$T/e")"

echo "device script: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
