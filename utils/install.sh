#!/usr/bin/env bash
# install.sh — `make install` / `make uninstall` (called by the Makefile, which passes
# the variables below; run it by hand only the same way).
#
#   install.sh install   BIN MANPAGE     copies into $DESTDIR$PREFIX:
#       bin/dsonas                        the binary
#       share/dsonas/{jobs,slurm,utils,docs}   job configurations, Slurm scripts (they
#                                         find the installed binary), the Python tools,
#                                         the documentation (checkpoint-format.md, README.md)
#       share/man/man1/dsonas.1           the man page (help2man, from the --help texts)
#       $MODULEFILES/dsonas/$VERSION      an Environment Modules (Tcl) modulefile and
#       $MODULEFILES/dsonas/$VERSION.lua  an Lmod one (Lmod takes the .lua when both exist;
#                                         Environment Modules ignores it: no #%Module line)
#       share/dsonas/install-manifest.txt every path written, for uninstall
#   install.sh uninstall                  removes exactly the files of the manifest, then the
#                                         folders this left empty (up to, not including, PREFIX)
#
# Variables: PREFIX (absolute), DESTDIR (packagers: a staging root; the installed files still
# name PREFIX), MODULEFILES (default PREFIX/modulefiles), MODULE_DEPS (modules the modulefiles
# load first, e.g. "openmpi/4.1 hdf5/1.10"; default none: Debian's system libraries), VERSION.
# Nothing is written outside $DESTDIR$PREFIX and $DESTDIR$MODULEFILES.
set -euo pipefail
ACTION=${1:-}
: "${PREFIX:?PREFIX is not set}" "${VERSION:?VERSION is not set}"
DESTDIR=${DESTDIR:-}
MODULEFILES=${MODULEFILES:-$PREFIX/modulefiles}
MODULE_DEPS=${MODULE_DEPS:-}
SRC=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "install.sh: $*" >&2; exit 2; }
case $PREFIX in /*) ;; *) die "PREFIX=$PREFIX must be an absolute path" ;; esac
case $MODULEFILES in /*) ;; *) die "MODULEFILES=$MODULEFILES must be an absolute path" ;; esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "PREFIX=/ is not supported (use /usr or /usr/local)"
SHARE=$PREFIX/share/dsonas
MANIFEST=$SHARE/install-manifest.txt

written=()
put() {  # put MODE SRC DEST (DEST without DESTDIR)
  install -D -m "$1" "$2" "$DESTDIR$3"
  written+=("$3")
}
put_text() {  # put_text MODE DEST < text
  mkdir -p "$(dirname "$DESTDIR$2")"
  cat >"$DESTDIR$2"
  chmod "$1" "$DESTDIR$2"
  written+=("$2")
}

do_install() {
  local bin=$1 man=$2 f
  [ -x "$bin" ] || die "$bin: no binary (make builds it)"
  [ -f "$man" ] || die "$man: no man page (make builds it)"
  put 755 "$bin" "$PREFIX/bin/dsonas"
  put 644 "$man" "$PREFIX/share/man/man1/dsonas.1"
  for f in "$SRC"/jobs/*.cfg; do put 644 "$f" "$SHARE/jobs/$(basename "$f")"; done
  for f in "$SRC"/slurm/*.sh "$SRC"/slurm/*.sbatch; do
    case $f in */lib.sh) put 644 "$f" "$SHARE/slurm/lib.sh" ;; *) put 755 "$f" "$SHARE/slurm/$(basename "$f")" ;; esac
  done
  for f in "$SRC"/utils/*.py; do put 755 "$f" "$SHARE/utils/$(basename "$f")"; done
  for f in "$SRC"/docs/*.md; do put 644 "$f" "$SHARE/docs/$(basename "$f")"; done
  put 644 "$SRC/README.md" "$SHARE/docs/README.md"
  while IFS= read -r f; do put 644 "$SRC/$f" "$SHARE/$f"; done < <(cd "$SRC" && find docs/img -type f 2>/dev/null | sort)

  local deps_tcl="" deps_lua="" d
  for d in $MODULE_DEPS; do
    deps_tcl+="if { ![is-loaded $d] } { module load $d }"$'\n'
    deps_lua+="depends_on(\"$d\")"$'\n'
  done
  local helptext
  helptext="dsonas $VERSION: DSO-NAS neural architecture search (CPU and CUDA, MPI data parallel).
  dsonas --help, dsonas COMMAND --help, man dsonas, dsonas --version
  job configurations: \$DSONAS_HOME/jobs       ($SHARE/jobs)
  Slurm scripts:      \$DSONAS_HOME/slurm      e.g. sbatch \$DSONAS_HOME/slurm/search.sbatch
                      (they run the dsonas of this module; see the comments at their top)
  Python tools:       \$DSONAS_HOME/utils      (lambda_analysis.py, study_plot.py, ...)
  documentation:      \$DSONAS_HOME/docs       (README.md, checkpoint-format.md)
  run-time libraries: Open MPI, HDF5 (serial), OpenBLAS, Boost.Program_options, libturbojpeg$( [ -z "$MODULE_DEPS" ] || echo "
  modules loaded first: $MODULE_DEPS")"
  put_text 644 "$MODULEFILES/dsonas/$VERSION" <<EOF
#%Module1.0
## dsonas $VERSION, written by make install (utils/install.sh); Environment Modules / Tcl.
proc ModulesHelp { } {
    puts stderr {$helptext}
}
module-whatis "dsonas $VERSION: DSO-NAS neural architecture search (CPU/CUDA, MPI)"
conflict dsonas
${deps_tcl}prepend-path PATH $PREFIX/bin
prepend-path MANPATH $PREFIX/share/man
setenv DSONAS_HOME $SHARE
EOF
  put_text 644 "$MODULEFILES/dsonas/$VERSION.lua" <<EOF
-- dsonas $VERSION, written by make install (utils/install.sh); Lmod.
help([[
$helptext
]])
whatis("Name: dsonas")
whatis("Version: $VERSION")
whatis("Description: DSO-NAS neural architecture search (CPU/CUDA, MPI)")
family("dsonas")
${deps_lua}prepend_path("PATH", "$PREFIX/bin")
prepend_path("MANPATH", "$PREFIX/share/man")
setenv("DSONAS_HOME", "$SHARE")
EOF
  written+=("$MANIFEST")
  printf '%s\n' "${written[@]}" | put_text 644 "$MANIFEST"
  echo "install: ${#written[@]} files under $DESTDIR$PREFIX$( [ "${MODULEFILES#"$PREFIX"/}" != "$MODULEFILES" ] || echo " and $DESTDIR$MODULEFILES")"
  echo "install: module use $MODULEFILES && module load dsonas/$VERSION   (or PATH=$PREFIX/bin:\$PATH)"
}

do_uninstall() {
  [ -f "$DESTDIR$MANIFEST" ] || die "$DESTDIR$MANIFEST: no install manifest (nothing installed under PREFIX=$PREFIX?)"
  local f n=0 dirs=()
  while IFS= read -r f; do
    case $f in "$PREFIX"/*|"$MODULEFILES"/*) ;; *) die "$DESTDIR$MANIFEST: '$f' lies outside PREFIX and MODULEFILES; not removing" ;; esac
    if [ -e "$DESTDIR$f" ] || [ -L "$DESTDIR$f" ]; then rm -f "$DESTDIR$f"; n=$((n + 1)); fi
    dirs+=("$(dirname "$f")")
  done <"$DESTDIR$MANIFEST"
  # the folders this left empty, deepest first; never PREFIX itself, nor MODULEFILES where
  # it lies outside PREFIX (a site's modulefile tree)
  local d stop=$PREFIX
  case $MODULEFILES in "$PREFIX"/*) ;; *) stop=$MODULEFILES ;; esac
  while IFS= read -r d; do
    while [ "$d" != "$PREFIX" ] && [ "$d" != "$stop" ] && [ "$d" != / ]; do
      rmdir "$DESTDIR$d" 2>/dev/null || break
      d=$(dirname "$d")
    done
  done < <(printf '%s\n' "${dirs[@]}" | sort -u | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
  echo "uninstall: $n files removed from $DESTDIR$PREFIX"
}

case $ACTION in
  install) [ $# -eq 3 ] || die "usage: install.sh install BIN MANPAGE"; do_install "$2" "$3" ;;
  uninstall) do_uninstall ;;
  *) die "usage: install.sh install BIN MANPAGE | install.sh uninstall" ;;
esac
