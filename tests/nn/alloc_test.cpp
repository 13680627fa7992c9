// A training step at a fixed batch size allocates nothing once the first step has sized the
// activations: counted by replacing the global operator new in this test binary.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "grad_check.h"
#include "lockstep/nn/loss.h"
#include "lockstep/nn/models.h"
#include "lockstep/nn/optim.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace lockstep::nn {
namespace {

TEST(NoAllocation, TrainingStepsAfterTheFirstAllocateNothing) {
  for (const char* name : {"fmnist-mlp", "fmnist-cnn", "char-gpt"}) {
    const bool gpt = std::string(name) == "char-gpt";
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
    g_allocations = 0;
    g_counting = true;
    for (int i = 0; i < 3; ++i) step();
    g_counting = false;
    EXPECT_EQ(g_allocations.load(), 0) << name;
  }
}

}  // namespace
}  // namespace lockstep::nn
