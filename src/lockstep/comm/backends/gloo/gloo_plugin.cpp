// The gloo backend's entry point (plugin.h): liblockstep_backend_gloo.so, or built in.
#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/backends/plugin.h"

namespace {

std::string gloo_unavailable_reason(int /*world*/) {
  return "";
}

}  // namespace

LOCKSTEP_BACKEND_ENTRY(gloo, lockstep::comm::make_gloo_group, gloo_unavailable_reason)
