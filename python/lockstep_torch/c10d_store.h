// C10dStore: lockstep's store::Store over a PyTorch c10d::Store, so a lockstep process group
// meets its peers through whatever store init_process_group made (env:// and tcp:// give a
// TCPStore, or the store a program passed in), under the prefix PyTorch gives each group.
// c10d's stores are thread-safe themselves; c10d errors on get/wait become lockstep
// TimeoutErrors naming the key, which lockstep's group turns into errors naming the peer.
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/store/store.h"

namespace lockstep_torch {

class C10dStore final : public lockstep::store::Store {
 public:
  explicit C10dStore(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}

  void set(const std::string& key, std::span<const uint8_t> value) override {
    store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  }
  lockstep::store::Bytes get(const std::string& key, lockstep::Millis timeout) override {
    wait({key}, timeout);
    return store_->get(key);
  }
  int64_t add(const std::string& key, int64_t delta) override { return store_->add(key, delta); }
  lockstep::store::Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                                     std::span<const uint8_t> desired) override {
    return store_->compareSet(key, std::vector<uint8_t>(expected.begin(), expected.end()),
                              std::vector<uint8_t>(desired.begin(), desired.end()));
  }
  bool check(const std::vector<std::string>& keys) override { return store_->check(keys); }
  void wait(const std::vector<std::string>& keys, lockstep::Millis timeout) override {
    try {
      store_->wait(keys, timeout);
    } catch (const lockstep::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw lockstep::TimeoutError(lockstep::str_cat(
          "waiting ", timeout.count(), " ms for key '", keys.empty() ? "" : keys.front(),
          "' in the PyTorch store failed (a peer may not have started, or died): ", e.what()));
    }
  }
  bool delete_key(const std::string& key) override { return store_->deleteKey(key); }
  int64_t num_keys() override { return store_->getNumKeys(); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

}  // namespace lockstep_torch
