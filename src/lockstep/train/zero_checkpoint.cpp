#include "lockstep/train/zero_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string_view>

#include "lockstep/core/error.h"

namespace lockstep::train {

namespace {

constexpr const char* kShardTensor = "momentum_buffer";
// The model name matched (the trainer checks it first), so its parameters differ from the saved ones.
constexpr const char* kParamsChanged =
    "; the model's parameters changed since the checkpoint was saved; resume with the build and "
    "config that saved it, or start without --resume";

std::string shard_file_name(int rank, int world) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "zero-shard-%05d-of-%05d.safetensors", rank, world);
  return buf;
}

struct ZeroParam {
  std::string name;
  uint64_t offset = 0, numel = 0;
};
struct ZeroShard {
  std::string file;
  uint64_t begin = 0, end = 0;
};
struct ZeroLayout {
  uint64_t total = 0;
  std::vector<ZeroParam> params;
  std::vector<ZeroShard> shards;  // tiling [0, total), in the manifest's order
};

// A named [begin, end) of the flat order, and the first place where a set of them fails to
// tile [0, total) exactly: a gap before `cur`, `cur` overlapping `prev`, or an end short of
// or past the total (then `at` is where the pieces end).
struct Piece {
  const std::string* name = nullptr;
  uint64_t begin = 0, end = 0;
};
struct TilingFault {
  enum Kind { none, gap, overlap, wrong_end } kind = none;
  Piece prev, cur;
  uint64_t at = 0;
};

TilingFault find_tiling_fault(std::vector<Piece> pieces, uint64_t total) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t at = 0;
  Piece prev;
  for (const Piece& p : pieces) {
    if (p.begin != at) return {p.begin > at ? TilingFault::gap : TilingFault::overlap, prev, p, at};
    at = p.end;
    prev = p;
  }
  if (at != total) return {TilingFault::wrong_end, prev, {}, at};
  return {};
}

uint64_t uint_of(const nlohmann::json& j, const std::string& origin, const char* what) {
  if (!j.is_number_integer() || (!j.is_number_unsigned() && j.get<int64_t>() < 0))
    LOCKSTEP_THROW(DataError, origin, ": state.zero: ", what, " is not a non-negative integer");
  return j.get<uint64_t>();
}

// Every saved element belongs to exactly one parameter; a duplicate name is refused too.
void check_params_tile(const ZeroLayout& l, const std::string& origin) {
  std::vector<Piece> pieces;
  std::map<std::string_view, int> seen;
  for (const ZeroParam& p : l.params) {
    if (seen[p.name]++)
      LOCKSTEP_THROW(DataError, origin, ": state.zero.params names '", p.name, "' twice; the manifest is corrupt: "
                     "resume from an older checkpoint");
    pieces.push_back({&p.name, p.offset, p.offset + p.numel});
  }
  const TilingFault f = find_tiling_fault(std::move(pieces), l.total);
  const char* hint = "; the manifest is corrupt: resume from an older checkpoint";
  if (f.kind == TilingFault::gap)
    LOCKSTEP_THROW(DataError, origin, ": state.zero.params leave the elements [", f.at, ", ", f.cur.begin,
                   ") in no parameter (before '", *f.cur.name, "')", hint);
  if (f.kind == TilingFault::overlap)
    LOCKSTEP_THROW(DataError, origin, ": state.zero.params: '", *f.prev.name, "' [", f.prev.begin, ", ",
                   f.prev.end, ") and '", *f.cur.name, "' [", f.cur.begin, ", ", f.cur.end, ") overlap", hint);
  if (f.kind == TilingFault::wrong_end)
    LOCKSTEP_THROW(DataError, origin, ": state.zero.params cover [0, ", f.at, ") but 'total' is ", l.total, hint);
}

