// LinePrefixer: copies a worker's output to the launcher's stdout/stderr line by line with a
// prefix ("[rank 3] "), so that lines of different workers never interleave mid-line.
#pragma once

#include <string>

namespace lockstep::launch {

class LinePrefixer {
 public:
  LinePrefixer(int target_fd, std::string prefix) : target_(target_fd), prefix_(std::move(prefix)) {}
  // Reads what is available on `fd` (non-blocking use: call after poll()); returns false at EOF.
  bool pump(int fd);
  // Writes a trailing partial line, if any.
  void flush();

 private:
  void emit(const char* data, size_t n);

  int target_;
  std::string prefix_;
  std::string partial_;
};

}  // namespace lockstep::launch
