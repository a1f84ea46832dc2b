// test_device_choice.cpp — the GPU of a rank, chosen from the launcher's
// node-local rank before MPI_Init (backend/device_choice.hpp), on fake device
// counts and fake environments: no GPU, no MPI needed.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "dsonas/backend/device_choice.hpp"

namespace dsonas {
namespace {

using Env = std::map<std::string, std::string>;

LaunchLocalRank from(const Env& e) {
  return local_rank_from_env([&](const char* k) -> const char* {
    auto it = e.find(k);
    return it == e.end() ? nullptr : it->second.c_str();
  });
}

const VisibleDevices kAll{};  // CUDA_VISIBLE_DEVICES unset

TEST(DeviceChoice, OneGpuManyRanksAllTakeDeviceZeroWithANote) {
  for (int r = 0; r < 4; ++r) {
    const Env e{{"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(r)}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}};
    const DeviceChoice c = choose_cuda_device(from(e), -1, 0, 1, "", kAll);
    EXPECT_TRUE(c.error.empty()) << c.error;
    EXPECT_FALSE(c.deferred);
    EXPECT_EQ(c.device, 0);
    EXPECT_EQ(c.local_rank, r);
    EXPECT_EQ(c.ranks_per_gpu, 4);
    EXPECT_EQ(c.source, "OMPI_COMM_WORLD_LOCAL_RANK");
    EXPECT_NE(c.note.find("Duplicate GPU detected"), std::string::npos) << c.note;
    EXPECT_NE(c.note.find("at most 1 rank per node"), std::string::npos) << c.note;
  }
}

TEST(DeviceChoice, FourGpusFourRanksOneEach) {
  for (int r = 0; r < 4; ++r) {
    const Env e{{"SLURM_LOCALID", std::to_string(r)}};
    const DeviceChoice c = choose_cuda_device(from(e), -1, 0, 4, "", kAll);
    EXPECT_TRUE(c.error.empty()) << c.error;
    EXPECT_EQ(c.device, r);
    EXPECT_EQ(c.ranks_per_gpu, 1);
    EXPECT_TRUE(c.note.empty()) << c.note;
    EXPECT_EQ(c.source, "SLURM_LOCALID");
  }
}

TEST(DeviceChoice, EightRanksFourGpusWrapAroundAndSayTwoPerGpu) {
  for (int r = 0; r < 8; ++r) {
    const Env e{{"MPI_LOCALRANKID", std::to_string(r)}, {"MPI_LOCALNRANKS", "8"}};
    const DeviceChoice c = choose_cuda_device(from(e), -1, 0, 4, "", kAll);
    EXPECT_TRUE(c.error.empty()) << c.error;
    EXPECT_EQ(c.device, r % 4);
    EXPECT_EQ(c.ranks_per_gpu, 2);
    EXPECT_NE(c.note.find("8 ranks on this node share 4 visible GPUs"), std::string::npos) << c.note;
  }
}

TEST(DeviceChoice, NoLauncherVariableDefersToMpiSharedCommunicator) {
  const LaunchLocalRank none = from(Env{});
  EXPECT_EQ(none.rank, -1);
  EXPECT_TRUE(none.var.empty());
  const DeviceChoice early = choose_cuda_device(none, -1, 0, 4, "", kAll);
  EXPECT_TRUE(early.deferred);
  EXPECT_EQ(early.device, -1);
  EXPECT_TRUE(early.error.empty());
  // after MPI_Init: the shared communicator's local rank, as before this change
  for (int r = 0; r < 6; ++r) {
    const DeviceChoice late = choose_cuda_device(none, r, 6, 4, "", kAll);
    EXPECT_FALSE(late.deferred);
    EXPECT_EQ(late.device, r % 4);
    EXPECT_EQ(late.source, "MPI shared communicator");
    EXPECT_EQ(late.ranks_per_gpu, 2);
  }
}

TEST(DeviceChoice, MpiOverrulesADisagreeingInheritedVariable) {
  // an mpirun-less launch inside a batch step: SLURM_LOCALID=0 inherited, MPI says 3
  const Env e{{"SLURM_LOCALID", "0"}};
  const DeviceChoice agree = choose_cuda_device(from(e), 0, 4, 4, "", kAll);
  EXPECT_EQ(agree.device, 0);
  EXPECT_FALSE(agree.env_overruled);
  EXPECT_TRUE(agree.note.empty()) << agree.note;
  const DeviceChoice c = choose_cuda_device(from(e), 3, 4, 4, "", kAll);
  EXPECT_EQ(c.device, 3);
  EXPECT_TRUE(c.env_overruled);
  EXPECT_NE(c.note.find("SLURM_LOCALID=0 disagrees with MPI's node-local rank 3"), std::string::npos) << c.note;
}

TEST(DeviceChoice, MpiLauncherVariablesWinOverSlurmsInheritedOne) {
  // mpirun inside an sbatch allocation: the batch step's SLURM_LOCALID=0 is inherited
  const Env e{{"SLURM_LOCALID", "0"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}, {"PMI_LOCAL_RANK", "2"}};
  const LaunchLocalRank l = from(e);
  EXPECT_EQ(l.var, "OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(l.rank, 3);
  EXPECT_EQ(from(Env{{"SLURM_LOCALID", "1"}, {"PMI_LOCAL_RANK", "2"}}).var, "PMI_LOCAL_RANK");
  EXPECT_EQ(from(Env{{"MV2_COMM_WORLD_LOCAL_RANK", "5"}, {"MPI_LOCALRANKID", "2"}}).rank, 5);
  // every variable of the list is read
  for (const auto& v : local_rank_variables()) {
    const LaunchLocalRank r = from(Env{{v.first, "7"}});
    EXPECT_EQ(r.rank, 7) << v.first;
    EXPECT_EQ(r.var, v.first);
  }
}

TEST(DeviceChoice, BadLauncherValueIsRefusedNamingTheVariable) {
  for (const char* bad : {"", "x", "-1", "2a", " 1"}) {
    const LaunchLocalRank l = from(Env{{"OMPI_COMM_WORLD_LOCAL_RANK", bad}});
    EXPECT_NE(l.error.find("OMPI_COMM_WORLD_LOCAL_RANK='"), std::string::npos) << bad;
    const DeviceChoice c = choose_cuda_device(l, -1, 0, 2, "", kAll);
    EXPECT_EQ(c.device, -1);
    EXPECT_EQ(c.error, l.error);
    // also where there is no GPU: the variable is named, not the GPU
    EXPECT_EQ(choose_cuda_device(l, -1, 0, 0, "cudaErrorNoDevice", kAll).error, l.error);
    EXPECT_EQ(c.error.find('\n'), std::string::npos);
  }
  // a bad size is ignored, the rank still counts
  const LaunchLocalRank l = from(Env{{"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "many"}});
  EXPECT_TRUE(l.error.empty());
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.size, 0);
}

TEST(DeviceChoice, NoVisibleDeviceIsAnErrorSayingWhy) {
  const Env e{{"OMPI_COMM_WORLD_LOCAL_RANK", "0"}};
  const DeviceChoice c = choose_cuda_device(from(e), -1, 0, 0, "cudaErrorNoDevice", parse_visible_devices(""));
  EXPECT_EQ(c.device, -1);
  EXPECT_NE(c.error.find("no usable GPU (cudaErrorNoDevice; CUDA_VISIBLE_DEVICES lists no valid device)"),
            std::string::npos)
      << c.error;
  // also without a launcher variable: no GPU is an error at once, not deferred
  const DeviceChoice d = choose_cuda_device(from(Env{}), -1, 0, 0, "", kAll);
  EXPECT_FALSE(d.deferred);
  EXPECT_NE(d.error.find("no usable GPU"), std::string::npos);
}

TEST(DeviceChoice, CudaVisibleDevicesIsParsedAsTheRuntimeDoes) {
  EXPECT_FALSE(parse_visible_devices(nullptr).set);
  const VisibleDevices empty = parse_visible_devices("");
  EXPECT_TRUE(empty.set);
  EXPECT_TRUE(empty.ids.empty());
  EXPECT_EQ(parse_visible_devices("2,3").ids, (std::vector<std::string>{"2", "3"}));
  // the runtime stops at the first invalid entry
  EXPECT_EQ(parse_visible_devices("0,2,-1,1").ids, (std::vector<std::string>{"0", "2"}));
  EXPECT_EQ(parse_visible_devices("1,,2").ids, (std::vector<std::string>{"1"}));
  EXPECT_EQ(parse_visible_devices("GPU-8f3a,MIG-1c2d/1/0").ids, (std::vector<std::string>{"GPU-8f3a", "MIG-1c2d/1/0"}));
  EXPECT_TRUE(parse_visible_devices("NoDevFiles").ids.empty());
}

TEST(DeviceChoice, IndexIsIntoTheVisibleListAndNamesThePhysicalDevice) {
  // CUDA_VISIBLE_DEVICES=2,3 shared by 2 ranks: indices 0 and 1 = physical 2 and 3
  const VisibleDevices cvd = parse_visible_devices("2,3");
  for (int r = 0; r < 2; ++r) {
    const DeviceChoice c =
        choose_cuda_device(from(Env{{"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(r)}}), -1, 0, 2, "", cvd);
    EXPECT_EQ(c.device, r);
    EXPECT_EQ(c.physical, r == 0 ? "2" : "3");
  }
  // a launcher binding one GPU per task (CUDA_VISIBLE_DEVICES=<one id>): index 0 whatever the local rank
  const DeviceChoice b =
      choose_cuda_device(from(Env{{"SLURM_LOCALID", "3"}}), -1, 0, 1, "", parse_visible_devices("3"));
  EXPECT_EQ(b.device, 0);
  EXPECT_EQ(b.physical, "3");
  EXPECT_TRUE(b.note.empty()) << b.note;
  // the variable unset: no physical name
  EXPECT_TRUE(choose_cuda_device(from(Env{{"SLURM_LOCALID", "1"}}), -1, 0, 2, "", kAll).physical.empty());
}

TEST(DeviceChoice, FirstSharedDeviceFindsTheDuplicatePair) {
  EXPECT_EQ(first_shared_device({}), std::make_pair(-1, -1));
  EXPECT_EQ(first_shared_device({7}), std::make_pair(-1, -1));
  EXPECT_EQ(first_shared_device({1, 2, 3, 4}), std::make_pair(-1, -1));
  EXPECT_EQ(first_shared_device({5, 5}), std::make_pair(0, 1));
  EXPECT_EQ(first_shared_device({1, 2, 3, 2, 1}), std::make_pair(1, 3));
}

}  // namespace
}  // namespace dsonas
