#!/usr/bin/env bash
# End-to-end test of make install / make uninstall and the modulefiles.
# usage: tests/e2e/install.sh BUILD_DIR   (needs lmod, tcl and the unpacked environment-modules
# of utils/install-deps.sh, help2man; make deps installs them)
#  (a) make install PREFIX=P: binary, man page, share/dsonas/{jobs,slurm,utils,docs}, both
#      modulefiles; no installed file names the source tree (the binary: no RPATH into it)
#  (b) in a clean shell (env -i, PATH without the source tree, working folder outside it):
#      real Lmod: module load dsonas/VERSION -> dsonas on PATH is P/bin/dsonas, DSONAS_HOME,
#      man dsonas found, module help names the jobs and Slurm folders; dsonas --version; a
#      tiny search; inspect prints "written by" = the installed binary's --version; validate
#      of the installed jobs/fmnist_demo.cfg; a tiny retrain exported to ONNX (the installed
#      share/dsonas/utils/export_net.py, found through DSONAS_HOME)
#  (c) the same with Environment Modules (its modulecmd.tcl, as the package's `module` does)
#  (d) DESTDIR staging: files under DESTDIR/PREFIX, none at PREFIX itself, the modulefile names
#      PREFIX (not DESTDIR); make uninstall with the same DESTDIR empties it
#  (e) make uninstall PREFIX=P leaves P empty; a second uninstall is exit 2 with one line
#  (f) MODULEFILES outside the prefix and MODULE_DEPS: the modulefiles load the dependency
#      first (a stub module), uninstall removes them and keeps the site's folder
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$1
T=$(mktemp -d /tmp/dsonas-install.XXXXXX)
chmod 755 "$T"
trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok()  { echo "  ok    $1"; pass=$((pass+1)); }
bad() { echo "  FAIL  $1"; fail=$((fail+1)); }
LMOD_INIT=/usr/share/lmod/lmod/init/bash
EM_ROOT=${EM_ROOT:-/opt/dsonas-deps/environment-modules}
EM_CMD=$EM_ROOT/usr/lib/x86_64-linux-gnu/modulecmd.tcl
VERSION=$(sed -n 's/^VERSION *:= *//p' "$ROOT/Makefile" | head -1)
[ -n "$VERSION" ] || { echo "  FAIL  VERSION not found in the Makefile"; exit 1; }
minst() { make -s -C "$ROOT" --no-print-directory BUILD="$BUILD" "$@"; }

echo "e2e: make install / uninstall, modulefiles (dsonas $VERSION)"
P=$T/opt/dsonas/$VERSION
if minst install PREFIX="$P" >"$T/install.log" 2>&1; then
  missing=""
  for f in bin/dsonas share/man/man1/dsonas.1 share/dsonas/jobs/fmnist.cfg share/dsonas/jobs/fmnist_demo.cfg \
           share/dsonas/slurm/search.sbatch share/dsonas/slurm/lib.sh share/dsonas/slurm/pipeline.sh \
           share/dsonas/utils/study_plot.py share/dsonas/utils/export_net.py share/dsonas/docs/checkpoint-format.md share/dsonas/docs/README.md \
           "modulefiles/dsonas/$VERSION" "modulefiles/dsonas/$VERSION.lua"; do
    [ -e "$P/$f" ] || missing="$missing $f"
  done
  names_src=$(grep -rlF --exclude=dsonas "$ROOT/" "$P" 2>/dev/null)
  rpath=$(readelf -d "$P/bin/dsonas" | grep -E 'RPATH|RUNPATH' | grep -F "$ROOT")
  if [ -z "$missing" ] && [ -z "$names_src" ] && [ -z "$rpath" ] && [ -x "$P/bin/dsonas" ]; then
    ok "(a) make install PREFIX=…/opt/dsonas/$VERSION: $(find "$P" -type f | wc -l) files; none names the source tree"
  else bad "(a) missing:$missing; naming the source tree: $names_src $rpath; $(tail -3 "$T/install.log")"; fi
else bad "(a) make install failed: $(tail -5 "$T/install.log")"; fi

