// LinePrefixer: copies a worker's output to the launcher's stdout/stderr line by line with a
// prefix ("[rank 3] "), so that lines of different workers never interleave mid-line.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace lockstep::launch {

class LinePrefixer {
 public:
  LinePrefixer(int target_fd, std::string prefix) : target_(target_fd), prefix_(std::move(prefix)) {}
  // Each line (without its newline) is written as rewrite(line) instead (mpirun's tagged output).
  using Rewrite = std::function<std::string(std::string_view)>;
  LinePrefixer(int target_fd, Rewrite rewrite) : target_(target_fd), rewrite_(std::move(rewrite)) {}
  // Reads what is available on `fd` (non-blocking use: call after poll()); returns false at EOF.
  bool pump(int fd);
  // Writes a trailing partial line, if any.
  void flush();

 private:
  void emit(const char* data, size_t n);
  void add_line(std::string& out, std::string_view line);  // line without its newline

  int target_;
  std::string prefix_;
  Rewrite rewrite_;
  std::string partial_;
};

}  // namespace lockstep::launch
