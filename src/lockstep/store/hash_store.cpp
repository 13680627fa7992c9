#include "lockstep/store/hash_store.h"

#include <algorithm>
#include <charconv>

#include "lockstep/core/error.h"

namespace lockstep::store {

void check_key(const std::string& key) {
  if (key.empty()) LOCKSTEP_THROW(InvalidArgument, "store key must not be empty");
  if (key.size() > kMaxKeyBytes) {
    LOCKSTEP_THROW(InvalidArgument, "store key of ", key.size(), " bytes exceeds the limit of ",
                   kMaxKeyBytes, " bytes (key starts '", key.substr(0, 64), "')");
  }
}

void check_value(std::span<const uint8_t> value) {
  if (value.size() > kMaxValueBytes) {
    LOCKSTEP_THROW(InvalidArgument, "store value of ", value.size(),
                   " bytes exceeds the limit of ", kMaxValueBytes, " bytes");
  }
}

int64_t parse_counter(const std::string& key, const Bytes& value) {
  int64_t v = 0;
  auto* b = reinterpret_cast<const char*>(value.data());
  auto [p, ec] = std::from_chars(b, b + value.size(), v);
  if (ec != std::errc() || p != b + value.size()) {
    LOCKSTEP_THROW(InvalidArgument, "store add on key '", key,
                   "': existing value is not an integer counter");
  }
  return v;
}

void HashStore::set(const std::string& key, std::span<const uint8_t> value) {
  check_key(key);
  check_value(value);
  {
    std::lock_guard lk(mu_);
    data_[key] = Bytes(value.begin(), value.end());
  }
  cv_.notify_all();
}

Bytes HashStore::get(const std::string& key, Millis timeout) {
  check_key(key);
  wait({key}, timeout);
  std::lock_guard lk(mu_);
  auto it = data_.find(key);
  if (it == data_.end()) {
    LOCKSTEP_THROW(Error, "store get: key '", key, "' was deleted while waiting for it");
  }
  return it->second;
}

int64_t HashStore::add(const std::string& key, int64_t delta) {
  check_key(key);
  int64_t v = 0;
  {
    std::lock_guard lk(mu_);
    auto it = data_.find(key);
    if (it != data_.end()) v = parse_counter(key, it->second);
    v += delta;
    data_[key] = to_bytes(std::to_string(v));
  }
  cv_.notify_all();
  return v;
}

Bytes HashStore::compare_set(const std::string& key, std::span<const uint8_t> expected,
                             std::span<const uint8_t> desired) {
  check_key(key);
  check_value(desired);
  Bytes out;
  {
    std::lock_guard lk(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) {
      if (!expected.empty()) return Bytes(expected.begin(), expected.end());
      out = Bytes(desired.begin(), desired.end());
      data_[key] = out;
    } else if (std::equal(it->second.begin(), it->second.end(), expected.begin(),
                          expected.end())) {
      it->second = Bytes(desired.begin(), desired.end());
      out = it->second;
    } else {
      return it->second;
    }
  }
  cv_.notify_all();
  return out;
}

bool HashStore::check(const std::vector<std::string>& keys) {
  std::lock_guard lk(mu_);
  return std::all_of(keys.begin(), keys.end(), [&](auto& k) { return data_.count(k) > 0; });
}

void HashStore::wait(const std::vector<std::string>& keys, Millis timeout) {
  auto deadline = Deadline::after(timeout);
  std::unique_lock lk(mu_);
  auto ready = [&] {
    return std::all_of(keys.begin(), keys.end(), [&](auto& k) { return data_.count(k) > 0; });
  };
  if (!cv_.wait_until(lk, deadline.at(), ready)) {
    std::string missing;
    for (auto& k : keys) {
      if (!data_.count(k)) missing += (missing.empty() ? "'" : ", '") + k + "'";
    }
    LOCKSTEP_THROW(TimeoutError, "store wait timed out after ", timeout.count(),
                   " ms; missing key(s): ", missing,
                   " (is every worker started, with the same store address?)");
  }
}

bool HashStore::delete_key(const std::string& key) {
  std::lock_guard lk(mu_);
  return data_.erase(key) > 0;
}

int64_t HashStore::num_keys() {
  std::lock_guard lk(mu_);
  return int64_t(data_.size());
}

}  // namespace lockstep::store
