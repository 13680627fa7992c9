#include "lockstep/store/admission.h"

#include <sys/resource.h>

#include <algorithm>

namespace lockstep::store {

uint64_t open_files_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
    return uint64_t{1} << 20;
  return rl.rlim_cur;
}

ConnectionLimits resolve_limits(ConnectionLimits l, uint64_t open_files) {
  const uint64_t headroom = std::clamp<uint64_t>(open_files / 4, 16, 256);
  if (l.max_connections == 0) {
    l.max_connections =
        size_t(std::clamp<uint64_t>(open_files - std::min(open_files, headroom), 8, 1 << 16));
  }
  if (l.max_pending == 0) l.max_pending = std::max<size_t>(4, l.max_connections / 2);
  if (l.max_pending_per_peer == 0) l.max_pending_per_peer = std::max<size_t>(2, l.max_pending / 4);
  return l;
}

std::string peer_address(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

void PendingConnections::add(uint64_t id, int fd, const std::string& addr) {
  order_.emplace(id, Item{fd, addr});
  by_addr_[addr].insert(id);
}

void PendingConnections::remove(uint64_t id) {
  const auto it = order_.find(id);
  if (it == order_.end()) return;
  const auto a = by_addr_.find(it->second.addr);
  a->second.erase(id);
  if (a->second.empty()) by_addr_.erase(a);
  order_.erase(it);
}

size_t PendingConnections::count(const std::string& addr) const {
  const auto a = by_addr_.find(addr);
  return a == by_addr_.end() ? 0 : a->second.size();
}

std::optional<PendingConnections::Entry> PendingConnections::oldest(const std::string* addr) const {
  if (!addr) {
    if (order_.empty()) return std::nullopt;
    return Entry{order_.begin()->first, order_.begin()->second.fd};
  }
  const auto a = by_addr_.find(*addr);
  if (a == by_addr_.end()) return std::nullopt;
  const uint64_t id = *a->second.begin();
  return Entry{id, order_.at(id).fd};
}

bool WarnLimiter::allow(Clock::time_point now) {
  // A window with lines held back stays open until take_suppressed() has reported them.
  if (suppressed_ == 0 && now - start_ >= window_) {
    start_ = now;
    printed_ = 0;
  }
  if (printed_ < per_window_) {
    ++printed_;
    return true;
  }
  ++suppressed_;
  return false;
}

int64_t WarnLimiter::take_suppressed(Clock::time_point now) {
  if (suppressed_ == 0 || now - start_ < window_) return 0;
  const int64_t n = suppressed_;
  suppressed_ = 0;
  start_ = now;
  printed_ = 0;
  return n;
}

}  // namespace lockstep::store
