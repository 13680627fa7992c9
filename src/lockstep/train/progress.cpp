#include "lockstep/train/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "lockstep/core/error.h"

namespace lockstep::train {

using Clock = std::chrono::steady_clock;

namespace {

int terminal_width(FILE* out) {
  winsize ws{};
  if (::ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20) return ws.ws_col;
  return 80;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// A bar redrawn in place only on a terminal of its own: mpirun and srun hand ranks a pty but
// tag and interleave their lines, where carriage returns and escape codes are noise.
bool bar_terminal(FILE* out) {
  if (out == nullptr || !::isatty(fileno(out))) return false;
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (std::getenv(v) != nullptr) return false;
  return true;
}

}  // namespace

Progress::Progress(FILE* out, int64_t total_steps, bool enabled, std::optional<bool> tty,
                   std::chrono::milliseconds line_interval, int64_t first_step)
    : out_(out),
      total_(total_steps),
      first_step_(first_step),
      enabled_(enabled && out != nullptr),
      tty_(tty.value_or(bar_terminal(out))),
      interval_(line_interval),
      start_(Clock::now()),
      last_print_(start_) {}

std::string Progress::format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

double Progress::eta_seconds(int64_t step) const {
  const int64_t done = step - first_step_;
  if (done <= 0) return -1;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  return elapsed / double(done) * double(total_ - step);
}

std::string Progress::bar_text(int64_t step, double loss, double sps, double eta_s, int width) const {
  const std::string tail = str_cat(" ", step, "/", total_, " loss ", fmt("%.4f", loss), " ",
                                   fmt("%.0f", sps), " samples/s ETA ", format_duration(eta_s));
  const int bar = std::max(10, width - int(tail.size()) - 3);
  const double frac = total_ > 0 ? std::clamp(double(step) / double(total_), 0.0, 1.0) : 0.0;
  const int filled = int(frac * bar);
  return "[" + std::string(size_t(filled), '#') + std::string(size_t(bar - filled), '.') + "]" + tail;
}

void Progress::update(int64_t step, double loss, double sps, int64_t epoch) {
  if (!enabled_) return;
  const auto now = Clock::now();
  if (tty_) {
    if (now - last_print_ < std::chrono::milliseconds(100) && step != total_ && printed_once_) return;
    const std::string text = bar_text(step, loss, sps, eta_seconds(step), terminal_width(out_) - 1);
    std::fprintf(out_, "\r%s\x1b[K", text.c_str());
    bar_shown_ = true;
  } else {
    if (now - last_print_ < interval_ && step != total_ && printed_once_) return;
    std::fprintf(out_, "step %lld/%lld epoch %lld loss %.4f samples/s %.0f eta %s\n",
                 (long long)step, (long long)total_, (long long)epoch, loss, sps,
                 format_duration(eta_seconds(step)).c_str());
  }
  std::fflush(out_);
  last_print_ = now;
  printed_once_ = true;
}

void Progress::clear_bar() {
  if (bar_shown_) std::fprintf(out_, "\r\x1b[K");
  bar_shown_ = false;
}

void Progress::message(const std::string& line) {
  if (!enabled_) return;
  clear_bar();
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
  printed_once_ = false;  // redraw the bar on the next update
}

void Progress::finish() {
  if (!enabled_) return;
  if (bar_shown_) std::fprintf(out_, "\n");
  bar_shown_ = false;
  std::fflush(out_);
}

}  // namespace lockstep::train
