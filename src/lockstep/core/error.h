// Errors: one exception hierarchy for what can happen in a healthy program, and
// LOCKSTEP_CHECK for broken invariants (prints file, line, the condition and both values).
//
//   LOCKSTEP_THROW(ConfigError, "unknown model '", name, "' (config line ", line, ")");
//   LOCKSTEP_CHECK(count <= cap, "bucket overflow: count=", count, " cap=", cap);
//   LOCKSTEP_CHECK_EQ(a.size(), b.size(), "shape mismatch in ", op);
//   LOCKSTEP_CHECK_ERRNO(::bind(fd, ...), "bind ", addr);   // -1 -> SystemError with strerror
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lockstep {

// Concatenates anything with operator<< into a string.
template <class... Args>
std::string str_cat(const Args&... args) {
  if constexpr (sizeof...(Args) == 0) {
    return {};
  } else {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
  }
}

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A blocking call ran past its deadline.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// A peer (another rank) failed, closed its connection or sent something invalid.
class PeerError : public Error {
 public:
  PeerError(int peer_rank, std::string op, const std::string& what)
      : Error(what), peer_rank_(peer_rank), op_(std::move(op)) {}
  explicit PeerError(const std::string& what) : Error(what) {}
  int peer_rank() const { return peer_rank_; }
  const std::string& op() const { return op_; }

 private:
  int peer_rank_ = -1;
  std::string op_;
};

// A data file (dataset, checkpoint) is missing, unreadable or malformed.
class DataError : public Error {
 public:
  using Error::Error;
};

// A configuration value, flag or environment variable is invalid.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A caller passed an argument that violates an API contract.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A wire message violates the protocol (bad magic, version, length, token).
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// An OS call failed; carries errno.
class SystemError : public Error {
 public:
  SystemError(int err, const std::string& what) : Error(what), errno_(err) {}
  int error_code() const { return errno_; }

 private:
  int errno_;
};

// The operation was aborted (ProcessGroup::abort, shutdown).
class AbortedError : public Error {
 public:
  using Error::Error;
};

// A broken internal invariant: a bug in lockstep, not in the user's input.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* cond, const std::string& msg);
[[noreturn]] void errno_failed(const char* file, int line, const char* expr, int err,
                               const std::string& msg);
template <class A, class B>
[[noreturn]] void check_op_failed(const char* file, int line, const char* expr, const A& a,
                                  const B& b, const std::string& msg) {
  check_failed(file, line, expr, str_cat("(", a, " vs ", b, ") ", msg));
}
}  // namespace detail

}  // namespace lockstep

#define LOCKSTEP_THROW(Type, ...) throw Type(::lockstep::str_cat(__VA_ARGS__))

#define LOCKSTEP_CHECK(cond, ...)                                                     \
  do {                                                                                \
    if (!(cond)) [[unlikely]]                                                         \
      ::lockstep::detail::check_failed(__FILE__, __LINE__, #cond,                     \
                                       ::lockstep::str_cat(__VA_ARGS__));             \
  } while (0)

#define LOCKSTEP_CHECK_OP_(op, a, b, ...)                                             \
  do {                                                                                \
    const auto& lockstep_a_ = (a);                                                    \
    const auto& lockstep_b_ = (b);                                                    \
    if (!(lockstep_a_ op lockstep_b_)) [[unlikely]]                                   \
      ::lockstep::detail::check_op_failed(__FILE__, __LINE__, #a " " #op " " #b,      \
                                          lockstep_a_, lockstep_b_,                   \
                                          ::lockstep::str_cat(__VA_ARGS__));          \
  } while (0)

#define LOCKSTEP_CHECK_EQ(a, b, ...) LOCKSTEP_CHECK_OP_(==, a, b, __VA_ARGS__)
#define LOCKSTEP_CHECK_NE(a, b, ...) LOCKSTEP_CHECK_OP_(!=, a, b, __VA_ARGS__)
#define LOCKSTEP_CHECK_LT(a, b, ...) LOCKSTEP_CHECK_OP_(<, a, b, __VA_ARGS__)
#define LOCKSTEP_CHECK_LE(a, b, ...) LOCKSTEP_CHECK_OP_(<=, a, b, __VA_ARGS__)
#define LOCKSTEP_CHECK_GT(a, b, ...) LOCKSTEP_CHECK_OP_(>, a, b, __VA_ARGS__)
#define LOCKSTEP_CHECK_GE(a, b, ...) LOCKSTEP_CHECK_OP_(>=, a, b, __VA_ARGS__)

// Wraps an OS call that returns -1 and sets errno on failure; evaluates to its result.
#define LOCKSTEP_CHECK_ERRNO(expr, ...)                                               \
  ([&]() {                                                                            \
    auto lockstep_r_ = (expr);                                                        \
    if (lockstep_r_ == -1) [[unlikely]]                                               \
      ::lockstep::detail::errno_failed(__FILE__, __LINE__, #expr, errno,              \
                                       ::lockstep::str_cat(__VA_ARGS__));             \
    return lockstep_r_;                                                               \
  }())
