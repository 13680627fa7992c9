#include "lockstep/train/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lockstep/core/log.h"
#include "lockstep/data/data_loader.h"
#include "lockstep/ddp/ddp.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/loss.h"
#include "lockstep/train/async_checkpoint.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/metrics.h"
#include "lockstep/train/optimizer_checkpoint.h"
#include "lockstep/train/progress.h"
#include "lockstep/train/run_start.h"
#include "lockstep/train/train_state.h"

namespace lockstep::train {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Sums a few doubles over all ranks (every rank calls it at the same point).
void sum_over_ranks(comm::ProcessGroup& pg, std::span<double> v) {
  if (pg.size() > 1) pg.allreduce(v, comm::ReduceOp::sum).wait();
}

// Rank 0's `text` on every rank (up to 8 KiB; every rank calls it at the same point).
std::string from_rank0(comm::ProcessGroup& pg, const std::string& text) {
  if (pg.size() == 1) return text;
  std::vector<uint8_t> buf(8192, 0);
  std::memcpy(buf.data(), text.data(), std::min(text.size(), buf.size() - 1));
  pg.broadcast(std::span<uint8_t>(buf), 0).wait();
  return reinterpret_cast<const char*>(buf.data());
}

// Fashion-MNIST's per-pixel mean and std (after scaling to [0, 1]); other image data is
// normalised with the same constants, which is harmless.
data::TransformOptions transform_for(const data::Dataset& d, const TrainConfig& c, bool train) {
  data::TransformOptions t;
  if (d.kind() == data::FeatureKind::image_u8) {
    t.mean = {0.2860f};
    t.std = {0.3530f};
    if (train && c.augment) t.crop_padding = 2, t.horizontal_flip = true;
  }
  t.seed = c.seed;
  return t;
}

}  // namespace

struct Trainer::Impl {
  TrainConfig cfg;
  nn::Model& model;
  const data::Dataset& train_set;
  const data::Dataset* test_set;
  comm::ProcessGroup& pg;
  TrainerHooks hooks;
  int rank = 0, world = 1;

  std::unique_ptr<nn::Optimizer> opt;           // built after DDP (ZeRO works on DDP's view)
  std::optional<Checkpoint> pending_resume;     // its optimizer state, loaded once `opt` exists
  std::unique_ptr<nn::LrSchedule> sched;
  std::unique_ptr<ddp::DistributedDataParallel> ddp;
  std::unique_ptr<data::DataLoader> loader, test_loader;
  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<Progress> progress;
  std::unique_ptr<AsyncCheckpointWriter> writer;  // rank 0
  nn::CrossEntropyLoss ce;
  nn::Tensor x;

  fs::path run_dir, ckpt_dir, resumed_path;
  RunStart start;  // rank 0: how the run starts and the lineage it saves in (run_start.h)
  int64_t step = 0, start_step = 0, epoch = 0;
  int64_t steps_per_epoch = 0, total_steps = 0, global_batch = 0;
  bool resumed_mid_epoch = false;
  bool complete = false;              // resumed at or past the last step: nothing to train
  int64_t start_step_of_stretch = 0;  // state.sampler_start: where the sampler's offset began
  int64_t start_offset_of_stretch = 0;  // to advance one global batch per step (the epoch, a resume)
  int64_t last_saved_step = -1;
  int64_t last_eval_step = -1;
  double base_lr = 0;
  double window_loss = 0, window_samples = 0;
  double train_seconds = 0, train_samples = 0;
  Clock::time_point t0 = Clock::now();
  TrainResult result;

  Impl(TrainConfig c, nn::Model& m, const data::Dataset& tr, const data::Dataset* te,
       comm::ProcessGroup& g, TrainerHooks h)
      : cfg(std::move(c)), model(m), train_set(tr), test_set(te), pg(g), hooks(std::move(h)),
        rank(g.rank()), world(g.size()), run_dir(cfg.run_dir), ckpt_dir(run_dir / "checkpoints") {}

