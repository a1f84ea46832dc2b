#!/usr/bin/env bash
# test_bundle_check.sh — the GPU run refuses a bundle built from other sources
# (tests/gpu/bundle_stamp.sh, tests/gpu/run_on_gpu.sh), on the CPU, in scratch
# git repositories that hold copies of the two scripts and a few sources (the
# real checkout changes under other people's hands; these do not):
#   * a bundle stamped at HEAD of a clean tree passes (--check-bundle: exit 0)
#   * another commit, a changed / missing / new source file: refused, exit 2,
#     with the one command that rebuilds it; run_on_gpu.sh then writes
#     summary.json {"ok": false} and runs nothing
#   * a dirty tree stamped as such passes while the content is the same
#   * a copy without .git: content only; DSONAS_HEAD stands for HEAD
#   * a missing bundle and a bundle without binaries are refused the same way
# usage: bash tests/gpu/test_bundle_check.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }
G=(git -c user.name=test -c user.email=test@example.invalid -c commit.gpgsign=false)
REBUILD="rebuild it with:  bash tests/gpu/make_bundle.sh"

# a scratch project: the two scripts, two sources, a Makefile
mk_tree() {
  local d=$1
  mkdir -p "$d/tests/gpu" "$d/src/x" "$d/include"
  cp "$HERE/bundle_stamp.sh" "$HERE/run_on_gpu.sh" "$d/tests/gpu/"
  echo 'int f() { return 1; }' > "$d/src/x/a.cpp"
  echo '#pragma once' > "$d/include/a.hpp"
  echo 'all:' > "$d/Makefile"
}
# a fake bundle of tree $1 in $2: MANIFEST.txt = header + stamp, an empty tarball
mk_bundle() {
  mkdir -p "$2"
  { echo "dsonas GPU bundle (test)"; bash "$1/tests/gpu/bundle_stamp.sh" write; } > "$2/MANIFEST.txt"
  tar -C "$T" -cJf "$2/bundle.tar.xz" --files-from /dev/null
}
# check NAME EXPECTED_RC PATTERN -- command…: exit code and a line of its output
check() {
  local name=$1 want=$2 pat=$3; shift 4
  "$@" > "$T/out" 2>&1; local rc=$?
  if [ "$rc" -ne "$want" ]; then bad "$name: exit $rc, expected $want: $(tail -5 "$T/out")"; return; fi
  if ! grep -q -- "$pat" "$T/out"; then bad "$name: output lacks '$pat': $(tail -5 "$T/out")"; return; fi
  ok "$name"
}

echo "bundle check: stamps, commits, contents"
R=$T/repo
mk_tree "$R"
(cd "$R" && "${G[@]}" init -q && "${G[@]}" add -A && "${G[@]}" commit -q -m one) || { echo "git init failed"; exit 1; }
mk_bundle "$R" "$T/b1"
grep -q "^dirty: no" "$T/b1/MANIFEST.txt" && grep -q "^commit: $(git -C "$R" rev-parse HEAD)" "$T/b1/MANIFEST.txt" \
  && ok "the stamp records HEAD and a clean tree" || bad "stamp: $(head -4 "$T/b1/MANIFEST.txt")"
check "a bundle of this commit passes" 0 "the bundle matches this tree" -- \
  env BUNDLE_DIR="$T/b1" bash "$R/tests/gpu/run_on_gpu.sh" --check-bundle

# another commit: refused even though the sources are the same afterwards
echo '// comment' >> "$R/src/x/a.cpp"
(cd "$R" && "${G[@]}" commit -q -am two)
check "another commit is refused" 2 "built at commit .*this tree is at" -- \
  env BUNDLE_DIR="$T/b1" bash "$R/tests/gpu/run_on_gpu.sh" --check-bundle
grep -q "$REBUILD" "$T/out" && [ "$(grep -c 'make_bundle.sh' "$T/out")" -eq 1 ] \
  && ok "the refusal prints the one command that rebuilds the bundle" || bad "rebuild command: $(cat "$T/out")"

# dirty trees: compared by content
mk_bundle "$R" "$T/b2"
check "a fresh bundle passes" 0 "matches" -- bash "$R/tests/gpu/bundle_stamp.sh" check "$T/b2/MANIFEST.txt"
echo 'int g();' >> "$R/include/a.hpp"
check "a changed source (uncommitted) is refused" 2 "1 source file(s) differ from it or are missing: include/a.hpp" -- \
  bash "$R/tests/gpu/bundle_stamp.sh" check "$T/b2/MANIFEST.txt"
