// The large case (>= 64 MiB per rank), kept apart and labelled `slow`: all-reduce of 16 Mi
// float32 (and bfloat16 over shm) on 2 and 3 ranks, checked against the serial reference.
#include <gtest/gtest.h>

#include "comm_test_util.h"

namespace lockstep::comm {
namespace {

using testing::make_input;
using testing::reference;

struct Large {
  std::string transport;
  int world;
  DType dtype;
};

class LargeTest : public ::testing::TestWithParam<Large> {};

TEST_P(LargeTest, AllreduceSixtyFourMiB) {
  const auto& p = GetParam();
  const size_t count = (64u << 20) / dtype_size(DType::f32);  // 64 MiB of f32; 32 MiB of bf16
  Options o = testing::test_options(p.transport);
  o.backend = nullptr;  // production staging size
  testing::run_ranks(p.world, [&](int rank, store::Store& store) {
    auto pg = ProcessGroup::create("native", store, rank, p.world, o);
    auto buf = make_input(rank, count, p.dtype, ReduceOp::sum);
    pg->allreduce(buf.data(), count, p.dtype, ReduceOp::sum).wait();
    size_t wrong = 0;
    for (size_t i = 0; i < count; ++i)
      wrong += load_as_double(buf.data(), p.dtype, i) != reference(p.world, i, p.dtype, ReduceOp::sum);
    EXPECT_EQ(wrong, 0u);
  });
}

INSTANTIATE_TEST_SUITE_P(Native, LargeTest,
                         ::testing::Values(Large{"shm", 2, DType::f32}, Large{"shm", 3, DType::bf16},
                                           Large{"tcp", 2, DType::f32}, Large{"tcp", 3, DType::f32}),
                         [](const auto& info) {
                           return info.param.transport + "_w" + std::to_string(info.param.world) +
                                  "_" + std::string(dtype_name(info.param.dtype));
                         });

}  // namespace
}  // namespace lockstep::comm
