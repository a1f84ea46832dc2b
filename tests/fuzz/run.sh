#!/usr/bin/env bash
# run.sh — the libFuzzer campaigns (`make fuzz`): every harness of tests/fuzz built
# with clang under ASan + UBSan, run from the stored corpus and fresh seeds made from
# real files (make_seeds.sh); what a campaign adds is merged (minimised) back into
# tests/fuzz/corpus/<harness>, and every crash, leak, timeout or out-of-memory input
# is copied to tests/fuzz/crashes/<harness>/ (fix it; `make test` then replays it).
#
#   FUZZ_SECONDS=900 FUZZ_JOBS=1 FUZZ_ONLY="config jpeg" bash tests/fuzz/run.sh
#
# Writes build-fuzz/fuzz-report.txt: per harness the run time, executions, corpus
# size before and after, coverage (edges, features) and findings.  Exit 1 if any
# campaign found something.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER=${FUZZ_SECONDS:-900}
JOBS=${FUZZ_JOBS:-1}
FB=build-fuzz
mapfile -t ALL < <(ls tests/fuzz/fuzz_*.cpp | sed 's#tests/fuzz/fuzz_##; s#\.cpp$##')
ONLY=(${FUZZ_ONLY:-${ALL[*]}})

echo "fuzz: building the harnesses with clang (ASan + UBSan + libFuzzer) in $FB"
make --no-print-directory -j"$(nproc)" BUILD=$FB CXX=clang++ USE_CUDA=0 USE_MPI=0 OPT=-O1 \
  EXTRA_CXXFLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -gline-tables-only -Wno-unused-command-line-argument" \
  EXTRA_LDFLAGS="-fsanitize=address,undefined" $(printf "$FB/tests/fuzz_%s " "${ONLY[@]}") >$FB.build.log 2>&1 ||
  { tail -20 $FB.build.log; echo "fuzz: build failed (log: $FB.build.log)"; exit 2; }
make --no-print-directory -j"$(nproc)" build/dsonas >/dev/null || exit 2
rm -rf $FB/seeds && bash tests/fuzz/make_seeds.sh build $FB/seeds >/dev/null || { echo "fuzz: seeds failed"; exit 2; }

# ASan: leaks are findings (except libhdf5's own, tests/fuzz/lsan.supp says why);
# UBSan: every report is fatal (-fno-sanitize-recover).
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1
export LSAN_OPTIONS=suppressions=$(pwd)/tests/fuzz/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# An HDF5 harness's re-sealed pass can crash inside libhdf5 itself (HDF5 1.10 on
# crafted files); those campaigns run in fork mode so that one libhdf5 crash does not
# end them, and every finding is sorted afterwards (classify below).
hdf5_harness() { case "$1" in h5_*) return 0 ;; *) return 1 ;; esac; }

# classify HARNESS INPUT: "ours" (a crash, leak or abort in dsonas code, or any finding
# on the protected path), "hdf5" (a crash whose first frame outside the sanitizer
# runtime is in libhdf5, on the re-sealed pass only), or "gone" (does not reproduce).
classify() {
  local n=$1 f=$2 out
  if ! DSONAS_FUZZ_PROTECTED_ONLY=1 timeout 120 $FB/tests/fuzz_"$n" "$f" >/dev/null 2>&1; then echo ours; return; fi
  out=$(timeout 120 $FB/tests/fuzz_"$n" "$f" 2>&1) && { echo gone; return; }
  local top
  # the first frame outside the sanitizer runtime, libFuzzer and libc (memcpy & co.)
  top=$(echo "$out" | grep -E '^ +#[0-9]+ 0x' |
        grep -v -E 'libclang_rt|__interceptor_|__asan|__ubsan|__sanitizer|compiler-rt|/sanitizer_common/|fuzzer::|sysdeps/|libc\.so' |
        grep -v -E '\(/[^)]*/tests/fuzz_[a-z0-9_]+\+0x' | head -1)  # interceptors (strdup …) in the harness binary
  if hdf5_harness "$n" && echo "$top" | grep -q 'libhdf5'; then echo hdf5; else echo ours; fi
}

