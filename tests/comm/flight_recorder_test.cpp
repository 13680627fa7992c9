// FlightRecorder: a ring of the last operations, oldest first, with the last started and
// completed collective; point-to-point operations do not move the collective counters.
#include "lockstep/comm/flight_recorder.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace lockstep::comm {
namespace {

int lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

TEST(FlightRecorder, KeepsTheLastOperationsOldestFirst) {
  FlightRecorder fr(4);
  EXPECT_EQ(fr.last_started(), -1);
  EXPECT_EQ(fr.last_completed(), -1);
  EXPECT_EQ(fr.dump(), "");
  for (uint64_t seq = 0; seq < 6; ++seq) fr.finish(fr.start({OpKind::allreduce, seq, 0, "g"}, true, 64), true);
  const size_t slot = fr.start({OpKind::broadcast, 6, 0, "g"}, true, 8);
  EXPECT_EQ(fr.last_started(), 6);
  EXPECT_EQ(fr.last_completed(), 5);
  std::string d = fr.dump();
  EXPECT_EQ(lines(d), 4) << d;
  EXPECT_LT(d.find("#3 allreduce"), d.find("#5 allreduce")) << d;
  EXPECT_EQ(d.find("#2 "), std::string::npos) << d;  // overwritten
  EXPECT_NE(d.find("#6 broadcast"), std::string::npos) << d;
  EXPECT_NE(d.find("RUNNING"), std::string::npos) << d;
  fr.finish(slot, false);
  EXPECT_NE(fr.dump().find("FAILED"), std::string::npos);
  EXPECT_EQ(fr.last_completed(), 5);  // a failed operation did not complete
}

TEST(FlightRecorder, PointToPointIsRecordedButNotCountedAsCollective) {
  FlightRecorder fr(8);
  fr.finish(fr.start({OpKind::allreduce, 0, 0, "g"}, true, 4), true);
  fr.finish(fr.start({OpKind::send, 0, 0, "g"}, false, 4), true);
  EXPECT_EQ(fr.last_started(), 0);
  EXPECT_EQ(fr.last_completed(), 0);
  EXPECT_NE(fr.dump().find("p2p #0 send"), std::string::npos) << fr.dump();
}

}  // namespace
}  // namespace lockstep::comm
