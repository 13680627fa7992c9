// Admission control for the store server against floods of stray or hostile connections:
// connections in total stay below the open-files limit, those without a valid hello yet
// ("pending") are capped in total and per peer address, and the oldest pending one makes
// room for a newcomer, so the job's own workers (who say hello at once) always get in.
// Warnings are rate-limited, so that a flood cannot fill the log.
//
//   ConnectionLimits lim = resolve_limits({}, open_files_limit());
//   if (pending.count(addr) >= lim.max_pending_per_peer) evict(pending.oldest(addr)->fd);
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "lockstep/core/clock.h"

namespace lockstep::store {

struct ConnectionLimits {
  size_t max_connections = 0;       // open connections of any kind; 0: from the open-files limit
  size_t max_pending = 0;           // of them without a valid hello yet; 0: half the above
  size_t max_pending_per_peer = 0;  // pending from one peer address; 0: a quarter of the above
};

// The soft RLIMIT_NOFILE of this process (2^20 when unlimited).
uint64_t open_files_limit();
// Fills the zero fields: max_connections leaves a quarter of `open_files` (16..256
// descriptors) to the rest of the process, so that accept() never fails for lack of one.
ConnectionLimits resolve_limits(ConnectionLimits l, uint64_t open_files);

// "1.2.3.4:5678" or "[::1]:5678" -> the address without the port.
std::string peer_address(const std::string& peer);

// The pending connections in the order they were accepted (by connection id).
class PendingConnections {
 public:
  struct Entry {
    uint64_t id;
    int fd;
  };
  void add(uint64_t id, int fd, const std::string& addr);
  void remove(uint64_t id);  // authenticated or closed; unknown ids are ignored
  size_t size() const { return order_.size(); }
  size_t count(const std::string& addr) const;
  // The oldest pending connection (from `addr` when given).
  std::optional<Entry> oldest(const std::string* addr = nullptr) const;

 private:
  struct Item {
    int fd;
    std::string addr;
  };
  std::map<uint64_t, Item> order_;  // ids grow, so begin() is the oldest
  std::unordered_map<std::string, std::set<uint64_t>> by_addr_;
};

// Lets `per_window` lines through per window; the rest are counted for a summary line that
// take_suppressed() hands out once the window has passed.
class WarnLimiter {
 public:
  WarnLimiter(int per_window, Clock::duration window) : per_window_(per_window), window_(window) {}
  bool allow(Clock::time_point now);
  // The number held back, once the window they fell in is over (0 otherwise).
  int64_t take_suppressed(Clock::time_point now);

 private:
  int per_window_;
  Clock::duration window_;
  Clock::time_point start_{};
  int printed_ = 0;
  int64_t suppressed_ = 0;
};

}  // namespace lockstep::store
