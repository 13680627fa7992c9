// Progress on rank 0: a one-line bar redrawn in place when the output is a terminal
// (step, loss, samples/s, ETA), plain periodic lines otherwise (logs, CI, `lockstep run`
// prefixing). Disabled instances (other ranks) print nothing.
//
//   Progress p(stdout, total_steps, rank == 0);
//   p.update(step, loss, samples_per_s);
//   p.message("eval: acc=0.87");   // printed on its own line, the bar redrawn after it
//   p.finish();
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace lockstep::train {

class Progress {
 public:
  // tty: force bar (true) or lines (false); default: a bar on a terminal (isatty) unless this
  // is a rank of mpirun or srun (OMPI_COMM_WORLD_RANK, PMI_RANK, PMIX_RANK, SLURM_PROCID). Lines are printed at
  // most every `line_interval` (and for the last step).
  Progress(FILE* out, int64_t total_steps, bool enabled, std::optional<bool> tty = std::nullopt,
           std::chrono::milliseconds line_interval = std::chrono::seconds(5),
           int64_t first_step = 0);

  void update(int64_t step, double loss, double samples_per_s, int64_t epoch = 0);
  void message(const std::string& line);
  void finish();

  // "1h02m", "3m05s", "42s"
  static std::string format_duration(double seconds);
  // The bar's text for a width of `width` columns (exposed for tests).
  std::string bar_text(int64_t step, double loss, double samples_per_s, double eta_s,
                       int width) const;

 private:
  double eta_seconds(int64_t step) const;
  void clear_bar();

  FILE* out_;
  int64_t total_;
  int64_t first_step_;
  bool enabled_;
  bool tty_;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point start_, last_print_;
  bool bar_shown_ = false;
  bool printed_once_ = false;
};

}  // namespace lockstep::train
