#include "lockstep/store/file_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "lockstep/core/error.h"
#include "lockstep/core/log.h"
#include "lockstep/store/hash_store.h"

namespace lockstep::store {
namespace {

// Record layout: u8 kind ('S' set, 'D' delete) | u32 key_len | key | u32 value_len | value,
// integers little-endian. A record is written by one append under the exclusive lock.
constexpr size_t kRecordHeader = 1 + 4 + 4;
constexpr Millis kFirstPoll{1};
constexpr Millis kMaxPoll{50};

void put_u32(Bytes& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

}  // namespace

class FileStore::Lock {
 public:
  Lock(FileStore& s, const char* op, const std::string& key) : s_(s), lk_(s.mu_) {
    // flock blocks without a timeout, so poll the non-blocking form until the deadline.
    auto dl = Deadline::after(s.timeout_);
    Millis pause = kFirstPoll;
    while (::flock(s.fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) LOCKSTEP_CHECK_ERRNO(-1, "flock '", s.path_, "' for ", op);
      if (dl.expired()) {
        LOCKSTEP_THROW(TimeoutError, "FileStore ", op, " of key '", key, "': could not lock '",
                       s.path_, "' within ", s.timeout_.count(),
                       " ms (another process holds the lock; is it stuck?)");
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, kMaxPoll);
    }
    try {
      s.refresh();
    } catch (...) {
      ::flock(s.fd_.get(), LOCK_UN);
      throw;
    }
  }
  ~Lock() { ::flock(s_.fd_.get(), LOCK_UN); }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  FileStore& s_;
  std::lock_guard<std::mutex> lk_;
};

FileStore::FileStore(std::string path, Millis timeout) : path_(std::move(path)) {
  timeout_ = timeout;
  fd_ = net::Fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  LOCKSTEP_CHECK_ERRNO(fd_.get(), "FileStore cannot open '", path_,
                       "' (does the directory exist and is it writable?)");
}

void FileStore::refresh() {
  struct stat st{};
  LOCKSTEP_CHECK_ERRNO(::fstat(fd_.get(), &st), "fstat '", path_, "'");
  if (st.st_size <= pos_) return;
  Bytes buf(size_t(st.st_size - pos_));
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::pread(fd_.get(), buf.data() + got, buf.size() - got, off_t(pos_ + got));
    if (n < 0 && errno == EINTR) continue;
    LOCKSTEP_CHECK_ERRNO(n, "read '", path_, "'");
    if (n == 0) break;
    got += size_t(n);
  }
  size_t off = 0;
  while (got - off >= kRecordHeader) {
    const uint8_t* p = buf.data() + off;
    uint32_t klen = get_u32(p + 1);
    bool bad = (p[0] != 'S' && p[0] != 'D') || klen == 0 || klen > kMaxKeyBytes;
    if (!bad && got - off < kRecordHeader + klen) break;
    uint32_t vlen = bad ? 0 : get_u32(p + 5 + klen);
    if (bad || vlen > kMaxValueBytes) {
      LOCKSTEP_THROW(DataError, "FileStore '", path_, "' is corrupt at offset ", pos_ + off,
                     " (not a lockstep store file? delete it and restart the job)");
    }
    size_t total = kRecordHeader + klen + vlen;
    if (got - off < total) break;
    std::string key(reinterpret_cast<const char*>(p + 5), klen);
    if (p[0] == 'S') {
      cache_[key] = Bytes(p + 9 + klen, p + total);
    } else {
      cache_.erase(key);
    }
    off += total;
  }
  pos_ += int64_t(off);
  if (pos_ < st.st_size) {
    // We hold the exclusive lock, so a partial tail is a writer that died mid-append.
    LOCKSTEP_LOG(warn, "FileStore '", path_, "': dropping a truncated record at offset ", pos_);
    LOCKSTEP_CHECK_ERRNO(::ftruncate(fd_.get(), off_t(pos_)), "truncate '", path_, "'");
  }
}

void FileStore::append(char kind, const std::string& key, std::span<const uint8_t> value) {
  Bytes rec;
  rec.reserve(kRecordHeader + key.size() + value.size());
  rec.push_back(uint8_t(kind));
  put_u32(rec, uint32_t(key.size()));
  rec.insert(rec.end(), key.begin(), key.end());
  put_u32(rec, uint32_t(value.size()));
  rec.insert(rec.end(), value.begin(), value.end());
  size_t off = 0;
  while (off < rec.size()) {
    ssize_t n = ::write(fd_.get(), rec.data() + off, rec.size() - off);
    if (n < 0 && errno == EINTR) continue;
    LOCKSTEP_CHECK_ERRNO(n, "FileStore append to '", path_, "' (disk full?)");
    off += size_t(n);
  }
  refresh();  // replays our own record, keeping pos_ and cache_ exact
}

bool FileStore::all_present(const std::vector<std::string>& keys) const {
  return std::all_of(keys.begin(), keys.end(), [&](auto& k) { return cache_.count(k) > 0; });
}

void FileStore::set(const std::string& key, std::span<const uint8_t> value) {
  check_key(key);
  check_value(value);
  Lock lock(*this, "set", key);
  append('S', key, value);
}

Bytes FileStore::get(const std::string& key, Millis timeout) {
  check_key(key);
  wait({key}, timeout);
  Lock lock(*this, "get", key);
  auto it = cache_.find(key);
  if (it == cache_.end()) {
    LOCKSTEP_THROW(Error, "FileStore get: key '", key, "' was deleted while waiting for it");
  }
  return it->second;
}

int64_t FileStore::add(const std::string& key, int64_t delta) {
  check_key(key);
  Lock lock(*this, "add", key);
  auto it = cache_.find(key);
  int64_t v = it == cache_.end() ? 0 : parse_counter(key, it->second);
  v = int64_t(uint64_t(v) + uint64_t(delta));
  append('S', key, to_bytes(std::to_string(v)));
  return v;
}

Bytes FileStore::compare_set(const std::string& key, std::span<const uint8_t> expected,
                             std::span<const uint8_t> desired) {
  check_key(key);
  check_value(desired);
  Lock lock(*this, "compare_set", key);
  auto it = cache_.find(key);
  bool absent = it == cache_.end();
  bool match = absent ? expected.empty()
                      : std::equal(it->second.begin(), it->second.end(), expected.begin(),
                                   expected.end());
  if (!match) return absent ? Bytes(expected.begin(), expected.end()) : it->second;
  append('S', key, desired);
  return Bytes(desired.begin(), desired.end());
}

bool FileStore::check(const std::vector<std::string>& keys) {
  for (auto& k : keys) check_key(k);
  Lock lock(*this, "check", keys.empty() ? "" : keys[0]);
  return all_present(keys);
}

void FileStore::wait(const std::vector<std::string>& keys, Millis timeout) {
  for (auto& k : keys) check_key(k);
  auto dl = Deadline::after(timeout);
  Millis pause = kFirstPoll;
  for (;;) {
    {
      Lock lock(*this, "wait", keys.empty() ? "" : keys[0]);
      if (all_present(keys)) return;
      if (dl.expired()) {
        std::string missing;
        for (auto& k : keys) {
          if (!cache_.count(k)) missing += (missing.empty() ? "'" : ", '") + k + "'";
        }
        LOCKSTEP_THROW(TimeoutError, "FileStore wait on '", path_, "' timed out after ",
                       timeout.count(), " ms; missing key(s): ", missing,
                       " (is every worker started, with the same store path?)");
      }
    }
    std::this_thread::sleep_for(std::min<Clock::duration>(pause, dl.remaining()));
    pause = std::min(pause * 2, kMaxPoll);
  }
}

bool FileStore::delete_key(const std::string& key) {
  check_key(key);
  Lock lock(*this, "delete_key", key);
  if (!cache_.count(key)) return false;
  append('D', key, {});
  return true;
}

int64_t FileStore::num_keys() {
  Lock lock(*this, "num_keys", "");
  return int64_t(cache_.size());
}

}  // namespace lockstep::store