report=$FB/fuzz-report.txt
printf '# dsonas fuzz campaigns, %s, %s s per harness, %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$SECONDS_PER" \
  "$(clang++ --version | head -1)" >"$report"
printf '%-11s %8s %11s %8s %8s %7s %7s %s\n' harness seconds executions corpus0 corpus1 edges features findings >>"$report"
found=0

campaign() {
  local n=$1 W=$FB/campaign/$1
  rm -rf "$W" && mkdir -p "$W/new" "$W/art" tests/fuzz/corpus/"$n"
  local before; before=$(ls tests/fuzz/corpus/"$n" | wc -l)
  local t0=$SECONDS
  # the first folder receives new inputs; the others are read only
  local mode=()
  hdf5_harness "$n" && mode=(-fork=1 -ignore_crashes=1 -ignore_ooms=0 -ignore_timeouts=0)
  $FB/tests/fuzz_"$n" "${mode[@]}" -max_total_time="$SECONDS_PER" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$W/art/" "$W/new" tests/fuzz/corpus/"$n" "$FB/seeds/$n" >"$W/log" 2>&1
  local rc=$? secs=$((SECONDS - t0))
  local execs; execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$W/log" | grep -o '[0-9]*$' | tail -1)
  # fork mode reports executions as "#N ... exec/s" lines of the parent
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$W/log" | tail -1 | tr -d '#')
  # merge: a minimal set of inputs with every feature the campaign saw
  rm -rf "$W/merged" && mkdir -p "$W/merged"
  $FB/tests/fuzz_"$n" -merge=1 -timeout=25 -rss_limit_mb=2048 "$W/merged" tests/fuzz/corpus/"$n" "$FB/seeds/$n" "$W/new" \
    >"$W/merge.log" 2>&1
  if [ -n "$(ls "$W/merged")" ]; then
    rm -rf tests/fuzz/corpus/"$n" && mkdir -p tests/fuzz/corpus/"$n"
    for f in "$W"/merged/*; do cp "$f" tests/fuzz/corpus/"$n"/; done
  fi
  local after; after=$(ls tests/fuzz/corpus/"$n" | wc -l)
  local cov; cov=$(grep -E '^#[0-9]+.*cov: ' "$W/log" | tail -1)
  local edges features
  edges=$(echo "$cov" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  features=$(echo "$cov" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  local ours=0 hdf5=0 gone=0 f c
  for f in "$W"/art/*; do
    [ -f "$f" ] || continue
    c=$(classify "$n" "$f")
    case $c in
      ours) ours=$((ours + 1)); mkdir -p tests/fuzz/crashes/"$n"; cp "$f" tests/fuzz/crashes/"$n"/ ;;
      hdf5) hdf5=$((hdf5 + 1)); mkdir -p tests/fuzz/hdf5-crashes/"$n"; cp "$f" tests/fuzz/hdf5-crashes/"$n"/ ;;
      gone) gone=$((gone + 1)) ;;
    esac
  done
  local what=none
  if [ "$ours" -gt 0 ] || { [ "$rc" -ne 0 ] && ! hdf5_harness "$n"; }; then
    what="$ours in dsonas (tests/fuzz/crashes/$n; exit $rc; log $W/log)"
  fi
  [ "$hdf5" -gt 0 ] && what="$what; $hdf5 inside libhdf5 behind the seal (tests/fuzz/hdf5-crashes/$n)"
  [ "$gone" -gt 0 ] && what="$what; $gone not reproducible"
  printf '%-11s %8s %11s %8s %8s %7s %7s %s\n' "$n" "$secs" "${execs:-?}" "$before" "$after" "${edges:-?}" \
    "${features:-?}" "$what" >>"$report"
  case "$what" in none*) return 0 ;; *) return 1 ;; esac
}

running=0
for n in "${ONLY[@]}"; do
  echo "fuzz: $n for $SECONDS_PER s"
  campaign "$n" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || found=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || found=1
  running=$((running - 1))
done
cat "$report"
if [ "$found" = 1 ]; then
  echo "fuzz: findings copied to tests/fuzz/crashes/ (reproduce: $FB/tests/fuzz_<harness> FILE)"
  exit 1
fi
echo "fuzz: no findings"
