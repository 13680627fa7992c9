// Checkpoints: round trip, keep-last-K, checksums, corrupt files, failed and killed writes
// that leave the last good checkpoint intact, and loading in Python (torch / json+struct).
#include "lockstep/train/checkpoint.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <numeric>
#include <thread>

#include "lockstep/core/error.h"
#include "test_util.h"

namespace lockstep::train {
namespace {

namespace fs = std::filesystem;
using testing::fresh_dir;

struct Fixture {
  std::vector<float> w, b, mom;
  std::vector<float> step = {7.0f};
  explicit Fixture(size_t n, float base = 0.0f) : w(n), b(3), mom(n) {
    std::iota(w.begin(), w.end(), base);
    std::iota(b.begin(), b.end(), -1.0f);
    for (size_t i = 0; i < n; ++i) mom[i] = 0.5f * float(i);
  }
  CheckpointSave save(int64_t s) const {
    CheckpointSave c;
    c.model = "tiny";
    c.step = s;
    c.epoch = s / 10;
    c.world_size = 2;
    c.weights = {tensor_view<float>("fc.weight", w, {int64_t(w.size())}),
                 tensor_view<float>("fc.bias", b, {3})};
    c.optimizer = {tensor_view<float>("fc.weight.momentum_buffer", mom, {int64_t(mom.size())}),
                   tensor_view<float>("step", step, {1})};
    c.state = {{"sampler", "epoch=1 offset=64"}, {"seed", 42}};
    return c;
  }
};

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

void flip_byte(const fs::path& p, size_t offset) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(long(offset));
  char c;
  f.get(c);
  f.seekp(long(offset));
  f.put(char(c ^ 0x40));
}

std::string load_error(const fs::path& p) {
  try {
    load_checkpoint(p);
  } catch (const DataError& e) {
    return e.what();
  }
  return "(loaded without error)";
}

TEST(Checkpoint, RoundTripsWeightsOptimizerAndState) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(10);
  const auto path = save_checkpoint(dir, fx.save(120));
  EXPECT_EQ(path.filename(), "step-000000120");
  const Checkpoint c = load_checkpoint(path);
  EXPECT_EQ(c.manifest.model, "tiny");
  EXPECT_EQ(c.manifest.step, 120);
  EXPECT_EQ(c.manifest.epoch, 12);
  EXPECT_EQ(c.manifest.world_size, 2);
  EXPECT_EQ(c.manifest.state["sampler"], "epoch=1 offset=64");
  EXPECT_EQ(c.weights.find("fc.weight")->to_floats(), fx.w);
  EXPECT_EQ(c.weights.find("fc.bias")->shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(c.weights.metadata.at("lockstep.model"), "tiny");
  EXPECT_EQ(c.optimizer.find("fc.weight.momentum_buffer")->to_floats(), fx.mom);
  EXPECT_EQ(c.optimizer.find("step")->to_floats(), fx.step);
  EXPECT_EQ(resolve_checkpoint(dir), path);
  EXPECT_EQ(resolve_checkpoint(path), path);
}

TEST(Checkpoint, KeepsOnlyTheLastK) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(4);
  for (int64_t s : {10, 20, 30, 40, 50}) save_checkpoint(dir, fx.save(s), {.keep_last = 2});
  const auto all = list_checkpoints(dir);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].filename(), "step-000000040");
  EXPECT_EQ(all[1].filename(), "step-000000050");
  EXPECT_EQ(*latest_checkpoint(dir), all[1]);
  // Nothing but the checkpoints is left in the directory (no temporaries).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 2);
}

// Retention beyond "newest N": every keep_every-th step and the keep_best best by the eval
// recorded in state.json stay; only checkpoints with an eval at their step compete.
TEST(Checkpoint, KeepEveryAndKeepBestRetainBeyondTheNewest) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(4);
  const CheckpointOptions opts{.keep_last = 2, .keep_every = 4, .keep_best = 1, .best_metric = "test_loss"};
  for (int64_t s = 1; s <= 10; ++s) {
    CheckpointSave c = fx.save(s);
    if (s != 2) c.state["eval"] = {{"step", s}, {"test_loss", s == 3 ? 0.1 : 1.0 + double(s)}, {"test_acc", 0.5}};
    save_checkpoint(dir, c, opts);
  }
  std::vector<std::string> names;
  for (const auto& p : list_checkpoints(dir)) names.push_back(p.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-000000003", "step-000000004", "step-000000008",
                                             "step-000000009", "step-000000010"}));
  CheckpointOptions acc = opts;
  acc.best_metric = "test_acc";
  acc.keep_every = 0;
  CheckpointSave best = fx.save(11);
  best.state["eval"] = {{"step", 11}, {"test_loss", 9.0}, {"test_acc", 0.9}};
  save_checkpoint(dir, best, acc);
  for (int64_t s : {12, 13}) save_checkpoint(dir, fx.save(s), acc);
  names.clear();
  for (const auto& p : list_checkpoints(dir)) names.push_back(p.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-000000011", "step-000000012", "step-000000013"}));
}

