// ShmSegment: one POSIX shared-memory object per group, created by rank 0 under a unique name
// published through the store, mapped (and pre-faulted) by every rank, and unlinked by the
// last rank to map it — so once the group is up, a crash of any rank leaves nothing behind.
#pragma once

#include <cstddef>
#include <string>

#include "lockstep/core/clock.h"
#include "lockstep/store/store.h"

namespace lockstep::comm::shm {

class ShmSegment {
 public:
  // Collective over the group's ranks (all call it with the same prefix and bytes). A rank
  // that cannot create or map the segment throws, and the others throw at once with its
  // reason (it is posted through the store) instead of waiting until `timeout`.
  ShmSegment(store::Store& store, const std::string& prefix, int rank, int world, size_t bytes,
             Millis timeout);
  ~ShmSegment();
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  std::byte* data() const { return base_; }
  size_t size() const { return bytes_; }
  const std::string& name() const { return name_; }

 private:
  // Opens (ranks other than 0; rank 0 passes its own fd), checks and maps the object.
  void map(int fd, int rank);

  std::byte* base_ = nullptr;
  size_t bytes_ = 0;
  std::string name_;
  bool owner_unlink_ = false;  // rank 0 unlinks on destruction if nobody did yet
};

}  // namespace lockstep::comm::shm
