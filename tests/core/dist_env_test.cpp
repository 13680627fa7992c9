#include "lockstep/core/dist_env.h"

#include <gtest/gtest.h>

#include <map>

#include "lockstep/core/error.h"

namespace lockstep {
namespace {

EnvLookup fake(std::map<std::string, std::string> vars) {
  return [vars](std::string_view n) -> std::optional<std::string> {
    auto it = vars.find(std::string(n));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string error_of(const EnvLookup& l) {
  try {
    read_dist_env(l);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(DistEnv, DefaultsToSingleProcess) {
  auto e = read_dist_env(fake({}));
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.source, "default");
  EXPECT_EQ(e.master_addr, "127.0.0.1");
}

TEST(DistEnv, Torchrun) {
  auto e = read_dist_env(fake({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                               {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "10.1.2.3"},
                               {"MASTER_PORT", "1234"}, {"GROUP_RANK", "1"}}));
  EXPECT_EQ(e.source, "torchrun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.node_rank, 1);
  EXPECT_EQ(e.master_addr, "10.1.2.3");
  EXPECT_EQ(e.master_port, 1234);
}

TEST(DistEnv, OpenMpiAndSlurm) {
  auto m = read_dist_env(fake({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                               {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                               {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  EXPECT_EQ(m.source, "openmpi");
  EXPECT_EQ(m.rank, 2);
  EXPECT_EQ(m.local_world_size, 2);
  auto s = read_dist_env(fake({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"},
                               {"SLURM_LOCALID", "1"}, {"SLURM_NTASKS_PER_NODE", "2(x2)"},
                               {"SLURM_NODEID", "1"}}));
  EXPECT_EQ(s.source, "slurm");
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.local_world_size, 2);
  EXPECT_EQ(s.node_rank, 1);
}

TEST(DistEnv, TorchrunWinsOverSlurm) {
  auto e = read_dist_env(fake({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"},
                               {"SLURM_NTASKS", "1"}}));
  EXPECT_EQ(e.source, "torchrun");
  EXPECT_EQ(e.rank, 1);
}

TEST(DistEnv, ErrorsNameTheVariable) {
  EXPECT_NE(error_of(fake({{"RANK", "1"}})).find("WORLD_SIZE is missing"), std::string::npos);
  EXPECT_NE(error_of(fake({{"RANK", "x"}, {"WORLD_SIZE", "2"}})).find("RANK='x'"),
            std::string::npos);
  EXPECT_NE(error_of(fake({{"RANK", "2"}, {"WORLD_SIZE", "2"}})).find("must be less than"),
            std::string::npos);
  EXPECT_NE(error_of(fake({{"WORLD_SIZE", "2"}})).find("RANK is missing"), std::string::npos);
  EXPECT_NE(error_of(fake({{"MASTER_PORT", "70000"}})).find("MASTER_PORT"), std::string::npos);
  EXPECT_NE(error_of(fake({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "3"},
                           {"LOCAL_WORLD_SIZE", "2"}}))
                .find("LOCAL_RANK=3"),
            std::string::npos);
}

}  // namespace
}  // namespace lockstep
