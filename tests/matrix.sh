#!/usr/bin/env bash
# matrix.sh — the unit suite under the variations a cluster brings: another OpenBLAS
# kernel (OPENBLAS_CORETYPE unset / Haswell / SkylakeX / Zen), the AVX-512 kernels on
# and off (DSONAS_CPU_AVX512), 1, 2 and 3 threads (3 oversubscribes a 2-core machine;
# OMP_NUM_THREADS and the tests' DSONAS_TEST_THREADS), and two builds: the default
# (ARCH_FLAGS x86-64-v3, AVX2 + FMA) and -march=native.
#
#   bash tests/matrix.sh [--quick] [--out FILE]
#     --quick   the default build only, 5 variations chosen to cover every value of
#               every axis (what `make test` runs; ~30 s)
#     --out     the table (default build/test-matrix.txt)
#
# Each line of the table: build, core requested, core OpenBLAS reports, AVX-512 switch,
# threads, result, tests passed/skipped, seconds.  Exit 1 if any run failed, with the
# failing tests of each listed.
set -uo pipefail
cd "$(dirname "$0")/.."

quick=0
out=build/test-matrix.txt
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out="$2"; shift ;;
    *) echo "matrix.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

builds=(build)
if [ "$quick" = 0 ]; then
  # The native build needs no CUDA objects: the matrix is about CPU numerics.
  make --no-print-directory -j"$(nproc)" BUILD=build-native ARCH_FLAGS=-march=native USE_CUDA=0 \
    build-native/tests/unit_tests >/dev/null || { echo "matrix.sh: the -march=native build failed" >&2; exit 1; }
  builds+=(build-native)
fi
for b in "${builds[@]}"; do
  [ -x "$b/tests/unit_tests" ] || { echo "matrix.sh: $b/tests/unit_tests missing (run make first)" >&2; exit 2; }
done

# core avx512 threads
if [ "$quick" = 1 ]; then
  variations=("Haswell 0 1" "unset 1 3" "SkylakeX 1 2" "Zen 0 3" "unset 0 2")
else
  variations=()
  for core in unset Haswell SkylakeX Zen; do
    for avx in 1 0; do
      for t in 1 2 3; do variations+=("$core $avx $t"); done
    done
  done
fi

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
{
  printf '# dsonas unit-test matrix, %s, %s, %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc) cores"
  printf '%-12s %-9s %-11s %-6s %-7s %-5s %-22s %s\n' build core openblas avx512 threads result tests seconds
} >"$out"
for b in "${builds[@]}"; do
  for v in "${variations[@]}"; do
    read -r core avx t <<<"$v"
    envs=(DSONAS_CPU_AVX512="$avx" OMP_NUM_THREADS="$t" DSONAS_TEST_THREADS="$t" OPENBLAS_VERBOSE=2)
    if [ "$core" = unset ]; then unset_core=(-u OPENBLAS_CORETYPE); else unset_core=(); envs+=(OPENBLAS_CORETYPE="$core"); fi
    log="$tmp/run.log"
    t0=$(date +%s.%N)
    env "${unset_core[@]}" "${envs[@]}" "$b/tests/unit_tests" --gtest_brief=1 >"$log" 2>&1
    rc=$?
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    got=$(grep -m1 '^Core' "$log" | sed 's/^Core: //; s/^Core not found: .*/not-found/')
    passed=$(grep -oE '^\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$')
    skipped=$(grep -oE '^\[  SKIPPED \] [0-9]+' "$log" | grep -oE '[0-9]+$')
    result=ok
    if [ "$rc" != 0 ]; then
      result=FAIL
      fails=$((fails + 1))
      {
        echo "FAILED: env ${unset_core[*]} ${envs[*]} $b/tests/unit_tests"
        grep -E '^\[  FAILED  \]|Failure$' "$log" | head -8 | sed 's/^/    /'
      } >>"$tmp/failures"
    fi
    printf '%-12s %-9s %-11s %-6s %-7s %-5s %-22s %.1f\n' "$b" "$core" "${got:-?}" "$avx" "$t" "$result" \
      "${passed:-0} passed ${skipped:-0} skipped" "$secs" | tee -a "$out"
  done
done
if [ "$fails" -gt 0 ]; then
  cat "$tmp/failures" | tee -a "$out"
  echo "matrix.sh: $fails of the runs failed (table: $out)"
  exit 1
fi
echo "matrix.sh: all runs passed (table: $out)"
