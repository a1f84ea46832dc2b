#!/usr/bin/env bash
# sanitize.sh — the test suites under the sanitizers (`make sanitize`).
#
#   bash tests/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer (gcc, build-asan):
#                                 the unit suite, the MPI suite (mpirun -np 2), the e2e suites
#                                 (run_all, mpi, pipeline) and the stored fuzz inputs
#   bash tests/sanitize.sh tsan   ThreadSanitizer (clang, build-tsan; OpenMP through LLVM's libomp
#                                 with its Archer tool so that OpenMP's own synchronisation is
#                                 understood): the unit suite (the thread pool, the prefetch
#                                 thread, the ImageNet loader workers) and run_all.sh (training
#                                 runs with the prefetch thread, SIGUSR1, deadlines, kill -9)
#   bash tests/sanitize.sh all    both
#
# Every sanitizer report of every process (including processes a test expects to
# fail, e.g. on bad input) goes to a file under BUILD/sanitizer-reports/; the run
# fails if any report exists, whatever the suites' own verdicts.  Suppressions:
# tests/sanitizers/*.supp, each entry with its reason.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
J=$(nproc)
fail=0

check_reports() {  # DIR LABEL
  local n; n=$(find "$1" -type f 2>/dev/null | wc -l)
  if [ "$n" -gt 0 ]; then
    echo "sanitize: $2: $n report file(s) in $1:"
    for f in $(find "$1" -type f | head -5); do echo "---- $f"; head -40 "$f"; done
    fail=1
  else
    echo "sanitize: $2: zero reports"
  fi
}

suite() {  # LABEL command...
  local label=$1; shift
  echo "sanitize: $label: $*"
  if ! "$@" >"$LOGS/$label.log" 2>&1; then
    echo "sanitize: $label FAILED (log: $LOGS/$label.log)"; tail -15 "$LOGS/$label.log"; fail=1
  else
    echo "sanitize: $label passed ($(grep -E 'passed|PASSED|replay:' "$LOGS/$label.log" | tail -1))"
  fi
}

if [ "$mode" = asan ] || [ "$mode" = all ]; then
  B=build-asan
  make --no-print-directory -j"$J" BUILD=$B OPT=-O1 USE_CUDA=0 \
    EXTRA_CXXFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
    EXTRA_LDFLAGS="-fsanitize=address,undefined" $B/dsonas $B/tests/unit_tests $B/tests/mpi_tests \
    $(ls tests/fuzz/fuzz_*.cpp | sed "s#tests/fuzz/fuzz_#$B/tests/replay_#; s#\.cpp##") >$B.build.log 2>&1 ||
    { tail -20 $B.build.log; echo "sanitize: asan build failed"; exit 2; }
  R=$(pwd)/$B/sanitizer-reports
  LOGS=$(pwd)/$B/sanitize-logs
  rm -rf "$R" "$LOGS" && mkdir -p "$R" "$LOGS"
  # full malloc stacks and loaded Open MPI components: see tests/sanitizers/lsan.supp
  export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:log_path=$R/asan:detect_stack_use_after_return=1:strict_string_checks=1"
  export OMPI_MCA_mca_base_component_disable_dlclose=1
  export LSAN_OPTIONS="suppressions=$(pwd)/tests/sanitizers/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$R/ubsan"
  suite asan-unit env OMP_NUM_THREADS=2 $B/tests/unit_tests --gtest_brief=1
  suite asan-mpi env OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    mpirun --oversubscribe --bind-to none -x ASAN_OPTIONS -x LSAN_OPTIONS -x UBSAN_OPTIONS -np 2 $B/tests/mpi_tests --gtest_brief=1
  # the stored fuzz inputs are damaged HDF5 files: libhdf5 leaks its own buffers on their
  # error paths, so this suite adds tests/fuzz/lsan.supp (why: that file)
  cat tests/sanitizers/lsan.supp tests/fuzz/lsan.supp >"$B/lsan-fuzz.supp"
  suite asan-fuzz-replay env LSAN_OPTIONS="suppressions=$(pwd)/$B/lsan-fuzz.supp:print_suppressions=0" \
    make --no-print-directory BUILD=$B fuzz-replay
  suite asan-e2e bash tests/e2e/run_all.sh $B
  suite asan-e2e-mpi env MPIRUN="OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none -x ASAN_OPTIONS -x LSAN_OPTIONS -x UBSAN_OPTIONS" \
    bash tests/e2e/mpi.sh $B
  suite asan-e2e-pipeline bash tests/e2e/pipeline.sh $B
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS OMPI_MCA_mca_base_component_disable_dlclose
  check_reports "$R" "ASan + UBSan"
fi

if [ "$mode" = tsan ] || [ "$mode" = all ]; then
  B=build-tsan
  make --no-print-directory -j"$J" BUILD=$B CXX=clang++ OPT=-O1 USE_CUDA=0 \
    EXTRA_CXXFLAGS="-fsanitize=thread -fno-omit-frame-pointer -Wno-unused-command-line-argument" \
    EXTRA_LDFLAGS="-fsanitize=thread" $B/dsonas $B/tests/unit_tests >$B.build.log 2>&1 ||
    { tail -20 $B.build.log; echo "sanitize: tsan build failed"; exit 2; }
  R=$(pwd)/$B/sanitizer-reports
  LOGS=$(pwd)/$B/sanitize-logs
  rm -rf "$R" "$LOGS" && mkdir -p "$R" "$LOGS"
  archer=$(ls /usr/lib/llvm-*/lib/libarcher.so 2>/dev/null | head -1)
  [ -n "$archer" ] || { echo "sanitize: LLVM's libarcher.so (package libomp-dev) is missing"; exit 2; }
  export OMP_TOOL_LIBRARIES=$archer
  # ignore_noninstrumented_modules: see tests/sanitizers/tsan.supp
  export TSAN_OPTIONS="log_path=$R/tsan:suppressions=$(pwd)/tests/sanitizers/tsan.supp:second_deadlock_stack=1:history_size=4:ignore_noninstrumented_modules=1"
  export OPENBLAS_NUM_THREADS=1
  suite tsan-unit env OMP_NUM_THREADS=2 $B/tests/unit_tests --gtest_brief=1
  suite tsan-e2e bash tests/e2e/run_all.sh $B
  unset TSAN_OPTIONS OMP_TOOL_LIBRARIES
  check_reports "$R" "ThreadSanitizer"
fi

[ "$fail" = 0 ] && echo "sanitize: $mode: all suites passed, zero sanitizer reports"
exit $fail
