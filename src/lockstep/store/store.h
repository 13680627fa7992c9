// Store: the key-value store through which workers meet (rendezvous, address exchange,
// barriers). Every blocking call takes a timeout and throws TimeoutError naming the key.
//
//   store.set("addr/3", bytes);
//   auto peer = store.get("addr/0", std::chrono::seconds(30));   // waits for the key
//   int64_t arrived = store.add("barrier/1", 1);                   // atomic counter
//
// Implementations: HashStore (one process, for thread-per-rank tests), TcpStore (server +
// clients), FileStore (shared filesystem), PrefixStore (namespacing over another store).
// All are safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/core/clock.h"

namespace lockstep::store {

using Bytes = std::vector<uint8_t>;

inline Bytes to_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }
inline std::string to_string(const Bytes& b) { return std::string(b.begin(), b.end()); }

// Hard bounds, enforced by every implementation and on the wire.
inline constexpr size_t kMaxKeyBytes = 4096;
inline constexpr size_t kMaxValueBytes = 64u << 20;

class Store {
 public:
  static constexpr Millis kDefaultTimeout{std::chrono::seconds(300)};

  virtual ~Store() = default;

  virtual void set(const std::string& key, std::span<const uint8_t> value) = 0;
  // Waits up to `timeout` for the key to exist, then returns its value.
  virtual Bytes get(const std::string& key, Millis timeout) = 0;
  // Adds delta to the integer stored at key (absent = 0) and returns the new value.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // Sets key to `desired` if its value equals `expected` (or if it is absent and `expected`
  // is empty). Returns the value the key holds afterwards.
  virtual Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                            std::span<const uint8_t> desired) = 0;
  // True if every key exists, without waiting.
  virtual bool check(const std::vector<std::string>& keys) = 0;
  // Waits up to `timeout` for every key to exist.
  virtual void wait(const std::vector<std::string>& keys, Millis timeout) = 0;
  // Deletes key; returns whether it existed.
  virtual bool delete_key(const std::string& key) = 0;
  virtual int64_t num_keys() = 0;

  // set(), compare_set() and check() that give up after `timeout` (a TimeoutError or SystemError) instead
  // of the store's default timeout: for best-effort messages after a failure, when the
  // store may be unreachable too. Stores in this process never block and ignore it.
  virtual void set_within(const std::string& key, std::span<const uint8_t> value, Millis timeout) {
    set(key, value);
  }
  virtual bool check_within(const std::vector<std::string>& keys, Millis timeout) { return check(keys); }
  virtual Bytes compare_set_within(const std::string& key, std::span<const uint8_t> expected,
                                   std::span<const uint8_t> desired, Millis timeout) {
    return compare_set(key, expected, desired);
  }

  // Conveniences on top of the interface.
  void set(const std::string& key, std::string_view value) {
    set(key, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(value.data()),
                                      value.size()));
  }
  Bytes get(const std::string& key) { return get(key, timeout_); }
  std::string get_string(const std::string& key) { return to_string(get(key, timeout_)); }
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

  // Default timeout of get()/wait() calls that do not name one.
  Millis timeout() const { return timeout_; }
  void set_timeout(Millis t) { timeout_ = t; }

 protected:
  Millis timeout_ = kDefaultTimeout;
};

// Validates a key and value against the hard bounds; throws InvalidArgument.
void check_key(const std::string& key);
void check_value(std::span<const uint8_t> value);

}  // namespace lockstep::store
