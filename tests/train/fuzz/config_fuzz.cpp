// libFuzzer harness for the TOML config reader: any input is either a config or a
// ConfigError naming the problem (never a crash, leak, hang or out-of-bounds read; built with
// ASan + UBSan), and a config that parses writes back to TOML that parses again.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "lockstep/core/error.h"
#include "lockstep/train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  lockstep::train::TrainConfig c;
  try {
    c = lockstep::train::parse_config(text, "fuzz.toml");
  } catch (const lockstep::ConfigError&) {
    return 0;
  }
  try {
    lockstep::train::validate(c);
  } catch (const lockstep::ConfigError&) {
  }
  const std::string again = lockstep::train::config_to_toml(c);
  try {
    (void)lockstep::train::parse_config(again, "rewritten.toml");
  } catch (const lockstep::ConfigError&) {
    std::abort();  // what we wrote must read back
  }
  return 0;
}