  void setup();
  std::optional<fs::path> agree_on_start();
  void commit_start();
  void resume_from(const fs::path& path);
  void run_epochs();
  int64_t train_step();
  void after_step(int64_t samples, double step_seconds);
  DivergedError diverged(double loss, bool stepped) const;
  void evaluate();
  CheckpointSave snapshot(const OptimizerSnapshot& os);
  void setup_optimizer();
  float lr_now() const { return opt->lr(); }
  Millis timeout() const { return Millis(int64_t(cfg.timeout * 1000)); }
  void save(bool wait_now);
  TrainResult already_complete();
  std::string where() const { return str_cat("rank ", rank, ", step ", step, ", epoch ", epoch); }
};

void Trainer::Impl::setup() {
  validate(cfg);
  if (cfg.threads > 0) nn::set_num_threads(cfg.threads);
  loader = std::make_unique<data::DataLoader>(
      train_set,
      data::DistributedSampler({.dataset_size = train_set.size(), .rank = rank, .world_size = world,
                                .shuffle = cfg.shuffle, .seed = cfg.seed, .remainder = data::Remainder::pad}),
      data::DataLoaderOptions{.batch_size = cfg.batch, .prefetch = cfg.prefetch, .drop_last = true,
                              .transform = transform_for(train_set, cfg, true)});
  const int64_t batches = loader->sampler().shard_size() / cfg.batch;
  if (batches == 0)
    LOCKSTEP_THROW(ConfigError, "batch = ", cfg.batch, " is larger than the ", loader->sampler().shard_size(),
                   " training samples each of the ", world, " workers gets; lower batch");
  steps_per_epoch = (batches + cfg.grad_accum - 1) / cfg.grad_accum;
  total_steps = steps_per_epoch * cfg.epochs;
  if (cfg.max_steps > 0) total_steps = std::min(total_steps, cfg.max_steps);
  global_batch = cfg.batch * world * cfg.grad_accum;
  base_lr = effective_lr(cfg, global_batch);
  sched = make_schedule(cfg, base_lr, total_steps);
  if (test_set) {
    test_loader = std::make_unique<data::DataLoader>(
        *test_set,
        data::DistributedSampler({.dataset_size = test_set->size(), .rank = rank, .world_size = world,
                                  .shuffle = false, .seed = cfg.seed, .remainder = data::Remainder::exact}),
        data::DataLoaderOptions{.batch_size = cfg.batch, .prefetch = cfg.prefetch,
                                .transform = transform_for(*test_set, cfg, false)});
  }
  if (rank == 0)
    writer = std::make_unique<AsyncCheckpointWriter>(
        ckpt_dir, CheckpointOptions{.keep_last = cfg.checkpoint_keep, .keep_every = cfg.checkpoint_keep_every,
                                    .keep_best = cfg.checkpoint_keep_best,
                                    .best_metric = cfg.checkpoint_best_metric});
  const auto resume = agree_on_start();
  if (resume) resume_from(*resume);
  // Every rank read the same checkpoint, so all return here alike, before any collective, and
  // the run's records (metrics.jsonl, run.json) are left as the finished run wrote them. The
  // last epoch can also be done at fewer steps (the checkpoint was saved with more workers).
  const bool last_epoch_done = epoch + 1 >= cfg.epochs && loader->sampler().remaining() < cfg.batch;
  if ((complete = resume && (step >= total_steps || last_epoch_done))) return;
  // Every rank has the same weights now; DDP checks the architectures and broadcasts rank 0's.
  // An optimizer that reduces the gradients itself (ZeRO) gets them local.
  ddp = std::make_unique<ddp::DistributedDataParallel>(model, pg, ddp_options(cfg));
  setup_optimizer();
  commit_start();
  metrics = std::make_unique<MetricsWriter>(run_dir, rank == 0, resume ? step : -1);
  metrics->write_run_info(cfg.to_json(), collect_run_env(world, pg.backend_name(), nn::num_threads()),
                          {{"global_batch", global_batch}, {"effective_lr", base_lr},
                           {"steps_per_epoch", steps_per_epoch}, {"total_steps", total_steps},
                           {"num_params", model.num_params()},
                           {"resumed_from", resume ? resume->string() : std::string()}});
  progress = std::make_unique<Progress>(hooks.out, total_steps, rank == 0, hooks.tty,
                                        std::chrono::seconds(5), step);
}

