#include "rel_util.h"

#include <poll.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/file_io.h"
#include "lockstep/train/safetensors.h"

namespace lockstep::reliability {

TempDir::TempDir() {
  char tmpl[] = "/tmp/lockstep-rel-XXXXXX";
  path = ::mkdtemp(tmpl);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

Job::Job(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env)
    : proc_(std::make_unique<launch::Subprocess>(argv, env)),
      pid_(proc_->pid()),
      t0_(Clock::now()) {
  reader_ = std::thread([this] { pump(); });
}

Job::~Job() {
  for (pid_t p : descendants(pid_)) ::kill(p, SIGKILL);
  proc_->signal(SIGKILL);
  reader_.join();
}

double Job::elapsed() const {
  return seconds_since(t0_);
}

// The reader thread: forwards both pipes into lines_ until they close, then reaps the child.
void Job::pump() {
  int fds_open[2] = {proc_->stdout_fd(), proc_->stderr_fd()};
  std::string partial[2];
  while (fds_open[0] >= 0 || fds_open[1] >= 0) {
    std::vector<pollfd> fds;
    for (int fd : fds_open)
      if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds_open[i] < 0) continue;
      pollfd probe{fds_open[i], POLLIN, 0};
      if (::poll(&probe, 1, 0) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::read(fds_open[i], buf, sizeof buf);
      if (n <= 0) {
        i == 0 ? proc_->close_stdout() : proc_->close_stderr();
        fds_open[i] = -1;
        continue;
      }
      const double t = elapsed();
      std::lock_guard lk(mu_);
      out_.append(buf, size_t(n));
      partial[i].append(buf, size_t(n));
      for (size_t nl; (nl = partial[i].find('\n')) != std::string::npos;) {
        lines_.emplace_back(t, partial[i].substr(0, nl));
        partial[i].erase(0, nl + 1);
      }
    }
  }
  std::optional<launch::ExitStatus> st;
  while (!(st = proc_->poll())) ::usleep(2000);
  std::lock_guard lk(mu_);
  for (auto& p : partial)
    if (!p.empty()) lines_.emplace_back(elapsed(), p);
  status_ = st;
}

bool Job::wait(Millis timeout) {
  const auto dl = Deadline::after(timeout);
  for (;;) {
    {
      std::lock_guard lk(mu_);
      if (status_) return true;
    }
    if (dl.expired()) {
      for (pid_t p : descendants(pid_)) ::kill(p, SIGKILL);
      proc_->signal(SIGKILL);
      return false;
    }
    ::usleep(5000);
  }
}

launch::ExitStatus Job::status() const {
  std::lock_guard lk(mu_);
  return status_.value_or(launch::ExitStatus{.signaled = false, .code = -1});
}

bool Job::running() const {
  std::lock_guard lk(mu_);
  return !status_;
}

std::string Job::out() const {
  std::lock_guard lk(mu_);
  return out_;
}

std::optional<std::pair<double, std::string>> Job::find_line(const std::string& needle) const {
  std::lock_guard lk(mu_);
  for (const auto& l : lines_)
    if (l.second.find(needle) != std::string::npos) return l;
  return std::nullopt;
}

std::optional<std::pair<double, std::string>> Job::wait_line(const std::string& needle,
                                                             Millis timeout) const {
  const auto dl = Deadline::after(timeout);
  for (;;) {
    if (auto l = find_line(needle)) return l;
    {
      std::lock_guard lk(mu_);
      if (status_) return std::nullopt;
    }
    if (dl.expired()) return std::nullopt;
    ::usleep(2000);
  }
}

namespace {

std::string read_small(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

pid_t parent_of(pid_t pid) {
  // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so parse after ')'.
  const std::string s = read_small(str_cat("/proc/", pid, "/stat"));
  const size_t close = s.rfind(')');
  if (close == std::string::npos) return -1;
  char state = 0;
  int ppid = -1;
  if (std::sscanf(s.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') return -1;
  return ppid;
}

}  // namespace

std::vector<pid_t> descendants(pid_t root) {
  std::map<pid_t, pid_t> parent;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t p = std::stoi(name);
    parent[p] = parent_of(p);
  }
  std::vector<pid_t> out{};
  std::vector<pid_t> frontier{root};
  while (!frontier.empty()) {
    const pid_t p = frontier.back();
    frontier.pop_back();
    for (const auto& [child, pp] : parent)
      if (pp == p) out.push_back(child), frontier.push_back(child);
  }
  return out;
}

std::optional<pid_t> find_worker(pid_t root, int rank, const std::string& exe, Millis timeout) {
  const std::string want = str_cat("RANK=", rank);
  const auto dl = Deadline::after(timeout);
  for (;;) {
    for (pid_t p : descendants(root)) {
      const std::string cmd = read_small(str_cat("/proc/", p, "/cmdline"));
      const std::string argv0 = cmd.substr(0, cmd.find('\0'));
      if (fs::path(argv0).filename() != exe) continue;
      const std::string env = read_small(str_cat("/proc/", p, "/environ"));
      for (size_t at = 0; at < env.size();) {
        const size_t end = std::min(env.find('\0', at), env.size());
        if (env.compare(at, end - at, want) == 0) return p;
        at = end + 1;
      }
    }
    if (dl.expired()) return std::nullopt;
    ::usleep(5000);
  }
}

namespace {

void put_be32(std::string& s, uint32_t v) {
  for (int shift : {24, 16, 8, 0}) s.push_back(char((v >> shift) & 0xff));
}

void write_split(const fs::path& dir, const std::string& prefix, int n, std::mt19937& rng) {
  std::string images, labels;
  put_be32(images, 0x00000803);
  put_be32(images, uint32_t(n));
  put_be32(images, 28);
  put_be32(images, 28);
  put_be32(labels, 0x00000801);
  put_be32(labels, uint32_t(n));
  for (int i = 0; i < n; ++i) {
    const int label = int(rng() % 10);
    labels.push_back(char(label));
    for (int px = 0; px < 28 * 28; ++px) {
      // A bright band whose rows depend on the label, plus noise: learnable, not trivial.
      const bool band = (px / 28) / 3 == label;
      images.push_back(char((band ? 160 : 0) + int(rng() % 96)));
    }
  }
  write_text(dir / (prefix + "-images-idx3-ubyte"), images);
  write_text(dir / (prefix + "-labels-idx1-ubyte"), labels);
}

}  // namespace

void write_synthetic_fmnist(const fs::path& dir, int n_train, int n_test, uint32_t seed) {
  fs::create_directories(dir);
  std::mt19937 rng(seed);
  write_split(dir, "train", n_train, rng);
  write_split(dir, "t10k", n_test, rng);
}

std::map<std::string, std::string> fingerprint(const fs::path& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    // The run directory's .lock records which job holds it (or held it, when killed); it is
    // not something the run saved.
    if (!e.is_regular_file() || e.path().filename() == ".lock") continue;
    const std::string bytes = read_small(e.path());
    const auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    out[fs::relative(e.path(), dir).string()] =
        str_cat(bytes.size(), " bytes crc ", train::crc32_of(span));
  }
  return out;
}

StepLog read_step_log(const fs::path& metrics_jsonl) {
  StepLog log;
  std::ifstream in(metrics_jsonl);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("kind", "") != "step") continue;
    log.steps.push_back(j["step"].get<int64_t>());
    log.losses.push_back(j["loss"].dump());
  }
  return log;
}

