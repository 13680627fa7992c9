// libFuzzer harness for the IDX reader: every input must either parse or raise DataError;
// anything else (a crash, a sanitizer report, another exception) is a bug.
// Input: the whole input as one IDX file (gunzipped first when it is gzip), then the
// input split into a labels file (length in the first two bytes) and an images file.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/data/file_reader.h"
#include "lockstep/data/idx.h"
#include "lockstep/data/transform.h"

using namespace lockstep::data;

namespace {

constexpr size_t kMaxInflate = size_t{1} << 24;

IdxArray parse_maybe_gzip(std::span<const uint8_t> in, const char* name) {
  if (!is_gzip(in)) return parse_idx(in, name);
  std::vector<uint8_t> raw = gunzip(in, name, kMaxInflate);
  return parse_idx(raw, name);
}

// Touch every sample the way a DataLoader would, so bad shapes show up as memory errors.
void exercise(const Dataset& d) {
  SampleTransform t(d, {.crop_padding = 1, .horizontal_flip = true, .seed = 1});
  std::vector<float> out(static_cast<size_t>(d.sample_numel()));
  for (int64_t i = 0; i < d.size() && i < 64; ++i) t.apply(i, 0, out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  try {
    parse_maybe_gzip(in, "whole");
  } catch (const lockstep::DataError&) {
  }
  if (size < 2) return 0;
  const size_t label_len = std::min<size_t>((size_t(data[0]) << 8) | data[1], size - 2);
  try {
    IdxArray labels = parse_maybe_gzip(in.subspan(2, label_len), "labels");
    IdxArray images = parse_maybe_gzip(in.subspan(2 + label_len), "images");
    if (images.data.size() > (size_t{1} << 22)) return 0;  // keep each run fast
    exercise(idx_to_dataset(std::move(images), "images", labels, "labels", 10));
  } catch (const lockstep::DataError&) {
  }
  return 0;
}