// Rank 0 decides how the run starts in its directory (run_start.h) and every rank learns the
// checkpoint to load, or rank 0's error, so that all of them stop alike.
std::optional<fs::path> Trainer::Impl::agree_on_start() {
  enum : uint8_t { ok, config_error, data_error, other_error };
  uint8_t status = ok;
  std::string text;  // the checkpoint ("" from scratch) or the error
  std::exception_ptr error;
  if (rank == 0) {
    try {
      start = start_run(cfg, run_start_env());
      for (const std::string& k : start.skipped) LOCKSTEP_LOG(warn, "passing over a damaged checkpoint: ", k);
      LOCKSTEP_LOG(info, start.note);
      text = start.resume ? start.resume->string() : std::string();
    } catch (const std::exception& e) {
      status = dynamic_cast<const ConfigError*>(&e) ? config_error
               : dynamic_cast<const DataError*>(&e) ? data_error : other_error;
      text = e.what();
      error = std::current_exception();
    }
  }
  text = from_rank0(pg, std::string(1, char('0' + status)) + text);
  status = uint8_t(text[0] - '0');
  text.erase(0, 1);
  if (error) std::rethrow_exception(error);
  if (status == config_error) throw ConfigError(str_cat("rank 0 (starting the run): ", text));
  if (status == data_error) throw DataError(str_cat("rank 0 (starting the run): ", text));
  if (status != ok) throw Error(str_cat("rank 0 (starting the run): ", text));
  if (text.empty()) return std::nullopt;
  return fs::path(text);
}

// Everything loaded on every rank: rank 0 records the start (HEAD.json; --overwrite deletes
// the earlier run), and all stop alike if it cannot.
void Trainer::Impl::commit_start() {
  std::string error;
  if (rank == 0) {
    try {
      commit_run_start(start);
    } catch (const std::exception& e) {
      error = str_cat(e.what(), " ");  // never empty
    }
  }
  error = from_rank0(pg, error);
  if (!error.empty()) throw SystemError(EIO, str_cat("rank 0 could not record the start of the run: ", error));
}

// Built on DDP's view of the parameters (after DDP, which may re-lay the gradients out), then
// loaded from a resumed checkpoint (collective: with ZeRO every rank reads its own shards).
void Trainer::Impl::setup_optimizer() {
  opt = make_optimizer(cfg, model, ddp->params(), pg, base_lr, timeout());
  if (!pending_resume) return;
  const Checkpoint c = std::move(*pending_resume);
  pending_resume.reset();
  restore_optimizer_state(pg, *opt, ddp->params(), c);
}

// Rank 0 read the checkpoint already if it chose it as the newest intact one (run_start.h).
void Trainer::Impl::resume_from(const fs::path& path) {
  Checkpoint c =
      start.loaded && start.loaded->path == path ? std::move(*start.loaded) : load_checkpoint(path);
  start.loaded.reset();
  const std::string origin = path.string();
  resumed_path = path;
  if (c.manifest.model != cfg.model)
    LOCKSTEP_THROW(DataError, origin, ": checkpoint of model '", c.manifest.model, "', but the run trains '",
                   cfg.model, "'; pass --model ", c.manifest.model, " or another checkpoint");
  restore_model(model, c.weights, origin + "/model.safetensors");
  const data::SamplerState sampler = resume_sampler_state(c.manifest, origin + "/state.json", train_set.size());
  loader->load_state(sampler);
  step = start_step = last_saved_step = start_step_of_stretch = c.manifest.step;
  start_offset_of_stretch = sampler.offset;
  epoch = loader->sampler().epoch();
  resumed_mid_epoch = true;
  if (c.manifest.world_size != world)
    LOCKSTEP_LOG(warn, "resuming a checkpoint of world size ", c.manifest.world_size, " with ", world,
                 " workers: the sampler reshards and lr follows the scaling rule; the result is not "
                 "bitwise that of an uninterrupted run");
  if (rank == 0)
    LOCKSTEP_LOG(info, "resumed from ", origin, " at step ", step, ", epoch ", epoch);
  c.weights = {};  // restored above; a model's worth of memory not to hold until setup_optimizer
  pending_resume = std::move(c);
}

