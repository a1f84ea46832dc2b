// cuda_versions.cu — which CUDA libraries this binary was built against and
// which ones it runs with (cuda_probe.hpp).  The binary is built on the
// development machine against its headers (CUDA 13, cuDNN 9.19, NCCL 2.28)
// and runs on the GPU machine against the libraries of its Python wheels:
// the run records both, and refuses a cuDNN older than the headers' major.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>

#include "dsonas/backend/cuda_probe.hpp"
#include "cuda_status.hpp"
#include "dsonas/core/error.hpp"

namespace dsonas {

namespace {

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o + "\"";
}

const char* verdict_name(cuda::VersionVerdict v) {
  return v == cuda::VersionVerdict::Ok ? "ok" : v == cuda::VersionVerdict::Note ? "note" : "refuse";
}

/// cublasGetProperty's parts as CUBLAS_VERSION (M·10000 + m·100 + p); 0 on failure.
long cublas_library_version() {
  int ma = 0, mi = 0, pa = 0;
  if (cublasGetProperty(MAJOR_VERSION, &ma) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &mi) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &pa) != CUBLAS_STATUS_SUCCESS)
    return 0;
  return ma * 10000L + mi * 100L + pa;
}

}  // namespace

std::string cuda_library_versions_json(bool with_gpu, const std::string& nccl_json) {
  std::ostringstream o;
  const long cudnn_lib = static_cast<long>(cudnnGetVersion());
  std::string line;
  const cuda::VersionVerdict v = cuda::check_cudnn_version(CUDNN_VERSION, cudnn_lib, &line);
  o << "{\"cudnn\": {\"header\": " << CUDNN_VERSION << ", \"library\": " << cudnn_lib
    << ", \"library_str\": " << json_str(cuda::version_str(cuda::cudnn_version_parts(cudnn_lib)))
    << ", \"cudart_of_library\": " << cudnnGetCudartVersion() << ", \"verdict\": " << json_str(verdict_name(v))
    << ", \"line\": " << json_str(line) << "}";
  o << ", \"cublas\": {\"header\": " << CUBLAS_VERSION << ", \"library\": " << cublas_library_version()
    << ", \"library_via_handle\": ";
  int ndev = 0;
  const bool gpu = with_gpu && cudaGetDeviceCount(&ndev) == cudaSuccess && ndev > 0;
  cudaGetLastError();
  cublasHandle_t h = nullptr;
  int hv = 0;
  if (gpu && cublasCreate(&h) == CUBLAS_STATUS_SUCCESS && cublasGetVersion(h, &hv) == CUBLAS_STATUS_SUCCESS)
    o << hv;
  else
    o << "null";
  if (h) cublasDestroy(h);
  o << "}";
  o << ", \"nccl\": " << nccl_json;
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  cudaGetLastError();
  o << ", \"cudart\": {\"header\": " << CUDART_VERSION << ", \"runtime\": " << rt << "}";
  o << ", \"driver_cuda_version\": " << drv << ", \"devices\": " << (gpu ? ndev : 0) << "}";
  return o.str();
}

void cuda_check_library_versions() {
  static std::once_flag once;
  static std::string refuse;
  std::call_once(once, [] {
    std::string line;
    const cuda::VersionVerdict v =
        cuda::check_cudnn_version(CUDNN_VERSION, static_cast<long>(cudnnGetVersion()), &line);
    if (v == cuda::VersionVerdict::Refuse)
      refuse = line;
    else if (v == cuda::VersionVerdict::Note)
      std::fprintf(stderr, "dsonas: note: %s\n", line.c_str());
  });
  if (!refuse.empty()) fail_usage(refuse);
}

}  // namespace dsonas
