// The wire parser on its own: round trips, and every way a message can be cut or inflated.
#include <gtest/gtest.h>

#include "lockstep/core/error.h"
#include "lockstep/store/wire.h"

namespace lockstep::store::wire {
namespace {

std::vector<Request> samples() {
  std::vector<Request> out;
  auto req = [&](Op op, std::vector<std::string> keys) -> Request& {
    out.push_back(Request{});
    out.back().op = op;
    out.back().keys = std::move(keys);
    return out.back();
  };
  req(Op::set, {"k"}).value = {1, 2, 0, 3};
  req(Op::get, {"some/key"}).timeout_ms = 1234;
  req(Op::add, {"ctr"}).delta = -77;
  auto& cas = req(Op::compare_set, {"c"});
  cas.expected = {9};
  cas.value = {8, 7};
  req(Op::check, {"a", "b", "c"});
  req(Op::wait, {"x"}).timeout_ms = 5;
  req(Op::wait, {});
  req(Op::delete_key, {"d"});
  req(Op::num_keys, {});
  req(Op::ping, {});
  return out;
}

std::span<const uint8_t> body_of(const Bytes& frame) {
  return std::span<const uint8_t>(frame).subspan(kFrameHeaderBytes);
}

TEST(StoreWire, RequestsRoundTrip) {
  for (auto& r : samples()) {
    Bytes f;
    encode_request(f, r);
    ASSERT_EQ(complete_frame_size(f), f.size());
    auto p = parse_request(body_of(f));
    EXPECT_EQ(p.op, r.op);
    EXPECT_EQ(p.keys, r.keys);
    EXPECT_EQ(p.value, r.value);
    EXPECT_EQ(p.expected, r.expected);
    EXPECT_EQ(p.delta, r.delta);
    EXPECT_EQ(p.timeout_ms, r.timeout_ms);
  }
}

TEST(StoreWire, HelloAndResponseRoundTrip) {
  Bytes f;
  encode_hello(f, "secret");
  auto h = parse_hello(body_of(f));
  EXPECT_EQ(h.token, "secret");
  EXPECT_EQ(h.version, kVersion);
  Bytes r;
  encode_response(r, Status::timeout, std::string_view("'a'"));
  auto resp = parse_response(body_of(r));
  EXPECT_EQ(resp.status, Status::timeout);
  EXPECT_EQ(std::string(resp.payload.begin(), resp.payload.end()), "'a'");
  Bytes i;
  put_i64(i, -5);
  EXPECT_EQ(get_i64(i), -5);
}

TEST(StoreWire, EveryTruncationIsAProtocolError) {
  for (auto& r : samples()) {
    Bytes f;
    encode_request(f, r);
    auto body = body_of(f);
    for (size_t n = 0; n < body.size(); ++n) {
      EXPECT_THROW(parse_request(body.first(n)), ProtocolError) << op_name(r.op) << " cut at " << n;
    }
    EXPECT_EQ(complete_frame_size(std::span<const uint8_t>(f).first(f.size() - 1)), std::nullopt);
  }
}

TEST(StoreWire, TrailingBytesAreRejected) {
  Bytes f;
  encode_request(f, samples()[0]);
  f.push_back(0);
  EXPECT_THROW(parse_request(body_of(f)), ProtocolError);
}

TEST(StoreWire, BoundsAreEnforced) {
  Bytes hdr = {0, 0, 0, 0};
  EXPECT_THROW(complete_frame_size(hdr), ProtocolError);  // empty frame
  hdr = {0xFF, 0xFF, 0xFF, 0xFF};
  EXPECT_THROW(complete_frame_size(hdr), ProtocolError);  // over kMaxMessageBytes
  hdr = {0x00, 0x10, 0x00, 0x00};                         // 4 KiB: fine for requests...
  EXPECT_EQ(complete_frame_size(hdr), std::nullopt);
  EXPECT_THROW(complete_frame_size(hdr, kMaxHelloBytes), ProtocolError);  // ...not for hellos
  EXPECT_THROW(frame_body_length(Bytes{1, 0}), ProtocolError);           // short header

  Bytes body = {uint8_t(Op::set), 0, 0, 0, 0};  // empty key
  EXPECT_THROW(parse_request(body), ProtocolError);
  body = {uint8_t(Op::wait), 0xFF, 0xFF, 0, 0};  // 65535 keys > kMaxWaitKeys
  EXPECT_THROW(parse_request(body), ProtocolError);
  body = {0};
  EXPECT_THROW(parse_request(body), ProtocolError);  // op 0
  body = {uint8_t(Op::ping) + 1};
  EXPECT_THROW(parse_request(body), ProtocolError);
  body = {9};
  EXPECT_THROW(parse_response(body), ProtocolError);  // unknown status

  Bytes hello;
  encode_hello(hello, std::string(kMaxTokenBytes + 1, 't'));
  EXPECT_THROW(parse_hello(body_of(hello)), ProtocolError);
  Bytes bad_magic = {1, 2, 3, 4, 1, 0, 0, 0, 0, 0};
  EXPECT_THROW(parse_hello(bad_magic), ProtocolError);
}

}  // namespace
}  // namespace lockstep::store::wire