int64_t Trainer::Impl::train_step() {
  const data::Batch* b = loader->next();
  if (b == nullptr) return 0;  // end of the epoch
  // The epoch's last group may be short; batches_left() is known once a batch was taken.
  const int64_t k = std::min<int64_t>(cfg.grad_accum, 1 + loader->batches_left());
  model.zero_grad();
  ddp->set_grad_scale(1.0f / float(k));  // the mean over micro-batches
  double stats[3] = {0, 0, 0};             // loss * samples, samples, correct
  for (int64_t i = 0; i < k; ++i) {
    if (i > 0) b = loader->next();
    LOCKSTEP_CHECK(b != nullptr, "loader ran out of batches inside an accumulation group");
    nn::Shape shape(std::span<const int64_t>(b->shape()));
    x.resize(shape);
    std::copy(b->features().begin(), b->features().end(), x.data());
    std::optional<ddp::DistributedDataParallel::NoSync> guard;
    if (i + 1 < k) guard.emplace(ddp->no_sync());
    const float loss = ce.forward(ddp->forward(x), b->labels());
    ddp->backward(ce.backward());
    stats[0] += double(loss) * double(b->size());
    stats[1] += double(b->size());
    stats[2] += double(ce.correct());
  }
  if (cfg.clip > 0) nn::clip_grad_norm(model, float(cfg.clip));  // never when opt reduces them (validate)
  opt->set_lr(sched->lr(step));
  const bool stepped = ddp->step(*opt);  // false: a gradient was not finite and no rank changed its weights
  sum_over_ranks(pg, stats);
  const double loss = stats[0] / std::max(1.0, stats[1]);
  if (!stepped || !std::isfinite(loss)) throw diverged(loss, stepped);
  window_loss += stats[0];
  window_samples += stats[1];
  return int64_t(stats[1]);
}

// Every rank throws it at the same step. DDP names the parameter; an optimizer that reduces the
// gradients itself (ZeRO) checked only its own slice of them, and clipping is not available.
DivergedError Trainer::Impl::diverged(double loss, bool stepped) const {
  std::string what;
  if (!std::isfinite(loss)) what = str_cat("the mean loss over the global batch is ", loss);
  else if (opt->reduces_gradients()) what = "an averaged gradient is not finite (found by the optimizer's check of the reduced slices)";
  else what = str_cat("gradient of '", ddp->last_result().nonfinite_param, "' is not finite");
  return DivergedError(str_cat(
      "training diverged at step ", step + 1, " (epoch ", epoch, "): ", what,
      stepped ? "; this step's update was applied" : "; the weights were not updated",
      ". Lower the learning rate (lr = ", lr_now(), "), add warm-up (warmup_steps)",
      opt->reduces_gradients() ? "" : " or clipping (clip = 1.0)", ", and resume from the last checkpoint in ", ckpt_dir.string()));
}

void Trainer::Impl::after_step(int64_t samples, double step_seconds) {
  ++step;
  train_seconds += step_seconds;
  train_samples += double(samples);
  const double sps = step_seconds > 0 ? double(samples) / step_seconds : 0;
  const double loss = window_loss / std::max(1.0, window_samples);
  progress->update(step, loss, train_samples / std::max(1e-9, train_seconds), epoch);
  if (step % cfg.log_every == 0 || step == total_steps) {
    metrics->log_step({.step = step, .epoch = epoch, .loss = loss, .lr = lr_now(),
                       .samples_per_s = sps, .time_s = seconds_since(t0)});
    result.train_loss = loss;
    window_loss = window_samples = 0;
  }
  if (cfg.eval_every > 0 && step % cfg.eval_every == 0) evaluate();
  if (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0) save(false);
}

