// The `lockstep` command line.
#include <cstdio>
#include <cstring>

#include "lockstep/config.h"

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("lockstep %s\n", LOCKSTEP_VERSION);
    return 0;
  }
  std::printf("usage: lockstep <command> [options]\n");
  return argc > 1 ? 2 : 0;
}
