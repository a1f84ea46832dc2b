#!/usr/bin/env bash
# make_bundle.sh — build, on the development machine (no GPU needed), what
# tests/gpu/run_on_gpu.sh runs on the GPU machine.
#
# The GPU machine has nvcc, the CUDA libraries and PyTorch with cuDNN/NCCL
# wheels, but no Boost, HDF5, OpenBLAS, libjpeg-turbo, GoogleTest or MPI and no
# way to install them (shared/docs/MACHINE.md).  So the binaries are built here
# and carried, with the shared libraries they need that are not part of the
# CUDA stack:
#
#   dsonas-gpu/bin/dsonas, bin/gpu_tests,  (USE_MPI=0, OpenBLAS and the CUDA
#   bin/loader_bench
#                                           runtime linked statically, stripped)
#   dsonas-gpu/lib/*.so*                   (Boost.PO, HDF5 and its dependencies,
#                                           turbojpeg, …)
#   dsonas-gpu/lib/fallback/*.so*          (libstdc++, libgcc_s, libgomp: used
#                                           only if the machine's are missing)
#   dsonas-gpu/MANIFEST.txt                (what was built, from what: the commit,
#                                           whether the tree was dirty, the md5 of
#                                           every source; tests/gpu/bundle_stamp.sh)
#
# packed as build/gpu-bundle/bundle.tar.xz (~10 MB; unpacked ~80 MB, more than
# the device tool carries) next to a copy of MANIFEST.txt and the Fashion-MNIST
# files (build/gpu-bundle/fashion-mnist, 30 MB) for the short searches.
#
# cuDNN, cuBLAS and NCCL are NOT carried: the GPU machine's wheels provide
# them (run_on_gpu.sh puts their folders on LD_LIBRARY_PATH).
#
# Usage:  bash tests/gpu/make_bundle.sh          (JOBS=2 by default; ~10 min on 2 cores)
# Then, here, that the bundle matches the tree (no GPU time spent):
#   bash tests/gpu/run_on_gpu.sh --check-bundle
# and with the device tool (the script's budget is 420 s; see its header):
#   run(command="DSONAS_HEAD=<git rev-parse HEAD, run here> bash tests/gpu/run_on_gpu.sh",
#       carry=["build/gpu-bundle"], timeout_s=480)
# (the device's copy of the tree may lack .git: the commit written into the
# command lets run_on_gpu.sh compare it there too; the sources are compared by
# content either way).
# Multi-rank NCCL is not bundled (USE_MPI=0, no mpirun): the GPU machine has one
# GPU and NCCL refuses two ranks on one device ("Duplicate GPU detected",
# ncclInvalidUsage, NCCL >= 2.5; docs/design-notes.md), so a 2-rank run there
# could only fail; the reducer's multi-rank logic is tested on the CPU instead.
# build/ is git-ignored, so the bundle travels only because `carry` names it.
set -euo pipefail
cd "$(dirname "$0")/../.."

OBJ=${BUNDLE_BUILD:-build/gpu-bundle-obj}
STAGE=${BUNDLE_STAGE:-build/gpu-bundle-stage}
DEST=${BUNDLE_DIR:-build/gpu-bundle}
JOBS=${JOBS:-2}
ARCH=${CUDA_ARCH:-90}
OPENBLAS_A=${OPENBLAS_A:-$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a 2>/dev/null || true)}

if [ -n "$OPENBLAS_A" ]; then
  BLAS="$OPENBLAS_A -lgfortran"
else
  echo "make_bundle: no static OpenBLAS found; linking it dynamically (the bundle grows by ~35 MB)" >&2
  BLAS="-lopenblas"
fi

