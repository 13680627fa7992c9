// Small helpers shared by the pair-transport algorithms (ring.cpp, tree.cpp, ...).
#pragma once

#include <cstddef>
#include <cstdint>

namespace lockstep::comm::algo {

// Pipelining unit of the ring and the trees: small enough that send, receive and reduce of
// neighbouring chunks overlap, large enough that per-message costs vanish.
inline constexpr size_t kChunkBytes = 256 << 10;

inline int mod(int a, int p) {
  return ((a % p) + p) % p;
}
inline uint8_t* bytes_of(void* p) {
  return static_cast<uint8_t*>(p);
}

}  // namespace lockstep::comm::algo
