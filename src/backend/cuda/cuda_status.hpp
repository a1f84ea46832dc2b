// cuda_status.hpp — what a cuDNN status means for dsonas, and whether the
// loaded cuDNN library can serve a binary built against these headers.  Pure
// functions of integers: no CUDA header, so tests/gpu/test_cuda_status.cpp runs
// them on the host (no GPU).  cuda_conv.cu and cuda_versions.cu, which see
// cudnn.h, static_assert that the constants below are cuDNN's.
//
// cuDNN 9 status codes (cudnn_graph.h): a category in the thousands plus a
// sub-code, CUDNN_STATUS_CATEGORY(s) = s / 1000 * 1000.  cuDNN 8 returned the
// bare categories (NOT_SUPPORTED = 9); cuDNN 9 returns e.g. 3004
// NOT_SUPPORTED_LAYOUT for a strided layout an engine refuses, 2003
// BAD_PARAM_MISALIGNED_POINTER for a tensor whose address an engine cannot use.
// Comparing with CUDNN_STATUS_NOT_SUPPORTED (3000) misses every sub-code.
#pragma once
#include <cstddef>
#include <string>

namespace dsonas {
namespace cuda {

constexpr int kCudnnSuccess = 0;
constexpr int kCudnnBadParam = 2000;                   // CUDNN_STATUS_BAD_PARAM
constexpr int kCudnnBadParamMisalignedPointer = 2003;  // CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER
constexpr int kCudnnNotSupported = 3000;               // CUDNN_STATUS_NOT_SUPPORTED
constexpr int kCudnnNotSupportedLast = 3014;           // …_INVALID_DYNAMIC_SHAPE, the last sub-code of 9.19

/// CUDNN_STATUS_CATEGORY of cudnn_graph.h.
constexpr int cudnn_category(int status) { return status / 1000 * 1000; }

/// What dsonas does after a cuDNN convolution call (or a descriptor/heuristics
/// query) returned `status`.
enum class CudnnOutcome {
  Ran,      ///< success
  UseGemm,  ///< a refusal of this shape/pointer: run it through im2col + cuBLAS instead
  Fail,     ///< a real error (bad argument of ours, internal, execution): stop with it
};

/// NOT_SUPPORTED (any sub-code) and BAD_PARAM_MISALIGNED_POINTER are
/// refusals: the im2col + cuBLAS path computes the same convolution for any
/// layout and alignment.  Every other BAD_PARAM is a bug of ours (wrong
/// descriptor, too small a workspace) and fails.
constexpr CudnnOutcome cudnn_outcome(int status) {
  return status == kCudnnSuccess                        ? CudnnOutcome::Ran
         : cudnn_category(status) == kCudnnNotSupported ? CudnnOutcome::UseGemm
         : status == kCudnnBadParamMisalignedPointer    ? CudnnOutcome::UseGemm
                                                        : CudnnOutcome::Fail;
}

/// Refusals that do not depend on the shape (an old driver or runtime for this
/// cuDNN, a GPU it has no kernels for, a missing sub-library): every shape
/// will fall back, so the log says it once even without DSONAS_CUDA_VERBOSE.
constexpr bool cudnn_refusal_is_environmental(int status) {
  return status >= 3005 && status <= 3009;  // INCOMPATIBLE_CUDA_DRIVER … SUBLIBRARY_UNAVAILABLE
}

/// The words every "cuDNN refuses this shape" error of the forced-cuDNN modes
/// (DSONAS_CUDA_CONV=cudnn, DSONAS_CUDA_DW=cudnn) contains; the tests skip on them.
constexpr const char* kCudnnRefusedTag = "cuDNN refuses this shape";

// ---- library versions ------------------------------------------------------------------

/// cudnnGetVersion() / CUDNN_VERSION: 9.x is M·10000 + m·100 + p (91900 =
/// 9.19.0), 8.x and older M·1000 + m·100 + p (8907 = 8.9.7).
struct LibVersion {
  int major = 0, minor = 0, patch = 0;
};
constexpr LibVersion cudnn_version_parts(long v) {
  return v >= 90000
             ? LibVersion{static_cast<int>(v / 10000), static_cast<int>(v / 100 % 100), static_cast<int>(v % 100)}
             : LibVersion{static_cast<int>(v / 1000), static_cast<int>(v / 100 % 10), static_cast<int>(v % 100)};
}
inline std::string version_str(const LibVersion& v) {
  return std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.patch);
}

enum class VersionVerdict {
  Ok,
  Note,    ///< runs, with a one-line remark (older minor, newer major)
  Refuse,  ///< stop with the line (exit 2)
};

/// Built against cuDNN headers `header` (CUDNN_VERSION), running with the
/// library `library` (cudnnGetVersion()).  A library of an older major version
/// than the headers is refused: the binary calls entry points and expects
/// status codes (the 9.x sub-codes above) that it lacks.  An older minor of the
/// same major runs with a note (cuDNN keeps the ABI within a major version, but
/// engines and fixes of the newer minor are missing); a newer library too.
/// *line: the one-line message (empty for Ok).
inline VersionVerdict check_cudnn_version(long header, long library, std::string* line) {
  const LibVersion h = cudnn_version_parts(header), l = cudnn_version_parts(library);
  const std::string hs = version_str(h), ls = version_str(l);
  line->clear();
  if (library <= 0) {
    *line = "cuDNN: the loaded library reports no version (cudnnGetVersion() = " + std::to_string(library) +
            "); this dsonas was built against cuDNN " + hs;
    return VersionVerdict::Refuse;
  }
  if (l.major < h.major) {
    *line = "cuDNN library " + ls + " is older than the cuDNN " + hs + " headers this dsonas was built with (major " +
            std::to_string(h.major) + " needed): put a cuDNN " + std::to_string(h.major) +
            ".x library first on LD_LIBRARY_PATH (e.g. the nvidia-cudnn-cu* wheel's lib folder), or rebuild "
            "against this machine's cuDNN";
    return VersionVerdict::Refuse;
  }
  if (l.major > h.major) {
    *line = "cuDNN library " + ls + " is of a newer major version than the headers (" + hs +
            "): it runs if the library keeps the old entry points";
    return VersionVerdict::Note;
  }
  if (l.minor < h.minor) {
    *line = "cuDNN library " + ls + " is older than the headers (" + hs +
            "): same major version, so it runs, without the newer minor's engines and fixes";
    return VersionVerdict::Note;
  }
  return VersionVerdict::Ok;
}

}  // namespace cuda
}  // namespace dsonas
