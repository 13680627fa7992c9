// Everything that differs between the LibTorch versions lockstep::torch builds against
// (Debian's 1.13 on the CPU machines, 2.x on the GPU machine), in one place. Included by
// ddp.cpp and sampler.h; it needs LibTorch's autograd internals, which PyTorch's own c10d
// reducer uses the same way (grad accumulator post hooks, the engine's end-of-backward
// callbacks), and names the optional type torch::data's samplers take and return.
#pragma once

#include <functional>
#include <memory>

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/types.h>
#include <torch/version.h>

namespace lockstep::torch::compat {

// torch::data's Sampler interface: c10::optional in 1.13, std::optional (which torch::optional
// names too) in 2.x.
template <class T>
using optional = ::torch::optional<T>;
inline constexpr auto nullopt = ::torch::nullopt;

using Node = ::torch::autograd::Node;
using variable_list = ::torch::autograd::variable_list;

// The AccumulateGrad node of a leaf tensor (created if needed); the tensor only holds it
// weakly, so the caller keeps the returned pointer for as long as its hook must fire.
inline std::shared_ptr<Node> grad_accumulator(const at::Tensor& leaf) {
  return ::torch::autograd::impl::grad_accumulator(leaf);
}

// Runs `fn` after `node` ran, i.e. for an AccumulateGrad node once the gradient has been
// accumulated into tensor.grad(). Returns a key for remove_post_hook.
inline uintptr_t add_post_hook(Node& node, std::function<void()> fn) {
  return node.add_post_hook(std::make_unique<::torch::autograd::utils::LambdaPostHook>(
      [fn = std::move(fn)](const variable_list& outputs, const variable_list&) {
        fn();
        return outputs;
      }));
}

inline void remove_post_hook(Node& node, uintptr_t key) {
  node.del_post_hook(key);
}

// Runs `fn` at the end of the backward pass in progress, before backward() returns; an
// exception it throws comes out of backward(). Only valid while a backward runs.
inline void queue_end_of_backward(std::function<void()> fn) {
  ::torch::autograd::Engine::get_default_engine().queue_callback(std::move(fn));
}

}  // namespace lockstep::torch::compat
