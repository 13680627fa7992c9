// PrefixStore: a namespace inside another Store. Every key becomes "<prefix>/<key>", so
// several groups or restarts can share one store without clashing:
//
//   PrefixStore group(str_cat("pg/", group_id), store);
//   group.set("addr/0", addr);          // stored as "pg/<id>/addr/0"
//
// num_keys() reports the base store's total (the Store interface cannot list keys).
#pragma once

#include <memory>
#include <string>

#include "lockstep/store/store.h"

namespace lockstep::store {

class PrefixStore final : public Store {
 public:
  using Store::get;
  using Store::set;
  using Store::wait;

  // `base` must outlive this object. The default timeout starts as the base store's.
  PrefixStore(std::string prefix, Store& base);
  // Owns `base` (e.g. the job store returned by connect_store()).
  PrefixStore(std::string prefix, std::unique_ptr<Store> base);

  void set(const std::string& key, std::span<const uint8_t> value) override;
  Bytes get(const std::string& key, Millis timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                    std::span<const uint8_t> desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, Millis timeout) override;
  bool delete_key(const std::string& key) override;
  int64_t num_keys() override;
  void set_within(const std::string& key, std::span<const uint8_t> value, Millis timeout) override;
  bool check_within(const std::vector<std::string>& keys, Millis timeout) override;
  Bytes compare_set_within(const std::string& key, std::span<const uint8_t> expected,
                           std::span<const uint8_t> desired, Millis timeout) override;

  const std::string& prefix() const { return prefix_; }
  Store& base() { return base_; }

 private:
  std::string full(const std::string& key) const;
  std::vector<std::string> full(const std::vector<std::string>& keys) const;

  std::unique_ptr<Store> owned_;  // set by the owning constructor
  std::string prefix_;
  Store& base_;
};

}  // namespace lockstep::store
