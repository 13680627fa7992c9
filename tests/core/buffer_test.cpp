#include "lockstep/core/buffer.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace lockstep {
namespace {

TEST(AlignedBuffer, AlignedAndMovable) {
  AlignedBuffer b(1000, /*prefault=*/true);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % AlignedBuffer::kAlignment, 0u);
  EXPECT_EQ(b.size(), 1000u);
  b.as<float>()[3] = 2.5f;
  AlignedBuffer c = std::move(b);
  EXPECT_EQ(c.as<float>()[3], 2.5f);
  EXPECT_EQ(b.data(), nullptr);
  c.reserve(10);  // never shrinks
  EXPECT_EQ(c.size(), 1000u);
  c.reserve(1 << 20, true);
  EXPECT_EQ(c.size(), size_t(1) << 20);
}

}  // namespace
}  // namespace lockstep
