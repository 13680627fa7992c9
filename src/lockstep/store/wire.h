// The TcpStore wire protocol: length-prefixed binary frames, little-endian integers.
// Pure encode/parse code (no sockets, no globals) so it can be fuzzed on its own.
//
//   frame    := u32 body_len | body                       (1 <= body_len <= kMaxMessageBytes)
//   hello    := u32 kMagic | u16 kVersion | bytes token    (first frame a client sends)
//   request  := u8 Op | op-specific fields (keys and values are `bytes` = u32 len | data)
//   response := u8 Status | payload (op-specific on ok, a UTF-8 message otherwise)
//
// Every length is checked against kMaxKeyBytes / kMaxValueBytes / kMaxTokenBytes before use;
// a violation throws ProtocolError, which the server answers by dropping that one connection.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lockstep/store/store.h"

namespace lockstep::store::wire {

inline constexpr uint32_t kMagic = 0x54534B4C;  // "LKST" on the wire
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 4;
inline constexpr size_t kMaxTokenBytes = 1024;
inline constexpr size_t kMaxWaitKeys = 4096;
// Largest body: compare_set carries a key and two values; a wait carries many keys.
inline constexpr size_t kMaxMessageBytes = 2 * kMaxValueBytes + (1u << 20);
static_assert(kMaxWaitKeys * (kMaxKeyBytes + 4) < kMaxMessageBytes);

enum class Op : uint8_t {
  set = 1,
  get = 2,          // waits for the key (server-side, up to timeout_ms)
  add = 3,
  compare_set = 4,
  check = 5,
  wait = 6,         // waits for every key (server-side, up to timeout_ms)
  delete_key = 7,
  num_keys = 8,
  ping = 9,
};
const char* op_name(Op op);

enum class Status : uint8_t {
  ok = 0,
  timeout = 1,   // payload: the missing keys, comma separated
  error = 2,     // payload: what went wrong (e.g. add on a non-integer value)
  refused = 3,   // hello rejected (token, version); payload says why
};

struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  std::string token;
};

// One decoded request. Only the fields of `op` are meaningful.
struct Request {
  Op op = Op::ping;
  std::vector<std::string> keys;  // set/get/add/cas/delete: exactly one; check/wait: 0..kMaxWaitKeys
  Bytes value;                    // set: value; compare_set: desired
  Bytes expected;                 // compare_set
  int64_t delta = 0;              // add
  uint32_t timeout_ms = 0;        // get/wait
};

struct Response {
  Status status = Status::ok;
  std::span<const uint8_t> payload;  // points into the parsed body
};

// Appends one whole frame (header + body) to `out`.
void encode_hello(Bytes& out, std::string_view token, uint16_t version = kVersion);
void encode_request(Bytes& out, const Request& req);
void encode_response(Bytes& out, Status status, std::span<const uint8_t> payload);
inline void encode_response(Bytes& out, Status status, std::string_view msg) {
  encode_response(out, status,
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(msg.data()),
                                           msg.size()));
}

// Size of the first complete frame in `buf` (header included), or nullopt if more bytes are
// needed. Throws ProtocolError when the announced length is zero or over kMaxMessageBytes.
// Body length announced by a 4-byte frame header; throws ProtocolError when it is zero or
// over max_body.
size_t frame_body_length(std::span<const uint8_t> header, size_t max_body = kMaxMessageBytes);
// `max_body` lets the server hold unauthenticated peers to hello-sized frames.
std::optional<size_t> complete_frame_size(std::span<const uint8_t> buf,
                                          size_t max_body = kMaxMessageBytes);
inline constexpr size_t kMaxHelloBytes = 4 + 2 + 4 + kMaxTokenBytes;

// Parse a frame body (without the 4-byte header). Throw ProtocolError on any violation:
// unknown op, truncated field, trailing bytes, a length over its bound.
Hello parse_hello(std::span<const uint8_t> body);
Request parse_request(std::span<const uint8_t> body);
Response parse_response(std::span<const uint8_t> body);

// Fixed-size payload helpers (add/num_keys answer an i64, check/delete a bool).
void put_i64(Bytes& out, int64_t v);
int64_t get_i64(std::span<const uint8_t> payload);

}  // namespace lockstep::store::wire