void Trainer::Impl::evaluate() {
  if (!test_loader || last_eval_step == step) return;
  last_eval_step = step;
  model.eval();
  test_loader->set_epoch(0);
  nn::CrossEntropyLoss loss_fn;
  // loss * samples, correct predictions, samples, predictions (targets: one per sample for
  // images, one per position for a character model)
  double stats[4] = {0, 0, 0, 0};
  while (const data::Batch* b = test_loader->next()) {
    x.resize(nn::Shape(std::span<const int64_t>(b->shape())));
    std::copy(b->features().begin(), b->features().end(), x.data());
    // The bare model: ranks run different numbers of eval batches, so no collective here.
    const float loss = loss_fn.forward(model.forward(x), b->labels());
    stats[0] += double(loss) * double(b->size());
    stats[1] += double(loss_fn.correct());
    stats[2] += double(b->size());
    stats[3] += double(b->labels().size());
  }
  model.train();
  sum_over_ranks(pg, stats);
  result.test_loss = stats[0] / std::max(1.0, stats[2]);
  result.test_acc = stats[1] / std::max(1.0, stats[3]);
  metrics->log_eval({.step = step, .epoch = epoch, .loss = result.test_loss, .accuracy = result.test_acc,
                     .samples = int64_t(stats[2]), .time_s = seconds_since(t0)});
  progress->message(str_cat("eval step ", step, " epoch ", epoch, ": test_loss=", result.test_loss,
                            " test_acc=", result.test_acc, " (", int64_t(stats[2]), " samples)"));
}

CheckpointSave Trainer::Impl::snapshot(const OptimizerSnapshot& os) {
  CheckpointSave s{.model = cfg.model, .step = step, .epoch = epoch, .world_size = world,
                   .weights = model_views(model),
                   .state = {{"sampler", loader->state().to_string()},
                             {"rng", {{"seed", cfg.seed}, {"derivation", "(seed, epoch, sample index)"}}},
                             {"lr", lr_now()},
                             {"global_batch", global_batch},
                             {"sampler_start", {{"step", start_step_of_stretch}, {"offset", start_offset_of_stretch}}},
                             {"config", cfg.to_json()}}};
  os.add_to(s);
  if (last_eval_step == step && std::isfinite(result.test_loss))  // for checkpoint_keep_best
    s.state["eval"] = {{"step", step}, {"test_loss", result.test_loss}, {"test_acc", result.test_acc}};
  s.lineage = start.lineage;
  return s;
}

// Rank 0 writes (in the background unless checkpoint_async is off); every rank learns whether
// the write before it (or, when `wait_now`, this one) worked, so a failed save stops all of
// them alike with the same message instead of leaving the others waiting.
void Trainer::Impl::save(bool wait_now) {
  const bool fresh = step != last_saved_step;
  if (!fresh && !wait_now) return;
  // Collective: a sharded optimizer state (ZeRO) is gathered on rank 0.
  const OptimizerSnapshot os = fresh ? snapshot_optimizer(pg, *opt, ddp->params(), timeout()) : OptimizerSnapshot{};
  double failed[1] = {0};
  std::string error;
  if (rank == 0) {
    try {
      if (fresh) writer->submit(snapshot(os));
      if (wait_now || !cfg.checkpoint_async) result.last_checkpoint = writer->wait().value_or(fs::path());
    } catch (const std::exception& e) {  // std::filesystem errors too: never one rank alone
      failed[0] = 1;
      error = e.what();
    }
  }
  sum_over_ranks(pg, failed);
  if (failed[0] != 0) {
    // Every rank reports rank 0's reason: whichever rank's error the user reads (the launcher
    // stops the others shortly after the first exits), it names the cause.
    error = from_rank0(pg, error);
    throw SystemError(EIO, str_cat("checkpoint failed on rank 0", error.empty() ? "" : ": " + error,
                                   "; earlier checkpoints in ", ckpt_dir.string(),
                                   " are intact. Free disk space or fix permissions and resume"));
  }
  last_saved_step = step;
  if (fresh && !wait_now) progress->message(str_cat("checkpoint step ", step, " -> ", ckpt_dir.string()));
}

