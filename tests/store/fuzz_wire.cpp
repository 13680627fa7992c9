// libFuzzer harness for the TcpStore wire parser (built with clang, see CMakeLists.txt).
// The input is read the way the server reads a connection: frames, the first a hello,
// the rest requests; it is also parsed whole as a request, a response and a hello.
// Properties: the parser only ever throws ProtocolError (anything else escapes and is a
// crash), never reads out of bounds (ASan), and what it accepts re-encodes to the same bytes.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "lockstep/core/error.h"
#include "lockstep/store/wire.h"

namespace wire = lockstep::store::wire;
using lockstep::ProtocolError;
using lockstep::store::Bytes;

namespace {

void expect_same(std::span<const uint8_t> frame, const Bytes& reencoded, const char* what) {
  if (frame.size() != reencoded.size() ||
      !std::equal(frame.begin(), frame.end(), reencoded.begin())) {
    std::fprintf(stderr, "fuzz_wire: %s does not re-encode to the bytes it was parsed from\n",
                 what);
    std::abort();
  }
}

// Parses a byte stream as one connection would; stops at the first incomplete frame.
void parse_stream(std::span<const uint8_t> in) {
  bool authed = false;
  size_t off = 0;
  for (;;) {
    auto rest = in.subspan(off);
    auto n = wire::complete_frame_size(rest, authed ? wire::kMaxMessageBytes : wire::kMaxHelloBytes);
    if (!n) return;
    auto frame = rest.first(*n);
    auto body = frame.subspan(wire::kFrameHeaderBytes);
    Bytes again;
    if (!authed) {
      auto h = wire::parse_hello(body);
      wire::encode_hello(again, h.token, h.version);
      expect_same(frame, again, "hello");
      authed = true;
    } else {
      auto r = wire::parse_request(body);
      wire::encode_request(again, r);
      expect_same(frame, again, "request");
    }
    off += *n;
  }
}

template <class F>
void only_protocol_errors(F&& f) {
  try {
    f();
  } catch (const ProtocolError&) {
    // The expected outcome for malformed input.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  only_protocol_errors([&] { parse_stream(in); });
  only_protocol_errors([&] { wire::parse_request(in); });
  only_protocol_errors([&] { wire::parse_hello(in); });
  only_protocol_errors([&] {
    auto r = wire::parse_response(in);
    if (r.status == wire::Status::ok && r.payload.size() == 8) wire::get_i64(r.payload);
  });
  return 0;
}
