// Runs a gloo call and turns gloo's exceptions into lockstep's: a gloo timeout becomes
// TimeoutError, an I/O failure (peer closed, reset) PeerError, a violated gloo precondition
// InvalidArgument — each naming `what` (the operation, its sequence number and the rank).
#pragma once

#include <gloo/common/error.h>
#include <gloo/common/logging.h>

#include <string>

#include "lockstep/core/error.h"

namespace lockstep::comm::gloo_backend {

template <class Fn>
void guard_gloo(const std::string& what, Fn&& fn) {
  try {
    fn();
  } catch (const ::gloo::IoException& e) {
    const std::string msg = e.what();
    if (msg.find("imed out") != std::string::npos || msg.find("timeout") != std::string::npos)
      throw TimeoutError(str_cat(what, ": gloo timed out: ", msg));
    throw PeerError(-1, what, str_cat(what, ": gloo I/O error: ", msg));
  } catch (const ::gloo::Exception& e) {
    throw PeerError(-1, what, str_cat(what, ": gloo error: ", e.what()));
  } catch (const ::gloo::EnforceNotMet& e) {
    throw InvalidArgument(str_cat(what, ": gloo rejected the call: ", e.what()));
  }
}

}  // namespace lockstep::comm::gloo_backend