// Rotation counts and deletes only the saved checkpoint's lineage (its own steps and those
// it inherits); a checkpoint of another lineage in the way of a new step moves to branches/.
TEST(Checkpoint, RotationNeverDeletesAnotherLineage) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(4);
  const Lineage a{"aaaa", {}};
  for (int64_t s : {10, 20, 30}) {
    CheckpointSave c = fx.save(s);
    c.lineage = a;
    save_checkpoint(dir, c, {.keep_last = 3});
  }
  const Lineage b = a.fork(10);
  for (int64_t s : {11, 12, 13, 20}) {
    CheckpointSave c = fx.save(s);
    c.lineage = b;
    save_checkpoint(dir, c, {.keep_last = 2});
  }
  std::vector<std::string> names;
  for (const auto& p : list_checkpoints(dir)) names.push_back(p.filename().string());
  EXPECT_EQ(names, (std::vector<std::string>{"step-000000013", "step-000000020", "step-000000030"}));
  EXPECT_EQ(load_checkpoint(dir / "step-000000020").manifest.lineage.id, b.id);
  EXPECT_EQ(load_checkpoint(dir / "step-000000030").manifest.lineage.id, "aaaa");
  const Checkpoint moved = load_checkpoint(dir / "branches" / "aaaa" / "step-000000020");
  EXPECT_EQ(moved.manifest.lineage.id, "aaaa");
  EXPECT_TRUE(b.contains("aaaa", 10));
  EXPECT_FALSE(b.contains("aaaa", 20));
}

TEST(Checkpoint, ResavingTheSameStepReplacesIt) {
  const auto dir = fresh_dir("ckpt");
  save_checkpoint(dir, Fixture(4, 0.0f).save(10));
  Fixture second(4, 100.0f);
  save_checkpoint(dir, second.save(10));
  EXPECT_EQ(load_checkpoint(dir / "step-000000010").weights.find("fc.weight")->to_floats(), second.w);
  EXPECT_EQ(list_checkpoints(dir).size(), 1u);
}

TEST(Checkpoint, FailedWriteAtAnyPointLeavesThePreviousCheckpointIntact) {
  const auto dir = fresh_dir("ckpt");
  Fixture good(8, 1.0f), next(8, 50.0f);
  const auto first = save_checkpoint(dir, good.save(10));
  const std::string before = read_text(first / "state.json");
  // Fail at the k-th write of the next save, for every k until a save succeeds.
  for (int fail_at = 0;; ++fail_at) {
    int calls = 0;
    CheckpointOptions opts{.keep_last = 1, .hook = [&](const fs::path& f, uint64_t) {
                             if (calls++ == fail_at) throw SystemError(ENOSPC, "injected: disk full at " + f.string());
                           }};
    try {
      save_checkpoint(dir, next.save(20), opts);
    } catch (const SystemError& e) {
      EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos);
      ASSERT_EQ(list_checkpoints(dir).size(), 1u) << "fail_at=" << fail_at;
      EXPECT_EQ(read_text(first / "state.json"), before);
      EXPECT_EQ(load_checkpoint(first).weights.find("fc.weight")->to_floats(), good.w);
      EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1)
          << "a temporary was left behind, fail_at=" << fail_at;
      continue;
    }
    EXPECT_GT(fail_at, 3);
    break;
  }
  EXPECT_EQ(load_checkpoint(*latest_checkpoint(dir)).weights.find("fc.weight")->to_floats(), next.w);
}

