#!/usr/bin/env bash
# install-deps.sh — installs every Debian package dsonas needs, idempotently.
# (clang, its runtime and LLVM's OpenMP are for make fuzz and make tsan only; lmod,
# help2man and tcl for make install, its man page and the modulefile tests; python3-onnx
# and python3-opencv for dsonas export and its test, which runs the ONNX file in OpenCV.)
#
# Environment Modules (the other module system make install writes a modulefile for)
# conflicts with lmod as a Debian package, so its .deb is unpacked, not installed, into
# /opt/dsonas-deps/environment-modules (EM_ROOT): tests/e2e/install.sh runs its
# modulecmd.tcl with tclsh, exactly as the package's own `module` function does.
#
# Checks each package with dpkg-query first and calls apt-get only for what is
# missing, so a second run is a no-op that takes well under a second.  For
# Debian/Ubuntu machines with root only; on a cluster, point the Makefile's
# variables (MPICXX, CUDA_HOME, HDF5_DIR, BOOST_DIR, DNNL_DIR, ...) at modules.
set -euo pipefail

PKGS=(
  build-essential pkg-config zlib1g-dev
  libgtest-dev
  libboost-program-options-dev
  libopenblas-dev libopenblas0-pthread
  libopenmpi-dev openmpi-bin
  libhdf5-dev
  libturbojpeg0-dev
  python3-pil
  dataset-fashion-mnist
  graphviz
  python3-torch python3-numpy python3-h5py python3-matplotlib python3-pytest python3-scipy
  python3-onnx python3-opencv
  slurm-wlm munge
  clang libclang-rt-14-dev libomp-dev clang-format clang-tidy
  lmod help2man tcl
)
EM_ROOT=${EM_ROOT:-/opt/dsonas-deps/environment-modules}

# unpack_environment_modules: Debian's environment-modules .deb into EM_ROOT (idempotent)
unpack_environment_modules() {
  [ -f "$EM_ROOT/usr/lib/x86_64-linux-gnu/modulecmd.tcl" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: $EM_ROOT missing and not root (tests/e2e/install.sh will say so)" >&2
    return 0
  fi
  local tmp; tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download environment-modules >/dev/null 2>&1 ||
                  { apt-get update -qq && apt-get download environment-modules >/dev/null; }; }) ||
    { echo "install-deps: apt-get download environment-modules failed" >&2; rm -rf "$tmp"; exit 1; }
  mkdir -p "$EM_ROOT"
  dpkg-deb -x "$tmp"/environment-modules_*.deb "$EM_ROOT"
  rm -rf "$tmp"
  echo "install-deps: environment-modules unpacked into $EM_ROOT"
}

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  unpack_environment_modules
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: not root; install them (or load the equivalent modules) and re-run" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
unpack_environment_modules
echo "install-deps: done"
