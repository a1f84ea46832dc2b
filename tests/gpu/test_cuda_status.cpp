// test_cuda_status.cpp — host tests (no GPU needed) of what a cuDNN status
// means for the convolution path and of the cuDNN header/library version
// check (src/backend/cuda/cuda_status.hpp), and the record of the libraries
// this binary runs with (cuda_library_versions_json: loads cuDNN, cuBLAS and
// NCCL, which works without a GPU).
//
// DSONAS_VERSIONS_JSON=FILE: CudaLibraries.VersionsRecordedAndCompatible also
// writes the JSON there (tests/gpu/run_on_gpu.sh puts it in summary.json).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "dsonas/backend/cuda_probe.hpp"
#include "../../src/backend/cuda/cuda_status.hpp"
#include "dsonas/core/error.hpp"
#include "dsonas/dist/nccl.hpp"

namespace dsonas {
namespace {

using cuda::cudnn_outcome;
using cuda::CudnnOutcome;

TEST(CudnnStatus, CategoryIsTheThousands) {
  EXPECT_EQ(cuda::cudnn_category(0), 0);
  EXPECT_EQ(cuda::cudnn_category(2003), 2000);
  EXPECT_EQ(cuda::cudnn_category(3000), 3000);
  EXPECT_EQ(cuda::cudnn_category(3004), 3000);
  EXPECT_EQ(cuda::cudnn_category(3999), 3000);
  EXPECT_EQ(cuda::cudnn_category(4001), 4000);
}

TEST(CudnnStatus, EveryNotSupportedSubCodeTakesTheGemmPath) {
  EXPECT_EQ(cudnn_outcome(0), CudnnOutcome::Ran);
  // cuDNN 9.19: 3000 NOT_SUPPORTED and its sub-codes 3001 … 3014 (…_LAYOUT = 3004,
  // …_SHAPE = 3002, …_PADDING = 3011, …) — the old test `== NOT_SUPPORTED` saw only 3000
  for (int s = 3000; s <= cuda::kCudnnNotSupportedLast; ++s) EXPECT_EQ(cudnn_outcome(s), CudnnOutcome::UseGemm) << s;
  // sub-codes a later cuDNN may add in the category
  EXPECT_EQ(cudnn_outcome(3015), CudnnOutcome::UseGemm);
  EXPECT_EQ(cudnn_outcome(3999), CudnnOutcome::UseGemm);
  // a misaligned pointer is a refusal of this call, not a bug of ours
  EXPECT_EQ(cudnn_outcome(cuda::kCudnnBadParamMisalignedPointer), CudnnOutcome::UseGemm);
}

TEST(CudnnStatus, RealErrorsStillFail) {
  // BAD_PARAM other than misalignment is a wrong descriptor or workspace: ours to fix
  for (int s : {2000, 2001, 2002, 2004, 2005, 2006, 2007, 2008, 2012})
    EXPECT_EQ(cudnn_outcome(s), CudnnOutcome::Fail) << s;
  // not initialised, version mismatch, internal errors, execution failures
  for (int s : {1001, 1002, 1008, 4000, 4001, 4004, 5000, 5001, 5002})
    EXPECT_EQ(cudnn_outcome(s), CudnnOutcome::Fail) << s;
  // cuDNN 8's bare NOT_SUPPORTED (9) is no longer a refusal code: the binary
  // refuses a cuDNN 8 library at start (CudnnVersion below)
  EXPECT_EQ(cudnn_outcome(9), CudnnOutcome::Fail);
}

TEST(CudnnStatus, EnvironmentalRefusalsAreTheDriverRuntimeArchAndLibraryOnes) {
  for (int s = 3005; s <= 3009; ++s) EXPECT_TRUE(cuda::cudnn_refusal_is_environmental(s)) << s;
  for (int s : {3000, 3001, 3002, 3003, 3004, 3010, 3011, 3012, 3013, 3014, 2003})
    EXPECT_FALSE(cuda::cudnn_refusal_is_environmental(s)) << s;
}

TEST(CudnnVersion, PartsOfBothNumberings) {
  const cuda::LibVersion v9 = cuda::cudnn_version_parts(91900);
  EXPECT_EQ(v9.major, 9);
  EXPECT_EQ(v9.minor, 19);
  EXPECT_EQ(v9.patch, 0);
  EXPECT_EQ(cuda::version_str(cuda::cudnn_version_parts(90100)), "9.1.0");
  EXPECT_EQ(cuda::version_str(cuda::cudnn_version_parts(91002)), "9.10.2");
  EXPECT_EQ(cuda::version_str(cuda::cudnn_version_parts(8907)), "8.9.7");
  EXPECT_EQ(cuda::version_str(cuda::cudnn_version_parts(8100)), "8.1.0");
}

TEST(CudnnVersion, OlderMajorIsRefusedOnOneLine) {
  std::string line;
  EXPECT_EQ(cuda::check_cudnn_version(91900, 8907, &line), cuda::VersionVerdict::Refuse);
  EXPECT_NE(line.find("cuDNN library 8.9.7 is older than the cuDNN 9.19.0 headers"), std::string::npos) << line;
  EXPECT_NE(line.find("LD_LIBRARY_PATH"), std::string::npos) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_EQ(cuda::check_cudnn_version(91900, 0, &line), cuda::VersionVerdict::Refuse);
  EXPECT_NE(line.find("reports no version"), std::string::npos) << line;
}

TEST(CudnnVersion, SameMajorRunsOlderMinorWithANote) {
  std::string line;
  EXPECT_EQ(cuda::check_cudnn_version(91900, 91900, &line), cuda::VersionVerdict::Ok);
  EXPECT_TRUE(line.empty());
  EXPECT_EQ(cuda::check_cudnn_version(91900, 92001, &line), cuda::VersionVerdict::Ok);  // newer minor
  EXPECT_EQ(cuda::check_cudnn_version(91900, 91901, &line), cuda::VersionVerdict::Ok);
  EXPECT_EQ(cuda::check_cudnn_version(91900, 91800, &line), cuda::VersionVerdict::Note);  // the torch wheel may lag
  EXPECT_NE(line.find("9.18.0 is older than the headers (9.19.0)"), std::string::npos) << line;
  EXPECT_EQ(cuda::check_cudnn_version(91900, 100000, &line), cuda::VersionVerdict::Note);  // a newer major
  EXPECT_EQ(cuda::check_cudnn_version(91900, 90100, &line), cuda::VersionVerdict::Note);
}

// The libraries this gpu_tests binary loaded (no GPU needed): recorded, and
// accepted by the same check the backend runs at start.
TEST(CudaLibraries, VersionsRecordedAndCompatible) {
  const std::string j = cuda_library_versions_json(true, nccl_versions_json());
  std::cout << "[ VERSIONS ] " << j << std::endl;
  for (const char* k : {"\"cudnn\": {\"header\": ", "\"cublas\": {\"header\": ", "\"nccl\": {\"header\": ",
                        "\"cudart\": {\"header\": ", "\"driver_cuda_version\": "})
    EXPECT_NE(j.find(k), std::string::npos) << k << " missing in " << j;
  EXPECT_EQ(j.find('\n'), std::string::npos);
  if (const char* p = std::getenv("DSONAS_VERSIONS_JSON")) {
    std::ofstream f(p);
    f << j << "\n";
    EXPECT_TRUE(f.good()) << "cannot write " << p;
  }
  try {
    cuda_check_library_versions();
  } catch (const Error& e) {
    FAIL() << "the loaded cuDNN is refused: " << e.what();
  }
}

}  // namespace
}  // namespace dsonas
