// AlignedBuffer: an owning, 64-byte aligned byte buffer. Large buffers can be pre-faulted
// (every page touched once) so that the first collective does not pay for page faults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace lockstep {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes, bool prefault = false);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  template <class T>
  std::span<T> as() {
    return {reinterpret_cast<T*>(data_), size_ / sizeof(T)};
  }
  template <class T>
  std::span<const T> as() const {
    return {reinterpret_cast<const T*>(data_), size_ / sizeof(T)};
  }
  // Grows (never shrinks) to at least `bytes`; contents are not preserved.
  void reserve(size_t bytes, bool prefault = false);

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Touches one byte per page so that the pages are mapped before they are timed.
void prefault_pages(void* data, size_t bytes);

}  // namespace lockstep