// The shards tile [0, total) with neither overlap nor gap.
void check_shards_tile(const ZeroLayout& l, const std::string& origin) {
  std::vector<Piece> pieces;
  for (const ZeroShard& s : l.shards) pieces.push_back({&s.file, s.begin, s.end});
  const TilingFault f = find_tiling_fault(std::move(pieces), l.total);
  if (f.kind == TilingFault::gap)
    LOCKSTEP_THROW(DataError, origin, ": ZeRO shards leave the elements [", f.at, ", ", f.cur.begin,
                   ") of the optimizer state in no file (before ", *f.cur.name,
                   "); a shard is missing from the manifest: resume from an older checkpoint");
  if (f.kind == TilingFault::overlap)
    LOCKSTEP_THROW(DataError, origin, ": ZeRO shards ", *f.prev.name, " [", f.prev.begin, ", ", f.prev.end,
                   ") and ", *f.cur.name, " [", f.cur.begin, ", ", f.cur.end, ") overlap; the checkpoint mixes "
                   "shards of different runs: resume from an older checkpoint");
  if (f.kind == TilingFault::wrong_end)
    LOCKSTEP_THROW(DataError, origin, ": ZeRO shards cover [0, ", f.at, ") but 'total' is ", l.total,
                   "; resume from an older checkpoint");
}

// Reads and checks state.zero (hostile input): the parameters tile [0, total) (each element
// belongs to exactly one), and so do the shards.
ZeroLayout parse_zero_layout(const Checkpoint& c) {
  const std::string origin = (c.path / "state.json").string();
  if (!c.manifest.state.contains("zero")) LOCKSTEP_THROW(DataError, origin, ": not a ZeRO checkpoint (no state.zero)");
  const nlohmann::json& z = c.manifest.state.at("zero");
  if (!z.is_object() || !z.contains("total") || !z.contains("params") || !z.contains("shards") ||
      !z["params"].is_array() || !z["shards"].is_array())
    LOCKSTEP_THROW(DataError, origin, ": state.zero needs 'total', 'params' and 'shards'");
  ZeroLayout l;
  l.total = uint_of(z["total"], origin, "total");
  for (const auto& p : z["params"]) {
    if (!p.is_array() || p.size() != 3 || !p[0].is_string())
      LOCKSTEP_THROW(DataError, origin, ": state.zero.params: each entry must be [name, offset, numel]");
    ZeroParam zp{p[0].get<std::string>(), uint_of(p[1], origin, "a parameter offset"),
                 uint_of(p[2], origin, "a parameter size")};
    if (zp.offset > l.total || zp.numel > l.total - zp.offset)
      LOCKSTEP_THROW(DataError, origin, ": state.zero: parameter '", zp.name, "' [", zp.offset, ", ",
                     zp.offset + zp.numel, ") lies outside the total of ", l.total);
    l.params.push_back(std::move(zp));
  }
  check_params_tile(l, origin);
  for (const auto& s : z["shards"]) {
    if (!s.is_object() || !s.contains("file") || !s["file"].is_string() || !s.contains("begin") ||
        !s.contains("end"))
      LOCKSTEP_THROW(DataError, origin, ": state.zero.shards: each entry needs 'file', 'begin' and 'end'");
    ZeroShard zs{s["file"].get<std::string>(), uint_of(s["begin"], origin, "a shard's begin"),
                 uint_of(s["end"], origin, "a shard's end")};
    if (zs.end < zs.begin)
      LOCKSTEP_THROW(DataError, origin, ": ZeRO shard ", zs.file, " has end ", zs.end, " before begin ", zs.begin);
    if (!c.manifest.files.count(zs.file))
      LOCKSTEP_THROW(DataError, origin, ": ZeRO shard ", zs.file, " is not among the checkpoint's recorded "
                     "files; resume from an older checkpoint");
    l.shards.push_back(std::move(zs));
  }
  check_shards_tile(l, origin);
  return l;
}