TEST(Checkpoint, RealWriteErrorFromTheKernelKeepsThePreviousCheckpoint) {
  // RLIMIT_FSIZE makes write() fail with EFBIG, as a full disk would; done in a child so the
  // limit does not leak into this process.
  const auto dir = fresh_dir("ckpt");
  Fixture small(4), big(1 << 20);
  const auto first = save_checkpoint(dir, small.save(1));
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1 << 20, 1 << 20};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      save_checkpoint(dir, big.save(2));
    } catch (const SystemError& e) {
      _exit(std::string(e.what()).find("cannot write") != std::string::npos ? 0 : 3);
    }
    _exit(2);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the oversized write succeeded; 3: wrong message";
  ASSERT_EQ(list_checkpoints(dir).size(), 1u);
  EXPECT_EQ(load_checkpoint(first).weights.find("fc.weight")->to_floats(), small.w);
}

TEST(Checkpoint, ProcessKilledMidWriteNeverLeavesATornCheckpoint) {
  const auto dir = fresh_dir("ckpt");
  Fixture big(1 << 20);
  save_checkpoint(dir, big.save(0));
  for (int round = 0; round < 6; ++round) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      for (int64_t s = 1;; ++s) save_checkpoint(dir, big.save(s), {.keep_last = 2});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(7 + 13 * round));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    const auto latest = latest_checkpoint(dir);
    ASSERT_TRUE(latest.has_value());
    for (const auto& p : list_checkpoints(dir)) {
      const Checkpoint c = load_checkpoint(p);  // every visible checkpoint is complete
      EXPECT_EQ(c.weights.find("fc.weight")->to_floats(), big.w);
    }
  }
  save_checkpoint(dir, big.save(1000), {.keep_last = 1});  // cleans stray temporaries
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(Checkpoint, CorruptionIsDetectedAndNamed) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(64);
  const auto p = save_checkpoint(dir, fx.save(5));
  const auto model = p / "model.safetensors";
  flip_byte(model, fs::file_size(model) - 3);
  std::string msg = load_error(p);
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("CRC-32"), std::string::npos) << msg;

  fs::resize_file(model, 100);
  msg = load_error(p);
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  fs::remove(p / "optimizer.safetensors");
  fs::remove(model);
  msg = load_error(p);
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

  std::ofstream(p / "state.json") << "{\"format\": \"lockstep-checkpoint\", \"version\": 1, \"mod";
  msg = load_error(p);
  EXPECT_NE(msg.find("state.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a valid JSON"), std::string::npos) << msg;

  EXPECT_THROW(resolve_checkpoint(dir / "nothing-here"), DataError);
}

TEST(Checkpoint, ManifestFieldsAreValidated) {
  auto err = [](const std::string& text) {
    try {
      parse_manifest(text, "m.json");
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  const std::string head = R"({"format":"lockstep-checkpoint","version":1,)";
  EXPECT_NE(err(R"({"format":"other"})").find("'format'"), std::string::npos);
  EXPECT_NE(err(R"({"format":"lockstep-checkpoint","version":9})").find("version 9"), std::string::npos);
  EXPECT_NE(err(head + R"("model":"m","step":-1,"epoch":0,"world_size":1,"files":{}})").find("'step' is out of range"),
            std::string::npos);
  EXPECT_NE(err(head + R"("model":"m","step":1,"epoch":0,"world_size":0,"files":{}})").find("world_size"),
            std::string::npos);
  EXPECT_NE(err(head + R"("model":"m","step":1,"epoch":0,"world_size":1,"files":{"a":{"size":1}}})").find("'crc32'"),
            std::string::npos);
  EXPECT_NE(err(head + R"("model":"m","step":1,"epoch":"x","world_size":1,"files":{}})").find("'epoch'"),
            std::string::npos);
}

// Issue 18 §5: state.json is summed like the tensor files and cross-checked against them.
nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_text(p)); }
void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(2); }

TEST(Checkpoint, EditedStateJsonIsRefusedByItsChecksum) {
  const auto p = save_checkpoint(fresh_dir("ckpt"), Fixture(8).save(250));
  nlohmann::json j = read_json(p / "state.json");
  j["state"]["sampler"] = "epoch=1 offset=72";  // one batch further: a different model, silently
  write_json(p / "state.json", j);
  const std::string msg = load_error(p);
  EXPECT_NE(msg.find("state.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'manifest_crc32'"), std::string::npos) << msg;
}

