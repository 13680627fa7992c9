// The one place where the PyTorch versions lockstep_torch builds against differ in C++: what
// a backend derives from. PyTorch 1.13's init_process_group wants a plugin's creator to
// return a c10d::ProcessGroup; 2.x wants a c10d::Backend (it wraps it in a ProcessGroup
// itself; __init__.py tells it the device, "cpu"). Work, Store, OpType and the option
// structs are spelled the same in both, so process_group.cpp uses them directly.
#pragma once

#include <torch/version.h>

#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#else
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#endif
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace lockstep_torch::compat {

#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

}  // namespace lockstep_torch::compat