// The checked contents of one shard file (checksum verified by load_checkpoint_file).
std::vector<float> read_shard(const Checkpoint& c, const ZeroShard& s) {
  const std::string path = (c.path / s.file).string();
  const SafetensorsData d = load_checkpoint_file(c, s.file);
  const StoredTensor* t = d.find(kShardTensor);
  if (!t || t->dtype != DType::f32 || uint64_t(t->numel()) != s.end - s.begin)
    LOCKSTEP_THROW(DataError, path, ": expected a float32 tensor '", kShardTensor, "' of ", s.end - s.begin,
                   " elements (the range [", s.begin, ", ", s.end, ") state.json records); the file belongs to "
                   "another checkpoint: resume from an older one");
  auto meta = [&](const char* key) {
    auto it = d.metadata.find(key);
    return it == d.metadata.end() ? std::string() : it->second;
  };
  if (meta("lockstep.zero.begin") != std::to_string(s.begin) || meta("lockstep.zero.end") != std::to_string(s.end))
    LOCKSTEP_THROW(DataError, path, ": its metadata says range [", meta("lockstep.zero.begin"), ", ",
                   meta("lockstep.zero.end"), ") but state.json records [", s.begin, ", ", s.end,
                   "); resume from an older checkpoint");
  std::vector<float> v(size_t(s.end - s.begin));
  std::memcpy(v.data(), t->bytes.data(), v.size() * sizeof(float));
  return v;
}

// Reads saved global ranges through the shards, loading each shard once and only if needed.
class ShardReader {
 public:
  ShardReader(const Checkpoint& c, const ZeroLayout& l) : c_(c), l_(l) {}
  void read(uint64_t begin, std::span<float> out) {
    const uint64_t end = begin + out.size();
    for (const ZeroShard& s : l_.shards) {
      const uint64_t b = std::max(begin, s.begin), e = std::min(end, s.end);
      if (b >= e) continue;
      auto it = cache_.find(s.file);
      if (it == cache_.end()) it = cache_.emplace(s.file, read_shard(c_, s)).first;
      std::memcpy(out.data() + (b - begin), it->second.data() + (b - s.begin), (e - b) * sizeof(float));
    }
  }

 private:
  const Checkpoint& c_;
  const ZeroLayout& l_;
  std::map<std::string, std::vector<float>> cache_;
};

}  // namespace

ZeroSnapshot gather_zero_state(comm::ProcessGroup& pg, const ddp::ZeroOptimizer& zero, ddp::ParamSource& params,
                               Millis timeout) {
  ZeroSnapshot snap;
  if (!zero.has_state()) return snap;
  const int world = pg.size(), rank = pg.rank();
  const ddp::FlatRange mine = zero.state_range(), tail = zero.tail_range();
  const size_t shard = mine.size(), total = zero.total();
  if (rank == 0) snap.values.resize(total);
  // Every rank's slice in rank order is [0, W * shard); the tail follows from rank 0's copy.
  if (shard > 0) {
    const std::span<const float> slice = zero.state(mine);
    if (world > 1) pg.gather(slice.data(), snap.values.data(), shard, DType::f32, 0).wait(timeout);
    else std::memcpy(snap.values.data(), slice.data(), shard * sizeof(float));
  }
  if (rank != 0) return snap;
  const std::span<const float> t = zero.state(tail);
  std::copy(t.begin(), t.end(), snap.values.begin() + std::ptrdiff_t(tail.begin));
  nlohmann::json layout = nlohmann::json::array(), shards = nlohmann::json::array();
  for (size_t i = 0; i < params.num_params(); ++i)
    layout.push_back({params.param_info(i).name, zero.param_offset(i), params.value(i).size()});
  for (int r = 0; r < world; ++r) {
    const size_t b = size_t(r) * shard, e = r + 1 == world ? total : size_t(r + 1) * shard;
    const std::string name = shard_file_name(r, world);
    snap.files.push_back({name,
                          {tensor_view<float>(kShardTensor, std::span<const float>(snap.values).subspan(b, e - b),
                                              {int64_t(e - b)})},
                          {{"lockstep.zero.begin", std::to_string(b)},
                           {"lockstep.zero.end", std::to_string(e)},
                           {"lockstep.zero.total", std::to_string(total)}}});
    shards.push_back({{"file", name}, {"begin", b}, {"end", e}});
  }
  snap.section = {{"total", total}, {"params", layout}, {"shards", shards}};
  return snap;
}

