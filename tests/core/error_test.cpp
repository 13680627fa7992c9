#include "lockstep/core/error.h"

#include <fcntl.h>
#include <gtest/gtest.h>

namespace lockstep {
namespace {

TEST(Error, CheckCarriesFileLineAndBothValues) {
  int a = 3, b = 4;
  try {
    LOCKSTEP_CHECK_EQ(a, b, "while testing ", "checks");
    FAIL() << "expected a throw";
  } catch (const InternalError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("error_test.cpp"), std::string::npos) << m;
    EXPECT_NE(m.find("a == b"), std::string::npos) << m;
    EXPECT_NE(m.find("(3 vs 4)"), std::string::npos) << m;
    EXPECT_NE(m.find("while testing checks"), std::string::npos) << m;
  }
  EXPECT_NO_THROW(LOCKSTEP_CHECK(a < b, "never shown"));
}

TEST(Error, ThrowBuildsTypedMessage) {
  try {
    LOCKSTEP_THROW(ConfigError, "key '", "lr", "' must be > 0, got ", -1.5);
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "key 'lr' must be > 0, got -1.5");
  }
}

TEST(Error, ErrnoBecomesSystemError) {
  try {
    LOCKSTEP_CHECK_ERRNO(::open("/nonexistent/lockstep", O_RDONLY), "open /nonexistent");
    FAIL();
  } catch (const SystemError& e) {
    EXPECT_EQ(e.error_code(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos);
  }
  int fd = LOCKSTEP_CHECK_ERRNO(::open("/dev/null", O_RDONLY));
  EXPECT_GE(fd, 0);
  ::close(fd);
}

TEST(Error, PeerErrorKeepsRankAndOp) {
  PeerError e(3, "allreduce", "rank 3 closed its connection");
  EXPECT_EQ(e.peer_rank(), 3);
  EXPECT_EQ(e.op(), "allreduce");
}

}  // namespace
}  // namespace lockstep
