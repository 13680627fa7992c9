#include "lockstep/comm/backends/gloo/gloo_store.h"

#include <algorithm>

namespace lockstep::comm::gloo_backend {

void GlooStore::set(const std::string& key, const std::vector<char>& data) {
  store_.set(prefix_ + key, std::span<const uint8_t>(
                                reinterpret_cast<const uint8_t*>(data.data()), data.size()));
}

std::vector<char> GlooStore::get(const std::string& key) {
  store::Bytes b = store_.get(prefix_ + key, timeout_);  // throws TimeoutError naming the key
  return std::vector<char>(b.begin(), b.end());
}

void GlooStore::wait(const std::vector<std::string>& keys) { store_.wait(prefixed(keys), timeout_); }

void GlooStore::wait(const std::vector<std::string>& keys,
                     const std::chrono::milliseconds& timeout) {
  // gloo passes its context timeout here; never wait longer than ours either.
  store_.wait(prefixed(keys), std::min<Millis>(timeout, timeout_));
}

std::vector<std::string> GlooStore::prefixed(const std::vector<std::string>& keys) const {
  std::vector<std::string> out;
  out.reserve(keys.size());
  for (const auto& k : keys) out.push_back(prefix_ + k);
  return out;
}

}  // namespace lockstep::comm::gloo_backend
