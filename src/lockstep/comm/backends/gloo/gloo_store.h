// GlooStore: gloo's rendezvous::Store over a lockstep Store, so that gloo contexts meet
// through the same store (TcpStore, FileStore, HashStore) as every other backend. Keys are
// placed under a prefix (one per group) and every wait is bounded by the given timeout.
#pragma once

#include <gloo/rendezvous/store.h>

#include <string>
#include <vector>

#include "lockstep/core/clock.h"
#include "lockstep/store/store.h"

namespace lockstep::comm::gloo_backend {

class GlooStore final : public ::gloo::rendezvous::Store {
 public:
  GlooStore(store::Store& store, std::string prefix, Millis timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

  const std::string& prefix() const { return prefix_; }

 private:
  std::vector<std::string> prefixed(const std::vector<std::string>& keys) const;

  store::Store& store_;
  const std::string prefix_;
  const Millis timeout_;
};

}  // namespace lockstep::comm::gloo_backend