void Trainer::Impl::run_epochs() {
  while (epoch < cfg.epochs && step < total_steps) {
    if (!resumed_mid_epoch) {
      loader->set_epoch(epoch);
      start_step_of_stretch = step;
      start_offset_of_stretch = 0;
    }
    resumed_mid_epoch = false;
    while (step < total_steps) {
      const auto t = Clock::now();
      const int64_t samples = train_step();
      if (samples == 0) break;  // end of the epoch
      after_step(samples, seconds_since(t));
      if (hooks.stop_after && hooks.stop_after(step)) {
        result.stopped = true;
        return;
      }
    }
    if (loader->batches_left() != 0) {  // max_steps ended training inside the epoch
      const int64_t done = start_offset_of_stretch + (step - start_step_of_stretch) * global_batch;
      result.epochs_done = double(epoch) + std::min(1.0, double(done) / double(train_set.size()));
      return;
    }
    evaluate();
    ++epoch;
  }
}

// A resume of a run that already ended: says so (rank 0) instead of a summary of no steps.
TrainResult Trainer::Impl::already_complete() {
  result.steps = step;
  result.epochs = epoch;
  result.total_steps = total_steps;
  result.already_complete = true;
  result.last_checkpoint = resumed_path;
  if (rank == 0 && hooks.out) {
    std::fprintf(hooks.out, "%s\n", result.summary_line(cfg, world).c_str());
    std::fflush(hooks.out);
  }
  return result;
}

Trainer::Trainer(TrainConfig cfg, nn::Model& model, const data::Dataset& train,
                 const data::Dataset* test, comm::ProcessGroup& pg, TrainerHooks hooks)
    : impl_(std::make_unique<Impl>(std::move(cfg), model, train, test, pg, std::move(hooks))) {}

Trainer::~Trainer() = default;

TrainResult Trainer::run() {
  Impl& m = *impl_;
  m.setup();
  if (m.complete) return m.already_complete();
  m.t0 = Clock::now();
  if (m.cfg.checkpoint_initial && m.step == 0) m.save(true);  // step 0: the initial weights
  m.run_epochs();
  if (!m.result.stopped) {
    m.evaluate();  // when max_steps ended training mid-epoch
    m.save(true);
  } else if (m.writer) {
    m.result.last_checkpoint = m.writer->wait().value_or(fs::path());  // as a crash after it
  }
  m.progress->finish();
  m.result.steps = m.step;
  m.result.epochs = m.epoch;
  if (m.result.epochs_done < double(m.epoch)) m.result.epochs_done = double(m.epoch);
  m.result.samples_per_s = m.train_samples / std::max(1e-9, m.train_seconds);
  m.result.seconds = seconds_since(m.t0);
  m.metrics->log({{"kind", "summary"}, {"step", m.step}, {"samples_per_s", m.result.samples_per_s},
                  {"test_acc", std::isfinite(m.result.test_acc) ? nlohmann::json(m.result.test_acc) : nlohmann::json()},
                  {"seconds", m.result.seconds}});
  if (m.rank == 0 && m.hooks.out) {
    std::fprintf(m.hooks.out, "%s\n", m.result.summary_line(m.cfg, m.world).c_str());
    std::fflush(m.hooks.out);
  }
  return m.result;
}

std::string TrainResult::summary_line(const TrainConfig& c, int world_size) const {
  if (already_complete)
    return str_cat("lockstep train: already complete: model=", c.model, " is at step ", steps,
                   steps == total_steps ? str_cat(" of ", total_steps)
                                        : str_cat(", the end of its last epoch (this configuration counts ",
                                                  total_steps, " steps)"),
                   " (", last_checkpoint.string(), "); nothing to train. To train on, raise --max-steps or "
                   "--epochs; for a new run, pick another --run-dir. run_dir=", c.run_dir);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "lockstep train: %s model=%s world=%d steps=%lld epochs=%.4g train_loss=%.4f "
                "test_loss=%.4f test_acc=%.4f samples/s=%.0f time=%.1fs run_dir=%s",
                stopped ? "stopped" : "done", c.model.c_str(), world_size, (long long)steps,
                epochs_done, train_loss, test_loss, test_acc, samples_per_s, seconds,
                c.run_dir.c_str());
  return buf;
}

}  // namespace lockstep::train