mkdir -p "$T/work"
# One clean shell per module system: no variable of this one, PATH without the source tree,
# working folder $T/work.  $1: the shell code that defines `module`.
in_clean_shell() {
  env -i HOME="$T/work" PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TERM=dumb \
      OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MODS="$T/opt/dsonas/$VERSION/modulefiles" V="$VERSION" \
      bash --noprofile --norc -c "cd '$T/work' && $1"'
set -u
module use "$MODS" && module load "dsonas/$V" || { echo "RESULT module load failed"; exit 1; }
echo "RESULT which $(command -v dsonas)"
echo "RESULT home ${DSONAS_HOME:-unset}"
echo "RESULT man $(man -w dsonas 2>/dev/null)"
module help dsonas 2>&1 | grep -q "DSONAS_HOME/slurm" && echo "RESULT help names the Slurm scripts"
dsonas --version >version.txt 2>&1 || echo "RESULT --version failed"
rm -rf run && dsonas search --data.dataset synthetic --space.preset tiny --data.batch 8 --data.synthetic-train 64 \
  --data.synthetic-test 16 --threads 1 --max-steps 6 --log-every 3 --out run >search.log 2>&1 || echo "RESULT search failed: $(tail -2 search.log)"
dsonas inspect run/model.h5 >inspect.txt 2>&1 || echo "RESULT inspect failed"
grep -qxF "written by: $(head -1 version.txt)" inspect.txt && echo "RESULT written by = --version"
dsonas validate --config "$DSONAS_HOME/jobs/fmnist_demo.cfg" >validate.txt 2>&1 && echo "RESULT validate ok"
rm -rf rt rt.onnx && dsonas retrain --data.dataset synthetic --space.preset tiny --arch baseline --data.batch 8 \
  --data.synthetic-train 64 --data.synthetic-test 16 --threads 1 --max-steps 2 --out rt >retrain.log 2>&1 \
  && dsonas export --run rt --format onnx --out rt.onnx >export.log 2>&1 && [ -s rt.onnx ] && echo "RESULT export ok"
case ":$PATH:" in *:'"$ROOT"'*) echo "RESULT PATH names the source tree" ;; esac
module unload dsonas && [ -z "${DSONAS_HOME:-}" ] && ! command -v dsonas >/dev/null && echo "RESULT unloaded"
'
}
check_shell() {  # check_shell NAME OUTPUT_FILE
  local n=$1 o=$2
  local want=("which $P/bin/dsonas" "home $P/share/dsonas" "man $P/share/man/man1/dsonas.1" "help names the Slurm scripts"
              "written by = --version" "validate ok" "export ok" "unloaded")
  local miss="" w
  for w in "${want[@]}"; do grep -qxF "RESULT $w" "$o" || miss="$miss [$w]"; done
  if [ -z "$miss" ] && ! grep -q "RESULT .*failed\|RESULT PATH names" "$o"; then
    ok "$n: module load dsonas/$VERSION in a clean shell outside the tree → $P/bin/dsonas, DSONAS_HOME, man page, module help; tiny search, inspect written by '$(head -1 "$T/work/version.txt")', validate of \$DSONAS_HOME/jobs/fmnist_demo.cfg; retrain + export (the installed utils/export_net.py); unload"
  else bad "$n: missing$miss; $(grep RESULT "$o" | tr '\n' ';' | head -c 600)"; fi
}

if [ -f "$LMOD_INIT" ]; then
  in_clean_shell "source $LMOD_INIT" >"$T/lmod.out" 2>&1
  check_shell "(b) Lmod $(bash -c "source $LMOD_INIT; module --version 2>&1" | grep -o 'Version [0-9.]*' | head -1)" "$T/lmod.out"
else bad "(b) Lmod not installed ($LMOD_INIT missing; make deps installs it)"; fi

if [ -f "$EM_CMD" ]; then
  in_clean_shell "module() { eval \"\$(tclsh $EM_CMD bash \"\$@\")\"; }" >"$T/em.out" 2>&1
  check_shell "(c) Environment Modules $(tclsh "$EM_CMD" bash --version 2>&1 | grep -o 'Modules Release [0-9.]*' | head -1)" "$T/em.out"
else bad "(c) Environment Modules not unpacked ($EM_CMD missing; make deps unpacks it)"; fi

