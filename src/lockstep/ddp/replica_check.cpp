#include "lockstep/ddp/replica_check.h"

#include <algorithm>
#include <cstring>

#include "lockstep/core/error.h"

namespace lockstep::ddp {
namespace {

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

std::vector<std::string> split_lines(const char* data, size_t n) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < n && data[i] != '\0'; ++i) {
    if (data[i] == '\n') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += data[i];
    }
  }
  return out;
}

// Exchanges every rank's lines (they differ somewhere) and names the first difference.
[[noreturn]] void report_difference(comm::ProcessGroup& pg, const std::string& mine, Millis timeout) {
  const int w = pg.size();
  int64_t len = int64_t(mine.size());
  std::vector<int64_t> lens(static_cast<size_t>(w));
  pg.allgather(&len, lens.data(), 1, DType::i64).wait(timeout);
  const size_t width = size_t(*std::max_element(lens.begin(), lens.end())) + 1;
  std::vector<char> in(width, '\0'), all(width * size_t(w));
  std::memcpy(in.data(), mine.data(), mine.size());
  pg.allgather(in.data(), all.data(), width, DType::u8).wait(timeout);
  const auto ref = split_lines(all.data(), width);
  for (int r = 1; r < w; ++r) {
    const auto other = split_lines(all.data() + size_t(r) * width, width);
    for (size_t k = 0; k < std::max(ref.size(), other.size()); ++k) {
      const std::string a = k < ref.size() ? ref[k] : "(nothing)";
      const std::string b = k < other.size() ? other[k] : "(nothing)";
      if (a == b) continue;
      LOCKSTEP_THROW(ConfigError, "DDP: model architectures differ across ranks (seen from rank ", pg.rank(),
                     "): entry ", k, " is '", a, "' on rank 0 but '", b, "' on rank ", r,
                     ". Every rank must build the same model (same layers, shapes, dtypes, in the same order).");
    }
  }
  LOCKSTEP_THROW(ConfigError, "DDP: architecture hashes differ across ranks but the descriptions agree; "
                              "this is a bug in lockstep (hash of rank ", pg.rank(), ")");
}

}  // namespace

std::vector<std::string> architecture_lines(const ParamSource& params) {
  std::vector<std::string> lines;
  for (size_t i = 0; i < params.num_params(); ++i)
    lines.push_back(str_cat("param ", i, ": ", params.param_info(i).describe()));
  for (size_t i = 0; i < params.num_buffers(); ++i)
    lines.push_back(str_cat("buffer ", i, ": ", params.buffer_info(i).describe()));
  return lines;
}

uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed ^ 0x9e3779b97f4a7c15ull ^ bytes;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  for (; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

void verify_same_architecture(comm::ProcessGroup& pg, const ParamSource& params, Millis timeout) {
  if (pg.size() == 1) return;
  const std::string mine = joined(architecture_lines(params));
  int64_t h = int64_t(hash_bytes(mine.data(), mine.size()));
  std::vector<int64_t> all(size_t(pg.size()));
  pg.allgather(&h, all.data(), 1, DType::i64).wait(timeout);
  if (std::all_of(all.begin(), all.end(), [&](int64_t x) { return x == all[0]; })) return;
  report_difference(pg, mine, timeout);
}

void broadcast_state(comm::ProcessGroup& pg, ParamSource& params, bool parameters, bool buffers, int root,
                     Millis timeout) {
  if (pg.size() == 1) return;
  // Packed into one staging buffer in index order: one collective whose shape is the same
  // on every rank. (Coalescing by memory address would not be: two allocations can be
  // adjacent on one rank and not on another, and the collectives would then mismatch.)
  // Bytes: parameters may be of several dtypes (LibTorch modules).
  std::vector<std::span<std::byte>> spans;
  if (parameters)
    for (size_t i = 0; i < params.num_params(); ++i) spans.push_back(params.value_bytes(i));
  if (buffers)
    for (size_t i = 0; i < params.num_buffers(); ++i) spans.push_back(std::as_writable_bytes(params.buffer(i)));
  size_t total = 0;
  for (auto s : spans) total += s.size();
  if (total == 0) return;
  std::vector<std::byte> staging(total);
  size_t off = 0;
  for (auto s : spans) {
    std::memcpy(staging.data() + off, s.data(), s.size());
    off += s.size();
  }
  pg.broadcast(staging.data(), total, DType::u8, root).wait(timeout);
  if (pg.rank() == root) return;
  off = 0;
  for (auto s : spans) {
    std::memcpy(s.data(), staging.data() + off, s.size());
    off += s.size();
  }
}

void verify_replicas_identical(comm::ProcessGroup& pg, ParamSource& params, int64_t step, Millis timeout) {
  if (pg.size() == 1) return;
  const size_t n = params.num_params(), w = size_t(pg.size());
  std::vector<int64_t> mine(n + 1), all((n + 1) * w);
  for (size_t i = 0; i < n; ++i) {
    auto v = params.value_bytes(i);
    mine[i] = int64_t(hash_bytes(v.data(), v.size(), i));
  }
  mine[n] = step;
  pg.allgather(mine.data(), all.data(), n + 1, DType::i64).wait(timeout);
  for (size_t i = 0; i < n; ++i) {
    std::string bad;
    for (size_t r = 1; r < w; ++r)
      if (all[r * (n + 1) + i] != all[i]) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
    if (bad.empty()) continue;
    LOCKSTEP_THROW(Error, "DDP: replicas diverged at step ", step, ": parameter '", params.param_info(i).name,
                   "' differs between rank 0 and rank(s) ", bad, " (first differing parameter in use order; seen from rank ",
                   pg.rank(), "). Synchronous training keeps replicas bit-identical, so something changed "
                   "parameters outside the optimizer step, or ranks ran different code or data types.");
  }
}

}  // namespace lockstep::ddp
