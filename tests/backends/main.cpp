// main of the conformance suite: registers the built-in backends before gtest enumerates
// the cases; under mpirun only rank 0 prints the full report (the others print failures).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "lockstep/comm/backends/registry.h"

int main(int argc, char** argv) {
  lockstep::comm::register_builtin_backends();
  // Read by InitGoogleTest when it picks the result printer, so set before it.
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (rank != nullptr && std::string(rank) != "0") GTEST_FLAG_SET(brief, true);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