bool is_zero_checkpoint(const Checkpoint& c) { return c.manifest.state.contains("zero"); }

void restore_zero_optimizer(ddp::ZeroOptimizer& zero, ddp::ParamSource& params, const Checkpoint& c) {
  if (!zero.has_state()) return;
  const bool sharded = is_zero_checkpoint(c);
  const std::string origin = (c.path / (sharded ? "state.json" : "optimizer.safetensors")).string();
  ZeroLayout layout;
  std::map<std::string, const ZeroParam*> saved;
  if (sharded) {
    layout = parse_zero_layout(c);
    for (const ZeroParam& p : layout.params) saved[p.name] = &p;
    if (layout.total != zero.total() || layout.params.size() != params.num_params())
      LOCKSTEP_THROW(DataError, origin, ": the ZeRO state is of ", layout.params.size(), " parameters with ",
                     layout.total, " elements, but the model has ", params.num_params(), " with ", zero.total(),
                     kParamsChanged);
  }
  ShardReader reader(c, layout);
  const ddp::FlatRange owned[2] = {zero.state_range(), zero.tail_range()};
  size_t copied = 0;
  std::vector<float> piece;
  for (size_t i = 0; i < params.num_params(); ++i) {
    const std::string& name = params.param_info(i).name;
    const uint64_t lo = zero.param_offset(i), n = params.value(i).size();
    const float* plain = nullptr;  // a checkpoint without ZeRO: this parameter's whole buffer
    uint64_t saved_offset = 0;
    if (sharded) {
      const auto it = saved.find(name);
      if (it == saved.end() || it->second->numel != n)
        LOCKSTEP_THROW(DataError, origin, ": parameter '", name, "' (", n, " elements) is ",
                       it == saved.end() ? std::string("not in the saved ZeRO layout")
                                         : str_cat("saved with ", it->second->numel, " elements"),
                       kParamsChanged);
      saved_offset = it->second->offset;
    } else {
      const std::string tname = name + ".momentum_buffer";
      const StoredTensor* t = c.optimizer.find(tname);
      if (!t || t->dtype != DType::f32 || uint64_t(t->numel()) != n)
        LOCKSTEP_THROW(DataError, origin, ": no float32 tensor '", tname, "' of ", n,
                       " elements (was the checkpoint saved from another model, or without momentum?)");
      plain = reinterpret_cast<const float*>(t->bytes.data());
    }
    for (const ddp::FlatRange& own : owned) {
      const uint64_t b = std::max<uint64_t>(own.begin, lo), e = std::min<uint64_t>(own.end, lo + n);
      if (b >= e) continue;
      piece.resize(size_t(e - b));
      if (plain) std::memcpy(piece.data(), plain + (b - lo), piece.size() * sizeof(float));
      else reader.read(saved_offset + (b - lo), piece);
      copied += zero.import_state(size_t(b), piece);
    }
  }
  const size_t want = owned[0].size() + owned[1].size();
  LOCKSTEP_CHECK(copied == want, "restore_zero_optimizer: filled ", copied, " of the ", want,
                 " state elements this rank holds");
}

SafetensorsData assemble_zero_state(const Checkpoint& c) {
  const ZeroLayout layout = parse_zero_layout(c);
  ShardReader reader(c, layout);
  SafetensorsData out;
  for (const StoredTensor& t : c.optimizer.tensors) out.tensors.push_back(t);  // "step"
  for (const ZeroParam& p : layout.params) {
    std::vector<float> v(size_t(p.numel));
    reader.read(p.offset, v);
    StoredTensor t{p.name + ".momentum_buffer", DType::f32, {int64_t(p.numel)}, {}};
    t.bytes.resize(v.size() * sizeof(float));
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    out.tensors.push_back(std::move(t));
  }
  return out;
}

}  // namespace lockstep::train
