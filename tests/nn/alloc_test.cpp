// A training step at a fixed batch size allocates nothing once the first step has sized the
// activations: counted by replacing the global operator new (and posix_memalign, with which
// oneDNN allocates its buffers) in this test binary.
#include <gtest/gtest.h>

#include <malloc.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <new>

#include "grad_check.h"
#include "lockstep/nn/layers.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"

namespace {
constexpr std::size_t kSmall = 256;  // bytes: bookkeeping, not a buffer
std::atomic<bool> g_counting{false};
std::atomic<long> g_small{0}, g_large{0};

void count(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) (n <= kSmall ? g_small : g_large).fetch_add(1);
}
}  // namespace

void* operator new(std::size_t n) {
  count(n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

extern "C" int posix_memalign(void** out, std::size_t align, std::size_t n) {
  count(n);
  void* p = memalign(align, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}

namespace lockstep::nn {
namespace {

struct Counts {
  long small, large;
};

// Allocations during three training steps after the first.
Counts steady_state_allocations(const std::string& name) {
  const bool gpt = name == "char-gpt";
  auto m = gpt ? make_char_gpt({.vocab = 11, .block = 8, .dim = 16, .heads = 2, .layers = 2}, 1) : make_model(name, 1);
  Sgd opt(*m, {.lr = 0.01f, .momentum = 0.9f});
  CrossEntropyLoss ce;
  Tensor x = gpt ? Tensor({4, 8}) : testing::random_tensor({8, 1, 28, 28}, 1, 0.0f, 1.0f);
  std::vector<int32_t> y(gpt ? 32 : 8, 3);
  auto step = [&] {
    m->zero_grad();
    ce.forward(m->forward(x), y);
    m->backward(ce.backward());
    opt.step();
  };
  step();
  g_small = 0;
  g_large = 0;
  g_counting = true;
  for (int i = 0; i < 3; ++i) step();
  g_counting = false;
  return {g_small.load(), g_large.load()};
}

TEST(NoAllocation, TrainingStepsAfterTheFirstAllocateNothing) {
  ScopedConvImpl use(ConvImpl::kIm2col);
  for (const char* name : {"fmnist-mlp", "fmnist-cnn", "char-gpt"}) {
    const Counts c = steady_state_allocations(name);
    EXPECT_EQ(c.small + c.large, 0) << name;
  }
}

// oneDNN's execute() keeps a few small maps per call (~40 of 32-120 bytes per convolution
// step); no buffer may be allocated per step.
TEST(NoAllocation, OneDnnConvolutionsAllocateNoBuffers) {
  if (!have_dnnl_conv()) GTEST_SKIP() << "built without oneDNN";
  ScopedConvImpl use(ConvImpl::kDnnl);
  const Counts c = steady_state_allocations("fmnist-cnn");
  EXPECT_EQ(c.large, 0);
  EXPECT_LE(c.small, 3 * 2 * 100) << "3 steps, 2 convolutions";
}

}  // namespace
}  // namespace lockstep::nn
