// HashStore: an in-process Store (a map under a mutex). Use it for ranks that are threads of
// one process, chiefly in tests.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>

#include "lockstep/store/store.h"

namespace lockstep::store {

class HashStore final : public Store {
 public:
  using Store::get;
  using Store::set;
  using Store::wait;

  void set(const std::string& key, std::span<const uint8_t> value) override;
  Bytes get(const std::string& key, Millis timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                    std::span<const uint8_t> desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, Millis timeout) override;
  bool delete_key(const std::string& key) override;
  int64_t num_keys() override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Bytes, std::less<>> data_;
};

// Integer values are stored as decimal text, as TcpStore and FileStore do.
int64_t parse_counter(const std::string& key, const Bytes& value);

}  // namespace lockstep::store
