#include "lockstep/comm/shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "lockstep/core/error.h"

namespace lockstep::comm::shm {
namespace {

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

std::string unique_name() {
  std::random_device rd;
  return str_cat("/lockstep-", ::getpid(), "-", std::hex, rd(), rd());
}

}  // namespace

ShmSegment::ShmSegment(store::Store& store, const std::string& prefix, int rank, int world,
                       size_t bytes, Millis timeout)
    : bytes_(bytes) {
  FdCloser fd{-1};
  // A rank that fails posts "!<reason>" under the key the others wait for, so that they fail
  // at once with its reason instead of at the timeout: rank 0 in place of the name when it
  // cannot create the segment, any rank in place of "ready" when it cannot map it.
  auto post = [&](const std::string& key, const std::string& reason) {
    try {
      store.set(prefix + key, "!" + reason);
    } catch (const std::exception&) {  // the store is gone too: the peers time out
    }
  };
  auto refuse = [&](const SystemError& e) -> SystemError {
    post("shm/name", e.what());
    return e;
  };
  if (rank == 0) {
    name_ = unique_name();
    fd.fd = ::shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd.fd < 0) {
      const int err = errno;
      throw refuse(SystemError(err, str_cat("shm_open ", name_, ": ", std::strerror(err),
                                            " (is /dev/shm mounted and writable?)")));
    }
    owner_unlink_ = true;
    if (::ftruncate(fd.fd, off_t(bytes)) != 0) {
      int err = errno;
      ::shm_unlink(name_.c_str());
      throw refuse(SystemError(err, str_cat("ftruncate ", name_, " to ", bytes, " bytes: ",
                                            std::strerror(err), " (is /dev/shm large enough?)")));
    }
    // Reserve the pages now: past /dev/shm's size a page would fault with SIGBUS when first
    // touched (a container's /dev/shm is often 64 MiB), instead of this error.
    if (int err = ::posix_fallocate(fd.fd, 0, off_t(bytes)); err != 0 && err != EOPNOTSUPP && err != EINVAL) {
      ::shm_unlink(name_.c_str());
      throw refuse(SystemError(err, str_cat("reserving ", bytes, " bytes for shared memory ", name_, ": ",
                                            std::strerror(err), "; /dev/shm is too small (docker run --shm-size, "
                                            "or mount -o remount,size=... /dev/shm)")));
    }
    store.set(prefix + "shm/name", name_);
  } else {
    name_ = store::to_string(store.get(prefix + "shm/name", timeout));
    if (!name_.empty() && name_[0] == '!')
      throw SystemError(EIO, str_cat("rank ", rank, ": rank 0 could not create the shared memory of this group: ",
                                     name_.substr(1)));
  }
  // From here on the name is out.
  try {
    map(fd.fd, rank);
  } catch (const std::exception& e) {
    if (owner_unlink_) ::shm_unlink(name_.c_str());
    post("shm/ready", str_cat("rank ", rank, ": ", e.what()));
    throw;
  }
  // The last rank to map removes the name: from now on the memory lives only in mappings.
  // Everyone waits for that, so that no rank can finish (and unlink the name, as the owner
  // does on destruction) before a slower rank has opened it.
  if (store.add(prefix + "shm/mapped", 1) == world) {
    ::shm_unlink(name_.c_str());
    store.set(prefix + "shm/ready", "1");
    return;
  }
  store.wait({prefix + "shm/ready"}, timeout);
  const std::string ready = store::to_string(store.get(prefix + "shm/ready", timeout));
  if (!ready.empty() && ready[0] == '!') {
    ::munmap(base_, bytes_);
    base_ = nullptr;
    if (owner_unlink_) ::shm_unlink(name_.c_str());
    throw SystemError(EIO, str_cat("rank ", rank, ": another rank could not map the shared memory of this "
                                   "group: ", ready.substr(1)));
  }
}

void ShmSegment::map(int fd, int rank) {
  if (rank != 0) {
    fd = ::shm_open(name_.c_str(), O_RDWR | O_CLOEXEC, 0600);
    LOCKSTEP_CHECK_ERRNO(fd, "shm_open ", name_, " created by rank 0 (are all ranks on one host, "
                         "with the same /dev/shm? use LOCKSTEP_TRANSPORT=tcp otherwise)");
  }
  FdCloser own{rank != 0 ? fd : -1};
  struct stat st{};
  LOCKSTEP_CHECK_ERRNO(::fstat(fd, &st), "fstat ", name_);
  LOCKSTEP_CHECK_EQ(size_t(st.st_size), bytes_, "shm segment ", name_, " has the wrong size");
  // MAP_POPULATE pre-faults every page of this mapping: no page fault inside a collective.
  void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    throw SystemError(err, str_cat("mmap ", name_, " (", bytes_, " bytes): ", std::strerror(err)));
  }
  base_ = static_cast<std::byte*>(p);
}

ShmSegment::~ShmSegment() {
  if (base_) ::munmap(base_, bytes_);
  if (owner_unlink_) ::shm_unlink(name_.c_str());  // ENOENT when already unlinked: harmless
}

}  // namespace lockstep::comm::shm