int64_t last_logged_step(const fs::path& metrics_jsonl) {
  // Only the tail matters; a record is ~150 bytes.
  std::ifstream in(metrics_jsonl, std::ios::binary | std::ios::ate);
  if (!in) return 0;
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - 2048));
  std::string line;
  int64_t last = 0;
  while (std::getline(in, line)) {
    const size_t at = line.find("\"step\":");
    if (line.find("\"kind\":\"step\"") == std::string::npos || at == std::string::npos) continue;
    last = std::max<int64_t>(last, std::atoll(line.c_str() + at + 7));
  }
  return last;
}

std::string line_with(const std::string& text, const std::string& needle, size_t max) {
  const size_t at = text.find(needle);
  if (at == std::string::npos) return "";
  const size_t b = text.rfind('\n', at);
  const size_t begin = b == std::string::npos ? 0 : b + 1;
  const size_t end = std::min(text.find('\n', at), text.size());
  std::string line = text.substr(begin, end - begin);
  if (line.size() > max) line = line.substr(0, max - 3) + "...";
  return line;
}

void report(const std::string& name, const std::string& injected, const std::string& result,
            double detect_s, double recover_s) {
  auto secs = [](double s) {
    return s < 0 ? std::string("-") : str_cat(std::round(s * 100) / 100);
  };
  std::printf("[reliability] case=%s | injected=%s | result=%s | detect_s=%s | recover_s=%s\n",
              name.c_str(), injected.c_str(), result.c_str(), secs(detect_s).c_str(),
              secs(recover_s).c_str());
  std::fflush(stdout);
}

std::string small_train_config(const fs::path& data_dir, const fs::path& run_dir,
                               const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::string> kv = {{"model", "\"fmnist-mlp\""},
                                           {"data_dir", str_cat("\"", data_dir.string(), "\"")},
                                           {"run_dir", str_cat("\"", run_dir.string(), "\"")},
                                           {"epochs", "2"},
                                           {"batch", "16"},
                                           {"lr", "0.02"},
                                           {"log_every", "1"},
                                           {"threads", "1"},
                                           {"timeout", "30"},
                                           {"seed", "7"}};
  for (const auto& [k, v] : overrides) kv[k] = v;
  std::string text;
  for (const auto& [k, v] : kv) text += str_cat(k, " = ", v, "\n");
  return text;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  if (!f) throw SystemError(errno, str_cat("cannot write ", path.string()));
}

std::map<std::string, std::vector<uint8_t>> checkpoint_tensors(const fs::path& ckpt_dir,
                                                               const char* file) {
  const auto ckpt = train::latest_checkpoint(ckpt_dir);
  if (!ckpt) return {};
  const auto bytes = train::read_file_bounded(*ckpt / file, uint64_t(1) << 30);
  std::map<std::string, std::vector<uint8_t>> out;
  for (auto& t : train::decode_safetensors(bytes, (*ckpt / file).string()).tensors)
    out[t.name] = t.bytes;
  return out;
}

}  // namespace lockstep::reliability
