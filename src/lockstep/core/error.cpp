#include "lockstep/core/error.h"

#include <cstring>

namespace lockstep::detail {

static std::string_view basename(const char* file) {
  std::string_view f(file);
  auto pos = f.rfind("src/lockstep/");
  return pos == std::string_view::npos ? f : f.substr(pos + 4);
}

void check_failed(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(str_cat("internal check failed at ", basename(file), ":", line, ": ", cond,
                              msg.empty() ? "" : ": ", msg,
                              " (this is a bug in lockstep; please report it)"));
}

void errno_failed(const char* file, int line, const char* expr, int err, const std::string& msg) {
  throw SystemError(err, str_cat(msg.empty() ? std::string(expr) : msg, ": ", std::strerror(err),
                                 " (errno ", err, ", at ", basename(file), ":", line, ")"));
}

}  // namespace lockstep::detail
