// libFuzzer harness for the checkpoint readers: the safetensors decoder and the state.json
// manifest parser. Both must reject any input with a DataError and never crash, leak or read
// out of bounds (built with ASan + UBSan).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto d = lockstep::train::decode_safetensors({data, size}, "fuzz");
    for (const auto& t : d.tensors) (void)t.to_floats();
  } catch (const lockstep::DataError&) {
  }
  try {
    (void)lockstep::train::parse_manifest({reinterpret_cast<const char*>(data), size}, "fuzz");
  } catch (const lockstep::DataError&) {
  }
  return 0;
}
