#!/usr/bin/env bash
# install-deps.sh — installs every Debian package dsonas needs, idempotently.
# (clang, its runtime and LLVM's OpenMP are for make fuzz and make tsan only.)
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
  slurm-wlm munge
  clang libclang-rt-14-dev libomp-dev
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
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
echo "install-deps: done"
