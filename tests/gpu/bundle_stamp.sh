#!/usr/bin/env bash
# bundle_stamp.sh — which sources a GPU bundle was built from, and whether this
# tree still has them (tests/gpu/make_bundle.sh writes the stamp into the
# bundle's MANIFEST.txt, tests/gpu/run_on_gpu.sh checks it before it spends GPU
# time on binaries built from other sources).
#
#   bash tests/gpu/bundle_stamp.sh write            the stamp of this tree, on stdout
#   bash tests/gpu/bundle_stamp.sh check MANIFEST   exit 0: the bundle matches this tree;
#                                                   exit 2: refused, with the reasons
#                                                   and the one command that rebuilds it
#
# The stamp:
#   commit: <git rev-parse HEAD>      (the commit the bundle was built at)
#   dirty: yes|no                     (uncommitted changes to tracked files then)
#   <md5>  <path>                     (md5sum of every C++/CUDA source under src,
#                                      include and tests, and of the Makefile)
# The check refuses when
#   * git works here and HEAD is not the recorded commit (any change, any file;
#     where the tree has no git, e.g. a copy without .git, DSONAS_HEAD=<commit>
#     in the environment stands for HEAD, and without it only the content counts),
#   * a recorded source differs or is missing here, or this tree has a source
#     the bundle was not built from (so a dirty tree is compared by content).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 2
REBUILD="bash tests/gpu/make_bundle.sh"

sources() {
  { find src include tests -type f \( -name '*.cpp' -o -name '*.hpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) \
      2>/dev/null; [ -f Makefile ] && echo Makefile; } | LC_ALL=C sort
}

# HEAD of this tree's own repository (not of one around a copy without .git)
head_commit() {
  local top
  top=$(git -C "$ROOT" rev-parse --show-toplevel 2>/dev/null)
  if [ -n "$top" ] && [ "$(cd "$top" && pwd -P)" = "$(pwd -P)" ] && git -C "$ROOT" rev-parse --verify -q HEAD 2>/dev/null; then
    return 0
  fi
  [ -n "${DSONAS_HEAD:-}" ] && { echo "$DSONAS_HEAD"; return 0; }
  return 1
}

case "${1:-}" in
  write)
    c=$(git -C "$ROOT" rev-parse --verify -q HEAD) || { echo "bundle_stamp: no git commit in $ROOT" >&2; exit 2; }
    if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then d=yes; else d=no; fi
    echo "commit: $c"
    echo "dirty: $d"
    echo "sources: md5 of every C++/CUDA file under src, include, tests and the Makefile"
    sources | xargs -d '\n' md5sum
    ;;
  check)
    m=${2:-}
    if [ -z "$m" ] || [ ! -f "$m" ]; then
      echo "bundle_stamp: REFUSED: no manifest at '${m}' (the bundle is missing or incomplete); rebuild it with:  $REBUILD"
      exit 2
    fi
    rec=$(sed -n 's/^commit: //p' "$m" | head -1)
    dirty=$(sed -n 's/^dirty: //p' "$m" | head -1)
    reasons=()
    if [ -z "$rec" ]; then
      reasons+=("its manifest records no commit (built by an older make_bundle.sh)")
    elif h=$(head_commit); then
      [ "$h" = "$rec" ] || reasons+=("built at commit ${rec:0:12}${dirty:+ (dirty: $dirty)}, this tree is at ${h:0:12}")
    else
      echo "bundle_stamp: no git here and no DSONAS_HEAD: comparing the sources by content only"
    fi
    grep -E '^[0-9a-f]{32}  ' "$m" > "${TMPDIR:-/tmp}/bundle_stamp.$$" || true
    nrec=$(wc -l < "${TMPDIR:-/tmp}/bundle_stamp.$$")
    if [ "$nrec" -eq 0 ]; then
      reasons+=("its manifest lists no source checksums")
    else
      bad=$(md5sum -c --quiet "${TMPDIR:-/tmp}/bundle_stamp.$$" 2>/dev/null | sed 's/: .*//' )
      nbad=$(printf '%s' "$bad" | grep -c . || true)
      [ "$nbad" -gt 0 ] && reasons+=("$nbad source file(s) differ from it or are missing: $(echo "$bad" | head -5 | tr '\n' ' ')")
      new=$(comm -13 <(sed 's/^[0-9a-f]*  //' "${TMPDIR:-/tmp}/bundle_stamp.$$" | LC_ALL=C sort) <(sources))
      nnew=$(printf '%s' "$new" | grep -c . || true)
      [ "$nnew" -gt 0 ] && reasons+=("$nnew source file(s) here that it was not built from: $(echo "$new" | head -5 | tr '\n' ' ')")
    fi
    rm -f "${TMPDIR:-/tmp}/bundle_stamp.$$"
    if [ "${#reasons[@]}" -gt 0 ]; then
      echo "bundle_stamp: REFUSED: the GPU bundle was built from other sources than this tree:"
      for r in "${reasons[@]}"; do echo "  - $r"; done
      echo "bundle_stamp: rebuild it with:  $REBUILD"
      exit 2
    fi
    echo "bundle_stamp: the bundle matches this tree (commit ${rec:0:12}, dirty: ${dirty:-?}, $nrec sources)"
    ;;
  *)
    echo "usage: bash tests/gpu/bundle_stamp.sh write | check MANIFEST" >&2
    exit 2
    ;;
esac
