#include "lockstep/comm/process_group.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <map>
#include <mutex>
#include <utility>

#include "lockstep/comm/native_process_group.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

// The backend registry: immutable names -> factories, filled with the built-in backends on
// first use. (A registry is the one process-wide table; groups themselves share nothing.)
struct Registry {
  std::mutex mu;
  std::map<std::string, ProcessGroup::Factory> factories;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: usable from static destructors
    reg->factories["native"] = [](store::Store& s, int rank, int world, const Options& o) {
      return std::unique_ptr<ProcessGroup>(std::make_unique<NativeProcessGroup>(s, rank, world, o));
    };
    return reg;
  }();
  return *r;
}

thread_local std::shared_ptr<void> t_device_order;  // the innermost DeviceOrder's event

}  // namespace

DeviceOrder::DeviceOrder(std::shared_ptr<void> event)
    : outer_(std::exchange(t_device_order, std::move(event))) {}

DeviceOrder::~DeviceOrder() { t_device_order = std::move(outer_); }

const std::shared_ptr<void>& DeviceOrder::current() { return t_device_order; }

std::optional<ReduceOp> parse_reduce_op(std::string_view name) {
  for (ReduceOp op : kAllReduceOps)
    if (reduce_op_name(op) == name) return op;
  return std::nullopt;
}

std::unique_ptr<ProcessGroup> ProcessGroup::create(const std::string& backend, store::Store& store,
                                                   int rank, int world, const Options& options) {
  Factory f;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lk(r.mu);
    auto it = r.factories.find(backend);
    if (it == r.factories.end()) {
      std::string known;
      for (auto& [name, _] : r.factories) known += " " + name;
      LOCKSTEP_THROW(ConfigError, "unknown process group backend '", backend,
                     "'; built-in backends:", known);
    }
    f = it->second;
  }
  return f(store, rank, world, options);
}

std::shared_ptr<std::byte[]> ProcessGroup::alloc_shared(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return std::shared_ptr<std::byte[]>(p, [](std::byte* q) { std::free(q); });
}

void ProcessGroup::check_group_ranks(const std::vector<int>& ranks, int world) {
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  if (sorted.empty() || sorted.front() < 0 || sorted.back() >= world ||
      std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    LOCKSTEP_THROW(InvalidArgument, "new_group: ranks must be distinct members of [0, ", world,
                   "), got ", ranks.size(), " ranks");
}

void ProcessGroup::register_backend(const std::string& name, Factory factory) {
  auto& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  if (!r.factories.emplace(name, std::move(factory)).second)
    LOCKSTEP_THROW(InvalidArgument, "process group backend '", name, "' is already registered");
}

std::vector<std::string> ProcessGroup::backends() {
  auto& r = registry();
  std::lock_guard<std::mutex> lk(r.mu);
  std::vector<std::string> names;
  for (auto& [name, _] : r.factories) names.push_back(name);
  return names;
}

}  // namespace lockstep::comm