TEST(Checkpoint, StepOfAStateJsonWithoutChecksumIsCrossChecked) {
  // As an older lockstep wrote it (no checksum): loaded with a warning, but the step must still
  // agree with the directory's name and with the step every tensor file records.
  const auto dir = fresh_dir("ckpt");
  const auto p = save_checkpoint(dir, Fixture(8).save(250));
  nlohmann::json j = read_json(p / "state.json");
  j.erase("manifest_crc32");
  write_json(p / "state.json", j);
  EXPECT_EQ(load_checkpoint(p).manifest.step, 250);
  j["step"] = 210;
  write_json(p / "state.json", j);
  std::string msg = load_error(p);
  EXPECT_NE(msg.find("field 'step' is 210 but the directory is step-000000250"), std::string::npos) << msg;
  fs::rename(p, dir / "renamed");  // no step in the name: the tensor files still tell
  msg = load_error(dir / "renamed");
  EXPECT_NE(msg.find("model.safetensors: written at step 250"), std::string::npos) << msg;
}

TEST(Checkpoint, NonFiniteTensorWithAValidChecksumIsRefusedNamingIt) {
  const auto dir = fresh_dir("ckpt");
  Fixture fx(8);
  fx.w[5] = NAN;
  std::string msg = load_error(save_checkpoint(dir, fx.save(1)));
  EXPECT_NE(msg.find("model.safetensors: tensor 'fc.weight' holds NaN at element 5"), std::string::npos) << msg;
  fx.w[5] = 0.0f;
  fx.mom[2] = -INFINITY;
  msg = load_error(save_checkpoint(dir, fx.save(2)));
  EXPECT_NE(msg.find("optimizer.safetensors: tensor 'fc.weight.momentum_buffer' holds Inf at element 2"),
            std::string::npos) << msg;
}

// Python must be able to open the weights: with torch (frombuffer) and by hand (json+struct),
// and with the `safetensors` package when it is installed.
TEST(Checkpoint, LoadsInPython) {
  if (::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch not available (Debian: python3-torch)";
  const auto dir = fresh_dir("ckpt");
  Fixture fx(12);
  const auto p = save_checkpoint(dir, fx.save(3));
  const auto script = dir / "check.py";
  std::ofstream(script) << R"PY(
import json, struct, sys, torch
path = sys.argv[1]
raw = open(path, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
assert header['__metadata__']['lockstep.model'] == 'tiny', header
data = raw[8 + n:]
def get(name):
    info = header[name]
    assert info['dtype'] == 'F32'
    b, e = info['data_offsets']
    return torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32).reshape(info['shape'])
w = get('fc.weight'); b = get('fc.bias')
assert torch.equal(w, torch.arange(12, dtype=torch.float32)), w
assert torch.equal(b, torch.tensor([-1.0, 0.0, 1.0])), b
try:
    from safetensors.torch import load_file
    t = load_file(path)
    assert torch.equal(t['fc.weight'], w)
    print('safetensors package: ok')
except ImportError:
    print('safetensors package not installed; checked by hand')
print('OK')
)PY";
  const std::string cmd = "/usr/bin/python3 " + script.string() + " " +
                          (p / "model.safetensors").string() + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int rc = ::pclose(pipe);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("OK"), std::string::npos) << out;
}

// The other direction: a file written by Python (by hand, torch's own dtypes) decodes here.
TEST(Checkpoint, ReadsAFileWrittenByPython) {
  if (::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with torch not available (Debian: python3-torch)";
  const auto dir = fresh_dir("ckpt");
  const auto out = dir / "py.safetensors";
  const std::string cmd = "/usr/bin/python3 -c \"\nimport json, struct, torch\n"
      "ts = {'a': torch.arange(6, dtype=torch.float32).reshape(2, 3), 'h': torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}\n"
      "hdr = {'__metadata__': {'format': 'pt'}}; blob = b''\n"
      "names = {torch.float32: 'F32', torch.bfloat16: 'BF16'}\n"
      "for k, t in ts.items():\n"
      "    b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()\n"
      "    hdr[k] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [len(blob), len(blob) + len(b)]}; blob += b\n"
      "h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)\n"
      "open('" + out.string() + "', 'wb').write(struct.pack('<Q', len(h)) + h + blob)\n\"";
  ASSERT_EQ(::system(cmd.c_str()), 0);
  const auto bytes = read_file_bounded(out, 1 << 20);
  const auto d = decode_safetensors(bytes, out.string());
  EXPECT_EQ(d.find("a")->to_floats(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(d.find("a")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d.find("h")->dtype, DType::bf16);
  EXPECT_EQ(d.find("h")->to_floats(), (std::vector<float>{1.5f, -2.0f}));
}

}  // namespace
}  // namespace lockstep::train
