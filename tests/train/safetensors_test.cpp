// Safetensors encode/decode: round trips of every dtype, and hostile files rejected with
// errors that name the file and the problem.
#include "lockstep/train/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "lockstep/core/error.h"

namespace lockstep::train {
namespace {

std::vector<uint8_t> with_header(const std::string& json, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> out(8);
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), json.begin(), json.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    decode_safetensors(bytes, "bad.safetensors");
    FAIL() << "accepted a bad file; expected an error containing '" << needle << "'";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(Safetensors, RoundTripsEveryDtypeShapeAndMetadata) {
  std::vector<float> a(6);
  std::iota(a.begin(), a.end(), -2.5f);
  std::vector<double> b = {1e300, -0.0, 3.25};
  std::vector<int64_t> c = {int64_t(1) << 40, -7};
  std::vector<int32_t> d = {5};
  std::vector<uint8_t> e = {1, 2, 3};
  std::vector<bf16> f = {float_to_bf16(1.5f), float_to_bf16(-3.0f)};
  std::vector<f16> g = {float_to_f16(0.25f)};
  std::vector<float> empty;
  std::vector<TensorView> views = {
      tensor_view<float>("a.weight", a, {2, 3}), tensor_view<double>("b", b, {3}),
      tensor_view<int64_t>("c", c, {2}),         tensor_view<int32_t>("scalar", d, {}),
      tensor_view<uint8_t>("e", e, {3, 1}),      tensor_view<bf16>("f", f, {2}),
      tensor_view<f16>("g", g, {1}),             tensor_view<float>("empty", empty, {0, 4})};
  const auto bytes = encode_safetensors(views, {{"format", "pt"}, {"k", "v"}});
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data must start 8-byte aligned";

  const auto got = decode_safetensors(bytes, "x");
  ASSERT_EQ(got.tensors.size(), views.size());
  EXPECT_EQ(got.metadata.at("k"), "v");
  for (const auto& v : views) {
    const StoredTensor* t = got.find(v.name);
    ASSERT_NE(t, nullptr) << v.name;
    EXPECT_EQ(t->dtype, v.dtype) << v.name;
    EXPECT_EQ(t->shape, v.shape) << v.name;
    EXPECT_TRUE(std::equal(t->bytes.begin(), t->bytes.end(), v.bytes.begin(), v.bytes.end())) << v.name;
  }
  EXPECT_EQ(got.find("a.weight")->to_floats(), a);
  EXPECT_EQ(got.find("f")->to_floats(), (std::vector<float>{1.5f, -3.0f}));
  EXPECT_EQ(got.find("nope"), nullptr);
}

TEST(Safetensors, EncoderRejectsBadInput) {
  std::vector<float> a(3);
  std::vector<TensorView> dup = {tensor_view<float>("x", a, {3}), tensor_view<float>("x", a, {3})};
  EXPECT_THROW(encode_safetensors(dup, {}), InvalidArgument);
  std::vector<TensorView> wrong = {tensor_view<float>("x", a, {4})};
  EXPECT_THROW(encode_safetensors(wrong, {}), InvalidArgument);
}

TEST(Safetensors, RejectsShortAndOversizedHeaders) {
  expect_error({1, 2, 3}, "too short");
  std::vector<uint8_t> huge(16, 0);
  const uint64_t n = uint64_t(1) << 40;
  std::memcpy(huge.data(), &n, 8);
  expect_error(huge, "exceeds the limit");
  std::vector<uint8_t> past(16, 0);
  const uint64_t m = 100;
  std::memcpy(past.data(), &m, 8);
  expect_error(past, "exceeds the file size");
}

TEST(Safetensors, RejectsMalformedHeaders) {
  expect_error(with_header("[1,2]   ", {}), "does not start with '{'");
  expect_error(with_header("{\"a\": ", {}), "not valid JSON");
  expect_error(with_header("{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}", {}),
               "nested too deeply");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", {}),
               "fall outside");
  expect_error(with_header(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})",
                           std::vector<uint8_t>(4)),
               "dtype 'Q7'");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                           std::vector<uint8_t>(4)),
               "non-negative");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})",
                           std::vector<uint8_t>(4)),
               "need 8 bytes");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}})",
                           std::vector<uint8_t>(4)),
               "too many");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})",
                           std::vector<uint8_t>(4)),
               "fall outside");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}})",
                           std::vector<uint8_t>(4)),
               "fall outside");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})",
                           std::vector<uint8_t>(4)),
               "unknown field");
  expect_error(with_header(R"({"__metadata__":{"a":1}})", {}), "not a string");
}

TEST(Safetensors, RejectsOverlapGapsAndTrailingBytes) {
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                           std::vector<uint8_t>(8)),
               "overlapping");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           std::vector<uint8_t>(8)),
               "overlapping or gapped");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                           std::vector<uint8_t>(12)),
               "trailing");
}

TEST(Safetensors, EveryTruncationOfAValidFileIsRejected) {
  std::vector<float> a(5, 1.0f);
  std::vector<TensorView> v = {tensor_view<float>("a", a, {5})};
  const auto bytes = encode_safetensors(v, {{"m", "x"}});
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    EXPECT_THROW(decode_safetensors(cut, "cut"), DataError) << "length " << len;
  }
}

}  // namespace
}  // namespace lockstep::train
