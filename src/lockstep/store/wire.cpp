#include "lockstep/store/wire.h"

#include <cstring>

#include "lockstep/core/error.h"

namespace lockstep::store::wire {
namespace {

// Little-endian writes, independent of the host's byte order.
void put_u8(Bytes& out, uint8_t v) { out.push_back(v); }
void put_uint(Bytes& out, uint64_t v, int nbytes) {
  for (int i = 0; i < nbytes; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_bytes(Bytes& out, std::span<const uint8_t> b) {
  put_uint(out, b.size(), 4);
  out.insert(out.end(), b.begin(), b.end());
}
void put_str(Bytes& out, std::string_view s) {
  put_bytes(out, {reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

// Writes the body through `fill`, then patches the length header in front of it.
template <class F>
void frame(Bytes& out, F&& fill) {
  size_t start = out.size();
  put_uint(out, 0, 4);
  fill();
  uint64_t len = out.size() - start - kFrameHeaderBytes;
  for (int i = 0; i < 4; ++i) out[start + i] = uint8_t(len >> (8 * i));
}

// Bounds-checked sequential reader over one frame body.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}

  uint64_t uint(int nbytes, const char* what) {
    need(size_t(nbytes), what);
    uint64_t v = 0;
    for (int i = 0; i < nbytes; ++i) v |= uint64_t(b_[pos_ + i]) << (8 * i);
    pos_ += size_t(nbytes);
    return v;
  }
  std::span<const uint8_t> bytes(size_t max, const char* what) {
    uint64_t n = uint(4, what);
    if (n > max) {
      LOCKSTEP_THROW(ProtocolError, "store message: ", what, " of ", n,
                     " bytes exceeds the limit of ", max);
    }
    need(size_t(n), what);
    auto s = b_.subspan(pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }
  std::string key() {
    auto s = bytes(kMaxKeyBytes, "key");
    if (s.empty()) LOCKSTEP_THROW(ProtocolError, "store message: empty key");
    return std::string(s.begin(), s.end());
  }
  Bytes value(const char* what) {
    auto s = bytes(kMaxValueBytes, what);
    return Bytes(s.begin(), s.end());
  }
  std::span<const uint8_t> rest() {
    auto s = b_.subspan(pos_);
    pos_ = b_.size();
    return s;
  }
  void done() const {
    if (pos_ != b_.size()) {
      LOCKSTEP_THROW(ProtocolError, "store message: ", b_.size() - pos_, " unexpected trailing bytes");
    }
  }

 private:
  void need(size_t n, const char* what) const {
    if (b_.size() - pos_ < n) {
      LOCKSTEP_THROW(ProtocolError, "store message truncated while reading ", what, " (need ", n,
                     " bytes, have ", b_.size() - pos_, ")");
    }
  }
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

bool single_key_op(Op op) {
  return op == Op::set || op == Op::get || op == Op::add || op == Op::compare_set ||
         op == Op::delete_key;
}

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::set: return "set";
    case Op::get: return "get";
    case Op::add: return "add";
    case Op::compare_set: return "compare_set";
    case Op::check: return "check";
    case Op::wait: return "wait";
    case Op::delete_key: return "delete_key";
    case Op::num_keys: return "num_keys";
    case Op::ping: return "ping";
  }
  return "unknown";
}

void encode_hello(Bytes& out, std::string_view token, uint16_t version) {
  frame(out, [&] {
    put_uint(out, kMagic, 4);
    put_uint(out, version, 2);
    put_str(out, token);
  });
}

void encode_request(Bytes& out, const Request& r) {
  frame(out, [&] {
    put_u8(out, uint8_t(r.op));
    if (single_key_op(r.op)) {
      put_str(out, r.keys.empty() ? std::string_view() : std::string_view(r.keys[0]));
    } else if (r.op == Op::check || r.op == Op::wait) {
      put_uint(out, r.keys.size(), 4);
      for (auto& k : r.keys) put_str(out, k);
    }
    switch (r.op) {
      case Op::set: put_bytes(out, r.value); break;
      case Op::compare_set: put_bytes(out, r.expected); put_bytes(out, r.value); break;
      case Op::add: put_uint(out, uint64_t(r.delta), 8); break;
      case Op::get:
      case Op::wait: put_uint(out, r.timeout_ms, 4); break;
      default: break;
    }
  });
}

void encode_response(Bytes& out, Status status, std::span<const uint8_t> payload) {
  frame(out, [&] {
    put_u8(out, uint8_t(status));
    out.insert(out.end(), payload.begin(), payload.end());
  });
}

size_t frame_body_length(std::span<const uint8_t> header, size_t max_body) {
  uint64_t len = Reader(header).uint(4, "frame length");
  if (len == 0) LOCKSTEP_THROW(ProtocolError, "store message: empty frame");
  if (len > max_body) {
    LOCKSTEP_THROW(ProtocolError, "store message of ", len, " bytes exceeds the limit of ",
                   max_body, " bytes");
  }
  return size_t(len);
}

std::optional<size_t> complete_frame_size(std::span<const uint8_t> buf, size_t max_body) {
  if (buf.size() < kFrameHeaderBytes) return std::nullopt;
  size_t len = frame_body_length(buf, max_body);
  if (buf.size() - kFrameHeaderBytes < len) return std::nullopt;
  return len + kFrameHeaderBytes;
}

Hello parse_hello(std::span<const uint8_t> body) {
  Reader r(body);
  Hello h;
  h.magic = uint32_t(r.uint(4, "magic"));
  if (h.magic != kMagic) {
    LOCKSTEP_THROW(ProtocolError, "store hello: bad magic 0x", std::hex, h.magic,
                   " (not a lockstep store client?)");
  }
  h.version = uint16_t(r.uint(2, "version"));
  auto tok = r.bytes(kMaxTokenBytes, "token");
  h.token.assign(tok.begin(), tok.end());
  r.done();
  return h;
}

Request parse_request(std::span<const uint8_t> body) {
  Reader r(body);
  Request q;
  auto op = uint8_t(r.uint(1, "op"));
  if (op < uint8_t(Op::set) || op > uint8_t(Op::ping)) {
    LOCKSTEP_THROW(ProtocolError, "store message: unknown op ", int(op));
  }
  q.op = Op(op);
  if (single_key_op(q.op)) {
    q.keys.push_back(r.key());
  } else if (q.op == Op::check || q.op == Op::wait) {
    uint64_t n = r.uint(4, "key count");
    if (n > kMaxWaitKeys) {
      LOCKSTEP_THROW(ProtocolError, "store message: ", n, " keys exceeds the limit of ",
                     kMaxWaitKeys);
    }
    // Each key needs at least 5 bytes, so a lying count fails before a big reserve.
    if (n > body.size()) LOCKSTEP_THROW(ProtocolError, "store message: key count ", n, " truncated");
    q.keys.reserve(size_t(n));
    for (uint64_t i = 0; i < n; ++i) q.keys.push_back(r.key());
  }
  switch (q.op) {
    case Op::set: q.value = r.value("value"); break;
    case Op::compare_set:
      q.expected = r.value("expected value");
      q.value = r.value("desired value");
      break;
    case Op::add: q.delta = int64_t(r.uint(8, "delta")); break;
    case Op::get:
    case Op::wait: q.timeout_ms = uint32_t(r.uint(4, "timeout")); break;
    default: break;
  }
  r.done();
  return q;
}

Response parse_response(std::span<const uint8_t> body) {
  Reader r(body);
  auto st = uint8_t(r.uint(1, "status"));
  if (st > uint8_t(Status::refused)) {
    LOCKSTEP_THROW(ProtocolError, "store message: unknown status ", int(st));
  }
  return Response{Status(st), r.rest()};
}

void put_i64(Bytes& out, int64_t v) { put_uint(out, uint64_t(v), 8); }

int64_t get_i64(std::span<const uint8_t> payload) {
  Reader r(payload);
  auto v = int64_t(r.uint(8, "integer"));
  r.done();
  return v;
}

}  // namespace lockstep::store::wire