# (d) DESTDIR staging
S=$T/stage Q=/opt/dsonas-staged-test/$VERSION
if minst install PREFIX="$Q" DESTDIR="$S" >"$T/stage.log" 2>&1 && [ -x "$S$Q/bin/dsonas" ] && [ ! -e "$Q" ] \
   && grep -qx "prepend-path PATH $Q/bin" "$S$Q/modulefiles/dsonas/$VERSION" \
   && grep -qxF "setenv(\"DSONAS_HOME\", \"$Q/share/dsonas\")" "$S$Q/modulefiles/dsonas/$VERSION.lua" \
   && ! grep -rqF "$S" "$S$Q/modulefiles" "$S$Q/share/dsonas/install-manifest.txt" \
   && minst uninstall PREFIX="$Q" DESTDIR="$S" >>"$T/stage.log" 2>&1 && [ -z "$(find "$S$Q" -mindepth 1)" ]; then
  ok "(d) DESTDIR staging: files under DESTDIR$Q only, modulefiles name $Q; uninstall with DESTDIR leaves it empty"
else bad "(d) DESTDIR: $(tail -3 "$T/stage.log"); left: $(find "$S$Q" -mindepth 1 2>/dev/null | head -3)"; fi

# (e) uninstall
if minst uninstall PREFIX="$P" >"$T/uninstall.log" 2>&1 && [ -d "$P" ] && [ -z "$(find "$P" -mindepth 1)" ]; then
  PREFIX=$P VERSION=$VERSION bash "$ROOT/utils/install.sh" uninstall >/dev/null 2>"$T/again.err"; rc=$?
  if [ "$rc" -eq 2 ] && [ "$(wc -l <"$T/again.err")" -eq 1 ] && grep -q "install-manifest.txt" "$T/again.err"; then
    ok "(e) make uninstall leaves the prefix empty; again: exit 2, $(cat "$T/again.err")"
  else bad "(e) second uninstall: rc=$rc $(cat "$T/again.err")"; fi
else bad "(e) uninstall: $(tail -3 "$T/uninstall.log"); left: $(find "$P" -mindepth 1 | head -5)"; fi

# (f) a site modulefile tree outside the prefix, a dependency module
P2=$T/apps/dsonas/$VERSION M=$T/site/modulefiles
mkdir -p "$M/depstub" && printf '#%%Module1.0\nsetenv DEPSTUB_LOADED 1\n' >"$M/depstub/1.0" && echo 'setenv("DEPSTUB_LOADED", "1")' >"$M/depstub/1.0.lua"
if minst install PREFIX="$P2" MODULEFILES="$M" MODULE_DEPS=depstub/1.0 >"$T/f.log" 2>&1; then
  got=$(env -i PATH=/usr/bin:/bin bash --noprofile --norc -c "source $LMOD_INIT; module use $M; module load dsonas/$VERSION; echo \$DEPSTUB_LOADED:\$(command -v dsonas)" 2>"$T/f.err")
  got_em=$(env -i PATH=/usr/bin:/bin bash --noprofile --norc -c "module() { eval \"\$(tclsh $EM_CMD bash \"\$@\")\"; }; module use $M; module load dsonas/$VERSION; echo \$DEPSTUB_LOADED:\$(command -v dsonas)" 2>"$T/f.err")
  minst uninstall PREFIX="$P2" MODULEFILES="$M" >>"$T/f.log" 2>&1
  if [ "$got" = "1:$P2/bin/dsonas" ] && [ "$got_em" = "1:$P2/bin/dsonas" ] && [ ! -e "$M/dsonas" ] && [ -f "$M/depstub/1.0" ] \
     && [ -z "$(find "$P2" -mindepth 1)" ]; then
    ok "(f) MODULEFILES=site folder, MODULE_DEPS=depstub/1.0: Lmod and Environment Modules load the dependency first; uninstall keeps the site's other modules"
  else bad "(f) lmod '$got' em '$got_em'; $(tail -2 "$T/f.log"); left: $(find "$P2" "$M" -mindepth 1 | head -5)"; fi
else bad "(f) install: $(tail -3 "$T/f.log")"; fi

echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
