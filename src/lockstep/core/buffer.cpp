#include "lockstep/core/buffer.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace lockstep {

AlignedBuffer::AlignedBuffer(size_t bytes, bool prefault) { reserve(bytes, prefault); }

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void AlignedBuffer::reserve(size_t bytes, bool prefault) {
  if (bytes <= size_ && data_) return;
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (!p) throw std::bad_alloc();
  data_ = static_cast<std::byte*>(p);
  size_ = bytes;
  if (prefault) prefault_pages(data_, rounded);
}

void prefault_pages(void* data, size_t bytes) {
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  auto* p = static_cast<volatile char*>(data);
  for (size_t off = 0; off < bytes; off += page) p[off] = 0;
}

}  // namespace lockstep