mk_bundle "$R" "$T/b3"
grep -q "^dirty: yes" "$T/b3/MANIFEST.txt" && ok "a dirty tree is stamped dirty" || bad "dirty: $(sed -n 2,3p "$T/b3/MANIFEST.txt")"
check "a dirty bundle of the same dirty tree passes" 0 "dirty: yes" -- \
  bash "$R/tests/gpu/bundle_stamp.sh" check "$T/b3/MANIFEST.txt"
echo 'int h() { return 2; }' > "$R/src/x/new.cu"
check "a source the bundle lacks is refused" 2 "1 source file(s) here that it was not built from: src/x/new.cu" -- \
  bash "$R/tests/gpu/bundle_stamp.sh" check "$T/b3/MANIFEST.txt"
rm "$R/src/x/new.cu" "$R/src/x/a.cpp"
check "a missing source is refused" 2 "differ from it or are missing: src/x/a.cpp" -- \
  bash "$R/tests/gpu/bundle_stamp.sh" check "$T/b3/MANIFEST.txt"
grep -v "^commit: " "$T/b1/MANIFEST.txt" > "$T/nocommit.txt"
check "a manifest without a commit (older make_bundle.sh) is refused" 2 "records no commit" -- \
  bash "$R/tests/gpu/bundle_stamp.sh" check "$T/nocommit.txt"

# a copy of the tree without .git (as the device machine may get it)
C=$T/copy
mk_tree "$C"
mkdir -p "$T/b4"
(cd "$C" && { echo "dsonas GPU bundle (test)"; echo "commit: $(git -C "$R" rev-parse HEAD)"; echo "dirty: no";
  echo "sources: md5"; find src include -type f | LC_ALL=C sort | xargs md5sum; md5sum Makefile; }) > "$T/b4/MANIFEST.txt"
check "without git the content decides (and it says so)" 0 "no git here and no DSONAS_HEAD" -- \
  bash "$C/tests/gpu/bundle_stamp.sh" check "$T/b4/MANIFEST.txt"
check "without git DSONAS_HEAD stands for HEAD: a match passes" 0 "matches" -- \
  env DSONAS_HEAD="$(git -C "$R" rev-parse HEAD)" bash "$C/tests/gpu/bundle_stamp.sh" check "$T/b4/MANIFEST.txt"
check "without git DSONAS_HEAD stands for HEAD: another commit is refused" 2 "this tree is at 0123456789ab" -- \
  env DSONAS_HEAD=0123456789abcdef bash "$C/tests/gpu/bundle_stamp.sh" check "$T/b4/MANIFEST.txt"

echo "run_on_gpu.sh: refusals before any GPU work"
for case in stale missing empty; do
  O=$T/out_$case
  case $case in
    stale) B=$T/b1; pat="built at commit" ;;
    missing) B=$T/nonexistent; pat="no GPU bundle at" ;;
    empty) B=$T/b5; mk_bundle "$R" "$B"; pat="holds no bin/dsonas" ;;
  esac
  check "run_on_gpu.sh refuses a $case bundle (exit 2)" 2 "$pat" -- \
    env BUNDLE_DIR="$B" OUT="$O" GPU_BUDGET_S=60 bash "$R/tests/gpu/run_on_gpu.sh"
  grep -q "run_on_gpu: REFUSED: .*bash tests/gpu/make_bundle.sh" "$T/out" \
    && ok "  … saying how to rebuild it" || bad "  $case: no rebuild line: $(tail -3 "$T/out")"
  if /usr/bin/python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(0 if s["ok"] is False and "make_bundle.sh" in s["error"] and s["steps"][-1]["status"] == "refused" else 1)' "$O/summary.json" 2>/dev/null; then
    ok "  … and summary.json says ok: false, step refused"
  else
    bad "  $case: summary.json: $(cat "$O/summary.json" 2>/dev/null | head -c 300)"
  fi
  [ ! -e "$O/gpu_tests.log" ] && [ ! -e "$O/bench.jsonl" ] && ok "  … with no test or benchmark run" \
    || bad "  $case: something ran: $(ls "$O")"
done

echo "bundle check: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