# the sources the bundle is built from (commit, dirty, md5 of every C++/CUDA
# file): run_on_gpu.sh refuses the bundle when the tree it runs in differs
STAMP=$(bash tests/gpu/bundle_stamp.sh write) || exit 2
echo "make_bundle: building $OBJ (sm_$ARCH, USE_MPI=0, static OpenBLAS and cudart) with -j$JOBS"
make --no-print-directory BUILD="$OBJ" USE_CUDA=1 USE_MPI=0 CUDA_ARCH="$ARCH" EXTRA_CXXFLAGS=-g0 \
  OPENBLAS_LIB="$BLAS" CUDART_LIB="-lcudart_static -ldl -lrt" -j"$JOBS" "$OBJ/dsonas" "$OBJ/tests/gpu_tests" \
  "$OBJ/tests/loader_bench"

if [ "$(bash tests/gpu/bundle_stamp.sh write)" != "$STAMP" ]; then
  echo "make_bundle: the sources changed while the bundle was being built; run it again" >&2
  exit 2
fi

rm -rf "$STAGE"
STAGE_ROOT=$STAGE
DEST_FINAL=$DEST
DEST=$STAGE/dsonas-gpu
mkdir -p "$DEST/bin" "$DEST/lib/fallback"
for b in dsonas tests/gpu_tests tests/loader_bench; do
  cp "$OBJ/$b" "$DEST/bin/"
  strip "$DEST/bin/$(basename "$b")"
done

# Shared libraries: everything ldd resolves except glibc's own and the CUDA
# stack (cuDNN, cuBLAS(Lt), cudart, NCCL come from the GPU machine's wheels).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libresolv\.so|libutil\.so|libcudnn|libcublas|libcudart|libnccl|libcuda\.so|libnvidia)'
fallback='^(libstdc\+\+|libgcc_s|libgomp)'
for b in "$DEST"/bin/*; do
  ldd "$b" | awk '/=>/ && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ "$name" =~ $skip ]]; then continue; fi
  if [[ "$name" =~ $fallback ]]; then
    cp -L "$path" "$DEST/lib/fallback/$name"
  else
    cp -L "$path" "$DEST/lib/$name"
  fi
done

{
  echo "dsonas GPU bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "CUDA_ARCH=sm_$ARCH; USE_MPI=0; OpenBLAS: ${OPENBLAS_A:-dynamic}; cudart static"
  "${NVCC:-/usr/local/cuda/bin/nvcc}" --version | tail -2
  grep -h "define CUDNN_M\|define CUDNN_PATCH" /usr/local/cuda/include/cudnn_version.h 2>/dev/null || true
  echo "needs from the GPU machine: $(for b in "$DEST"/bin/*; do ldd "$b"; done | awk '{print $1}' | grep -E 'libcudnn|libcublas|libnccl' | sort -u | tr '\n' ' ')"
  echo "$STAMP"
} > "$DEST/MANIFEST.txt"

du -sh "$DEST"
rm -rf "$DEST_FINAL"
mkdir -p "$DEST_FINAL"
echo "make_bundle: packing (xz -9, about a minute)"
tar -C "$STAGE_ROOT" -cf - dsonas-gpu | xz -T"$JOBS" -9 > "$DEST_FINAL/bundle.tar.xz"
cp "$DEST/MANIFEST.txt" "$DEST_FINAL/MANIFEST.txt"
# Fashion-MNIST (30 MB, already gzip-compressed) for the short searches per
# --gpu-math; beside the tarball, so run_on_gpu.sh reads it in place
FM=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ -f "$FM/train-images-idx3-ubyte.gz" ]; then
  mkdir -p "$DEST_FINAL/fashion-mnist"
  cp "$FM"/*-ubyte.gz "$DEST_FINAL/fashion-mnist/"
else
  echo "make_bundle: no Fashion-MNIST at $FM (apt-get install dataset-fashion-mnist): the GPU run skips its short searches" >&2
fi
rm -rf "$STAGE_ROOT"
ls -la "$DEST_FINAL"
echo "make_bundle: done -> $DEST_FINAL (carry it: build/ is git-ignored)"
