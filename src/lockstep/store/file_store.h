// FileStore: a Store kept in one append-only file on a filesystem every worker can see
// (for clusters where no port is free). Each mutation appends a record under an exclusive
// flock; readers replay the records they have not seen yet. Waits poll with backoff.
//
//   FileStore store("/shared/job42/store");   // the same path on every worker
//   store.set("addr/3", addr);
//
// The caller owns the file: delete it when the job is done. flock must work on the
// filesystem (local disks, and NFSv4 / Lustre with flock enabled).
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "lockstep/store/net.h"
#include "lockstep/store/store.h"

namespace lockstep::store {

class FileStore final : public Store {
 public:
  using Store::get;
  using Store::set;
  using Store::wait;

  // Opens (creating if needed) the store file. Throws SystemError naming the path.
  explicit FileStore(std::string path, Millis timeout = kDefaultTimeout);

  void set(const std::string& key, std::span<const uint8_t> value) override;
  Bytes get(const std::string& key, Millis timeout) override;
  int64_t add(const std::string& key, int64_t delta) override;
  Bytes compare_set(const std::string& key, std::span<const uint8_t> expected,
                    std::span<const uint8_t> desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, Millis timeout) override;
  bool delete_key(const std::string& key) override;
  int64_t num_keys() override;

  const std::string& path() const { return path_; }

 private:
  class Lock;  // in-process mutex + flock, caught up with the file while held
  void refresh();
  void append(char kind, const std::string& key, std::span<const uint8_t> value);
  bool all_present(const std::vector<std::string>& keys) const;

  std::string path_;
  net::Fd fd_;
  std::mutex mu_;
  int64_t pos_ = 0;  // bytes of the file already replayed into cache_
  std::unordered_map<std::string, Bytes> cache_;
};

}  // namespace lockstep::store
