#include "lockstep/store/prefix_store.h"

#include "lockstep/core/error.h"

namespace lockstep::store {

PrefixStore::PrefixStore(std::string prefix, Store& base)
    : prefix_(std::move(prefix)), base_(base) {
  if (prefix_.empty()) LOCKSTEP_THROW(InvalidArgument, "PrefixStore prefix must not be empty");
  timeout_ = base.timeout();
}

PrefixStore::PrefixStore(std::string prefix, std::unique_ptr<Store> base)
    : PrefixStore(std::move(prefix), *base) {
  owned_ = std::move(base);
}

std::string PrefixStore::full(const std::string& key) const {
  // Validate the caller's key first, so "" is rejected instead of turning into "prefix/".
  check_key(key);
  return prefix_ + "/" + key;
}

std::vector<std::string> PrefixStore::full(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (auto& k : keys) out.push_back(full(k));
  return out;
}

void PrefixStore::set(const std::string& key, std::span<const uint8_t> value) {
  base_.set(full(key), value);
}

Bytes PrefixStore::get(const std::string& key, Millis timeout) {
  return base_.get(full(key), timeout);
}

int64_t PrefixStore::add(const std::string& key, int64_t delta) {
  return base_.add(full(key), delta);
}

Bytes PrefixStore::compare_set(const std::string& key, std::span<const uint8_t> expected,
                               std::span<const uint8_t> desired) {
  return base_.compare_set(full(key), expected, desired);
}

bool PrefixStore::check(const std::vector<std::string>& keys) { return base_.check(full(keys)); }

void PrefixStore::set_within(const std::string& key, std::span<const uint8_t> value, Millis timeout) {
  base_.set_within(full(key), value, timeout);
}

Bytes PrefixStore::compare_set_within(const std::string& key, std::span<const uint8_t> expected,
                                      std::span<const uint8_t> desired, Millis timeout) {
  return base_.compare_set_within(full(key), expected, desired, timeout);
}

bool PrefixStore::check_within(const std::vector<std::string>& keys, Millis timeout) {
  return base_.check_within(full(keys), timeout);
}

void PrefixStore::wait(const std::vector<std::string>& keys, Millis timeout) {
  base_.wait(full(keys), timeout);
}

bool PrefixStore::delete_key(const std::string& key) { return base_.delete_key(full(key)); }

int64_t PrefixStore::num_keys() { return base_.num_keys(); }

}  // namespace lockstep::store
