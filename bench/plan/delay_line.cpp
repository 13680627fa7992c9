// delay_line DEV DELAY_US [LIMIT_MB]: a link delay for kernels without netem. Opens the tun
// device DEV (made here, in the calling network namespace), and every IP packet the kernel
// routes into DEV is held DELAY_US microseconds and written back into DEV, from where the
// kernel routes it on to its destination (validate_netns.sh routes the hosts' packets into
// DEV by the interface they came in on, and the packets coming out of DEV by destination).
// One direction of a link passes once, so a round trip gains 2 x DELAY_US.
//
// It is a delay line, not a shaper: packets leave in arrival order, each exactly DELAY_US
// after it came in (or as soon after as the scheduler lets this process run: it asks for
// SCHED_FIFO when it may), so the rate that came in goes out; rate limits stay with tc tbf on
// the hosts. Packets beyond LIMIT_MB (default 64) in flight are dropped, as netem's limit.
// A packet the kernel will not take back (a write that fails with EAGAIN) is lost and counted
// as refused. SIGTERM or SIGINT ends it; it then prints, on stderr, packets and bytes sent,
// drops, refusals, and how late the packets left (median and max over those sent,
// microseconds).
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
volatile sig_atomic_t g_stop = 0;

struct Packet {
  Clock::time_point due;
  std::vector<char> bytes;
};

int open_tun(const char* name) {
  const int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Stats {
  long packets = 0, drops = 0, refused = 0;  // refused: the kernel took no more (EAGAIN)
  long long bytes = 0;
  std::vector<float> late_us;  // one per packet sent (capped, see below)
};

// The line: packets in flight in arrival order, buffers of sent packets kept for reuse.
struct Line {
  int fd;
  Clock::duration delay;
  long long limit, queued = 0;
  std::deque<Packet> queue;
  std::vector<std::vector<char>> spare;
  std::vector<char> rx = std::vector<char>(65536);  // one read buffer: the largest IP packet
  Stats st;

  Line(int fd_, Clock::duration delay_, long long limit_) : fd(fd_), delay(delay_), limit(limit_) {}

  bool due(Clock::time_point now) const { return !queue.empty() && queue.front().due <= now; }

  // Takes in the packets waiting, each due DELAY_US from now, but stops as soon as the
  // oldest one in flight is due: a steady stream in must not hold back what has to leave.
  // A packet goes from `rx` into a spare buffer of its own size (no 64 KiB fill per packet,
  // and a packet in flight holds about its size, not 64 KiB).
  void take_in() {
    for (;;) {
      const ssize_t n = ::read(fd, rx.data(), rx.size());
      if (n <= 0) return;  // EAGAIN: nothing more waiting
      const Clock::time_point now = Clock::now();
      if (queued + n > limit) {
        ++st.drops;
      } else {
        std::vector<char> buf;
        if (!spare.empty()) buf = std::move(spare.back()), spare.pop_back();
        buf.assign(rx.data(), rx.data() + n);
        queued += n;
        queue.push_back({now + delay, std::move(buf)});
      }
      if (due(now)) return;
    }
  }

  // Sends every packet that is due, oldest first. A packet the kernel refuses (EAGAIN,
  // ENOBUFS) is lost, as on a link whose receiver is full: it counts as refused, not sent.
  // false on another error (printed).
  bool send_due() {
    const Clock::time_point now = Clock::now();
    for (; due(now); queue.pop_front()) {
      Packet& p = queue.front();
      queued -= p.bytes.size();
      if (::write(fd, p.bytes.data(), p.bytes.size()) < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
          std::perror("delay_line: write to the tun device");
          return false;
        }
        ++st.refused;
      } else {
        ++st.packets;
        st.bytes += p.bytes.size();
        if (st.late_us.size() < (1u << 22))
          st.late_us.push_back(
              float(std::chrono::duration<double, std::micro>(now - p.due).count()));
      }
      spare.push_back(std::move(p.bytes));
    }
    return true;
  }

  // How long ppoll may sleep: until the oldest packet is due (at most 1 s, to see a signal).
  timespec wait() const {
    if (queue.empty()) return {1, 0};
    const auto w = std::max(Clock::duration::zero(), queue.front().due - Clock::now());
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(w).count();
    return {time_t(ns / 1'000'000'000), long(ns % 1'000'000'000)};
  }
};

void report(const char* dev, Stats& st) {
  float median = 0, worst = 0;
  if (!st.late_us.empty()) {
    worst = *std::max_element(st.late_us.begin(), st.late_us.end());
    auto mid = st.late_us.begin() + st.late_us.size() / 2;
    std::nth_element(st.late_us.begin(), mid, st.late_us.end());
    median = *mid;
  }
  std::fprintf(stderr,
               "delay_line: %s: %ld packets, %lld bytes sent; %ld dropped (over LIMIT_MB in "
               "flight), %ld refused by the kernel (EAGAIN); late by median %.0f us, max %.0f us\n",
               dev, st.packets, st.bytes, st.drops, st.refused, double(median), double(worst));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: delay_line DEV DELAY_US [LIMIT_MB]\n");
    return 2;
  }
  const char* dev = argv[1];
  const long delay_us = std::strtol(argv[2], nullptr, 10);
  const long long limit = (argc > 3 ? std::atoll(argv[3]) : 64) << 20;
  if (delay_us < 0 || delay_us > 10'000'000 || limit <= 0) {
    std::fprintf(stderr, "delay_line: DELAY_US must be in [0, 1e7] and LIMIT_MB > 0\n");
    return 2;
  }
  const int fd = open_tun(dev);
  if (fd < 0) {
    std::fprintf(stderr,
                 "delay_line: cannot make tun device %s: %s (needs root and /dev/net/tun)\n", dev,
                 std::strerror(errno));
    return 1;
  }
  sched_param sp{};
  sp.sched_priority = 10;
  const bool fifo = ::sched_setscheduler(0, SCHED_FIFO, &sp) == 0;
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = 1; };
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  std::fprintf(stderr, "delay_line: %s, %ld us each way%s\n", dev, delay_us,
               fifo ? ", SCHED_FIFO" : "");

  Line line{fd, std::chrono::microseconds(delay_us), limit};
  pollfd pfd{fd, POLLIN, 0};
  int rc = 0;
  while (!g_stop) {
    const timespec ts = line.wait();
    if (::ppoll(&pfd, 1, &ts, nullptr) < 0 && errno != EINTR) {
      std::perror("delay_line: ppoll");
      rc = 1;
      break;
    }
    line.take_in();
    if (!line.send_due()) {
      rc = 1;
      break;
    }
  }
  report(dev, line.st);
  ::close(fd);
  return rc;
}
