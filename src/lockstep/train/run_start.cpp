#include "lockstep/train/run_start.h"

#include "lockstep/core/dist_env.h"
#include "lockstep/core/error.h"
#include "lockstep/core/log.h"

namespace lockstep::train {

namespace fs = std::filesystem;

namespace {

struct RunDir {
  fs::path run, ckpt;
  std::vector<CheckpointEntry> all;
  std::optional<Head> head;
  Lineage current;
};

RunDir read_run_dir(const TrainConfig& c) {
  RunDir d{c.run_dir, fs::path(c.run_dir) / "checkpoints", {}, {}, {}};
  d.all = scan_checkpoints(d.ckpt);
  d.head = read_head(d.ckpt);
  d.current = d.head ? d.head->lineage : current_lineage(d.ckpt, d.all);
  return d;
}

bool same_path(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}

// Whether checkpoint directory `x` lies in `ckpt` (directly or in branches/<id>/).
bool inside(const fs::path& x, const fs::path& ckpt) {
  const fs::path parent = fs::weakly_canonical(x).parent_path();
  return same_path(parent, ckpt) || same_path(parent.parent_path(), ckpt / "branches");
}

std::string steps_of(const std::vector<CheckpointEntry>& es) {
  std::string s;
  for (const CheckpointEntry& e : es) s += (s.empty() ? "" : ", ") + std::to_string(e.step);
  return s;
}

// What an earlier run left in the directory ("" when nothing).
std::string earlier_run(const RunDir& d) {
  std::error_code ec;
  const fs::path metrics = d.run / "metrics.jsonl";
  const bool logged = fs::exists(metrics, ec) && fs::file_size(metrics, ec) > 0;
  if (d.all.empty() && !logged) return "";
  std::string what =
      d.all.empty() ? "" : str_cat(d.all.size(), " checkpoint(s), up to step ", d.all.back().step);
  if (logged) what += what.empty() ? "metrics.jsonl" : " and metrics.jsonl";
  return what;
}

// A new run must not mix with an earlier one: refused, or (overwrite) the earlier one is
// deleted when the run is committed. Returns what will be deleted ("" nothing).
std::string refuse_or_delete(const RunDir& d, const TrainConfig& c, const std::string& starting) {
  const std::string earlier = earlier_run(d);
  if (!earlier.empty() && !c.overwrite)
    LOCKSTEP_THROW(ConfigError, "run directory ", d.run.string(), " already holds a run (", earlier,
                   "); ", starting,
                   " would mix with it. Pass --resume auto to continue that run, --overwrite "
                   "(overwrite = true) "
                   "to delete it and start anew, or pick another --run-dir");
  return earlier;
}

RunStart begin(RunDir& d, const RunStartEnv& env, RunStart s, const std::string& origin) {
  s.head = {s.lineage, origin, env.job};
  s.ckpt_dir = d.ckpt;
  return s;
}

RunStart from_scratch(RunDir& d, const RunStartEnv& env, const std::string& why,
                      std::string earlier = "") {
  RunStart s;
  s.lineage = {new_lineage_id(), {}};
  s.delete_earlier = std::move(earlier);
  s.note = str_cat(why, ": starting from scratch in lineage ", short_id(s.lineage.id));
  return begin(d, env, std::move(s), "");
}

// The newest intact checkpoint of the current lineage; from scratch when it has none (unless
// `required`), a DataError when all of them are damaged.
RunStart continue_current(RunDir& d, const RunStartEnv& env, const std::string& why,
                          bool required) {
  const std::vector<CheckpointEntry> members = members_of(d.all, d.current);
  RunStart s;
  Checkpoint loaded;
  const auto pick = newest_intact(members, &s.skipped, &loaded);
  if (!pick) {
    std::string bad;
    for (const std::string& k : s.skipped) bad += "\n  " + k;
    if (!members.empty())
      LOCKSTEP_THROW(DataError, d.ckpt.string(), ": no intact checkpoint in the current lineage ",
                     short_id(d.current.id), " (", why, "):", bad,
                     "\nrun `lockstep checkpoints list` to see the others and `lockstep "
                     "checkpoints rollback` to pick one");
    if (required)
      LOCKSTEP_THROW(DataError, d.run.string(), ": no checkpoint found to resume (", why, ")");
    return from_scratch(d, env, str_cat(why, ", no checkpoint yet"));
  }
  s.resume = pick->path;
  s.loaded = std::move(loaded);
  s.lineage =
      d.current.id.empty() ? d.current.fork(pick->step) : d.current;  // a run of an older build
  const size_t others = d.all.size() - members.size();
  s.note = str_cat(
      why, ": resuming ", pick->path.string(),
      ", the newest intact checkpoint of the current lineage ", short_id(d.current.id),
      " (checkpoints/HEAD.json)",
      others ? str_cat("; ", others, " checkpoint(s) of other lineages not considered") : "");
  return begin(d, env, std::move(s), pick->path.string());
}

// A named checkpoint: continues the lineage whose newest it is, else starts a lineage that
// grows from it; one of another run starts a new run here.
RunStart from_checkpoint(RunDir& d, const TrainConfig& c, const RunStartEnv& env,
                         const fs::path& x) {
  const CheckpointEntry e = read_checkpoint_entry(x);
  if (!e.error.empty()) LOCKSTEP_THROW(DataError, e.error);
  RunStart s;
  s.resume = x;
  if (!inside(x, d.ckpt)) {
    s.delete_earlier =
        refuse_or_delete(d, c, str_cat("starting from another run's checkpoint ", x.string()));
    s.lineage = {new_lineage_id(), {}};
    s.note = str_cat("resuming ", x.string(), " (another run's checkpoint) in a new lineage ",
                     short_id(s.lineage.id));
    return begin(d, env, std::move(s), x.string());
  }
  if (c.overwrite)
    LOCKSTEP_THROW(ConfigError, "--overwrite would delete ", d.ckpt.string(),
                   ", which holds --resume ", x.string(), "; drop --overwrite");
  const std::vector<CheckpointEntry> members = members_of(d.all, d.current);
  if (!d.current.id.empty() && !members.empty() && same_path(members.back().path, x)) {
    s.lineage = d.current;
    s.note = str_cat("resuming ", x.string(), ", the newest checkpoint of the current lineage ",
                     short_id(s.lineage.id));
    return begin(d, env, std::move(s), x.string());
  }
  s.lineage = e.lineage.fork(e.step);
  std::vector<CheckpointEntry> later;
  for (const CheckpointEntry& m : members)
    if (m.step > e.step) later.push_back(m);
  s.note = str_cat(later.empty() ? "resuming " : "rolling back to ", x.string(), ": new lineage ",
                   short_id(s.lineage.id), " grows from step ", e.step, " of lineage ",
                   short_id(e.lineage.id));
  if (!later.empty())
    s.note += str_cat(
        "; the later checkpoints of lineage ", short_id(d.current.id), " (steps ", steps_of(later),
        ") are kept as an abandoned branch (`lockstep checkpoints list RUN_DIR` shows them, "
        "`lockstep checkpoints rollback --prune` deletes them)");
  return begin(d, env, std::move(s), x.string());
}

}  // namespace

RunStartEnv run_start_env() {
  RunStartEnv env;
  if (auto n = getenv_opt("LOCKSTEP_RESTART_COUNT")) env.restart_count = std::atoi(n->c_str());
  if (auto id = getenv_opt("LOCKSTEP_JOB_ID"))
    env.job = *id;
  else if (auto port = getenv_opt("MASTER_PORT"); port && getenv_opt("LOCKSTEP_RESTART_COUNT"))
    env.job = str_cat(getenv_opt("MASTER_ADDR").value_or(""), ":", *port);
  return env;
}

RunStart start_run(const TrainConfig& c, const RunStartEnv& env) {
  RunDir d = read_run_dir(c);
  if (env.restart_count > 0 && d.head && !env.job.empty() && d.head->job == env.job)
    return continue_current(d, env, str_cat("restart ", env.restart_count, " of this job"), false);
  if (c.resume.empty())
    return from_scratch(d, env, "a new run", refuse_or_delete(d, c, "a new run (no --resume)"));
  if (c.resume == "auto") return continue_current(d, env, "--resume auto", false);
  const fs::path p = c.resume;
  std::error_code ec;
  if (fs::exists(p / "state.json", ec)) return from_checkpoint(d, c, env, p);
  const fs::path dir = fs::is_directory(p / "checkpoints", ec) ? p / "checkpoints" : p;
  if (same_path(dir, d.ckpt))
    return continue_current(d, env, str_cat("--resume ", p.string()), true);
  // Another run's directory: its newest intact checkpoint.
  const auto theirs = scan_checkpoints(dir);
  std::vector<std::string> skipped;
  Checkpoint loaded;
  const auto pick =
      newest_intact(members_of(theirs, current_lineage(dir, theirs)), &skipped, &loaded);
  if (!pick)
    LOCKSTEP_THROW(DataError, p.string(), ": no ", skipped.empty() ? "" : "intact ",
                   "checkpoint found (expected a step-N directory with state.json, a directory of "
                   "them, or a run "
                   "directory with checkpoints/)");
  RunStart s = from_checkpoint(d, c, env, pick->path);
  s.loaded = std::move(loaded);
  s.skipped.insert(s.skipped.begin(), skipped.begin(), skipped.end());
  return s;
}

void commit_run_start(const RunStart& s) {
  const fs::path run = s.ckpt_dir.parent_path();
  if (!s.delete_earlier.empty()) {
    for (const char* name : {"checkpoints", "metrics.jsonl", "run.json", "report"})
      fs::remove_all(run / name);
    LOCKSTEP_LOG(warn, "--overwrite: deleted the earlier run in ", run.string(), " (",
                 s.delete_earlier, ")");
  }
  write_head(s.ckpt_dir, s.head);
}

namespace {

// The checkpoint of `step` a rollback means.
CheckpointEntry rollback_target(const std::vector<CheckpointEntry>& all, const Lineage& cur,
                                const fs::path& ckpt, int64_t step, const std::string& lineage) {
  std::vector<CheckpointEntry> found, current;
  for (const CheckpointEntry& e : all)
    if (e.error.empty() && e.step == step && e.lineage.id.rfind(lineage, 0) == 0)
      found.push_back(e);
  for (const CheckpointEntry& e : found)
    if (cur.contains(e.lineage.id, e.step)) current.push_back(e);
  if (found.empty())
    LOCKSTEP_THROW(DataError, ckpt.string(), ": no readable checkpoint of step ", step,
                   lineage.empty() ? "" : str_cat(" in lineage ", lineage),
                   " (steps there: ", steps_of(all), "; see `lockstep checkpoints list`)");
  if (found.size() == 1) return found[0];
  if (current.size() == 1) return current[0];
  std::string ids;
  for (const CheckpointEntry& e : found) ids += (ids.empty() ? "" : ", ") + short_id(e.lineage.id);
  LOCKSTEP_THROW(ConfigError, ckpt.string(), ": step ", step, " exists in several lineages (", ids,
                 "); pass --lineage ID");
}

}  // namespace

Rollback rollback_run(const fs::path& ckpt, int64_t step, const std::string& lineage, bool prune) {
  const auto all = scan_checkpoints(ckpt);
  const Lineage cur = current_lineage(ckpt, all);
  Rollback r;
  r.to = rollback_target(all, cur, ckpt, step, lineage);
  if (const std::string bad = verify_checkpoint(r.to.path); !bad.empty())
    LOCKSTEP_THROW(DataError, "refusing to roll back to a damaged checkpoint: ", bad);
  const auto members = members_of(all, cur);
  r.changed = cur.id.empty() || members.empty() || !same_path(members.back().path, r.to.path);
  r.lineage = r.changed ? r.to.lineage.fork(step) : cur;
  if (r.changed) write_head(ckpt, {r.lineage, r.to.path.string(), "rollback"});
  for (const CheckpointEntry& e : all)
    if (e.error.empty() && !r.lineage.contains(e.lineage.id, e.step)) r.abandoned.push_back(e);
  if (!prune) return r;
  for (const CheckpointEntry& e : r.abandoned) {
    const fs::path doomed =
        e.path.parent_path() / str_cat(".", e.path.filename().string(), ".pruned-rollback");
    fs::rename(e.path, doomed);
    fs::remove_all(doomed);
  }
  std::error_code ec;
  for (const auto& b : fs::directory_iterator(ckpt / "branches", ec))
    fs::remove(b.path(), ec);  // if empty
  fs::remove(ckpt / "branches", ec);
  return r;
}

}  // namespace lockstep::train
