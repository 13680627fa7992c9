#include "lockstep/comm/backends/gloo/gloo_process_group.h"

#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/backends/gloo/gloo_errors.h"
#include "lockstep/comm/backends/gloo/gloo_store.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {

std::unique_ptr<ProcessGroup> make_gloo_group(store::Store& store, int rank, int world,
                                              const Options& options) {
  return std::make_unique<gloo_backend::GlooProcessGroup>(store, rank, world, options);
}

namespace gloo_backend {
namespace {

bool is_local_address(std::string_view a) {
  return a.empty() || a == "localhost" || a.starts_with("127.") || a == "::1";
}

}  // namespace

std::shared_ptr<::gloo::transport::Device> make_tcp_device() {
  ::gloo::transport::tcp::attr attr;
  const char* ifname = std::getenv("LOCKSTEP_SOCKET_IFNAME");
  const char* master = std::getenv("MASTER_ADDR");
  if (ifname != nullptr && *ifname != '\0') {
    attr.iface = ifname;
  } else if (master == nullptr || is_local_address(master)) {
    attr.hostname = "127.0.0.1";
  } else {
    char host[256] = {0};
    LOCKSTEP_CHECK_ERRNO(::gethostname(host, sizeof(host) - 1), "gethostname for gloo");
    attr.hostname = host;
  }
  try {
    return ::gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    LOCKSTEP_THROW(ConfigError, "gloo: cannot create a tcp device on ",
                   attr.iface.empty() ? "host " + attr.hostname : "interface " + attr.iface,
                   ": ", e.what(), " (set LOCKSTEP_SOCKET_IFNAME to choose the interface)");
  }
}

GlooProcessGroup::GlooProcessGroup(store::Store& store, int rank, int world, Options options)
    : EngineGroup("gloo", rank, world, std::move(options)), store_(store) {
  if (world > 1) {
    const std::string prefix =
        engine::rendezvous_prefix(store_, "gloo/" + this->options().group_name + "/", world);
    device_ = make_tcp_device();
    context_ = std::make_shared<::gloo::rendezvous::Context>(rank, world);
    context_->setTimeout(this->options().timeout);
    GlooStore adapter(store_, prefix, this->options().timeout);
    const std::string what = str_cat("gloo group '", this->options().group_name,
                                     "' rendezvous (rank ", rank, " of ", world, ")");
    guard_gloo(what, [&] { context_->connectFullMesh(adapter, device_); });
    // A rank's mesh can be complete while a peer is still handshaking with a third rank;
    // wait for every rank (bounded) so that nobody tears its pairs down under a handshake.
    store_.set(str_cat(prefix, "connected/", rank), std::string_view("1"));
    std::vector<std::string> keys;
    for (int r = 0; r < world; ++r) keys.push_back(str_cat(prefix, "connected/", r));
    store_.wait(keys, this->options().timeout);
  }
  attach_store(store_);
  start_worker();
}

GlooProcessGroup::~GlooProcessGroup() {
  stop_worker();
  context_.reset();
  device_.reset();
}

bool GlooProcessGroup::supports(Capability c) const {
  switch (c) {
    case Capability::send_recv:
    case Capability::sub_groups: return true;
    // libgloo 0.5 cannot interrupt a running collective: abort() fails the queued operations
    // at once, but the running one ends only at its timeout.
    case Capability::abort:
    case Capability::shared_memory:
    case Capability::device_memory: return false;
    case Capability::debug_checks: return true;  // EngineGroup's OpMonitor
  }
  return false;
}

void GlooProcessGroup::interrupt() {
  // Closing the pairs stops any further data landing in the user's buffers; the running
  // collective itself still ends at its timeout (see supports()).
  if (context_) context_->closeConnections();
}

std::unique_ptr<ProcessGroup> GlooProcessGroup::make_subgroup(const std::vector<int>& ranks,
                                                              const std::string& name,
                                                              Deadline deadline) {
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank()) index = int(i);
  if (index < 0) return nullptr;
  Options o = options();  // the rendezvous below is bounded by o.timeout
  o.group_name = name;
  return std::make_unique<GlooProcessGroup>(store_, index, int(ranks.size()), o);
}

}  // namespace gloo_backend
}  // namespace lockstep::comm
