// libFuzzer harness for the CIFAR-10 and text readers: every input must either parse or
// raise DataError; anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lockstep/core/error.h"
#include "lockstep/data/cifar.h"
#include "lockstep/data/file_reader.h"
#include "lockstep/data/text.h"
#include "lockstep/data/transform.h"

using namespace lockstep::data;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  std::vector<uint8_t> raw;
  try {
    if (is_gzip(in)) {
      raw = gunzip(in, "fuzz", size_t{1} << 24);
      in = raw;
    }
  } catch (const lockstep::DataError&) {
    return 0;
  }
  try {
    Dataset d = parse_cifar10(in, "cifar");
    SampleTransform t(
        d,
        {.mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f}, .crop_padding = 4, .horizontal_flip = true});
    std::vector<float> out(static_cast<size_t>(d.sample_numel()));
    for (int64_t i = 0; i < d.size() && i < 16; ++i) t.apply(i, 0, out);
  } catch (const lockstep::DataError&) {
  }
  if (!in.empty()) {
    try {
      TextDataset t = parse_text(in.subspan(1), "text", 1 + in[0] % 32);
      if (t.data.size() > 0) {
        auto tg = t.data.targets(t.data.size() - 1);
        (void)t.vocab.decode(std::vector<int32_t>(tg.begin(), tg.end()));
      }
    } catch (const lockstep::DataError&) {
    }
  }
  return 0;
}
