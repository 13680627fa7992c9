// `lockstep checkpoints list|verify|rollback RUN_DIR`: what a run directory's checkpoints
// are (step, epoch, eval, lineage, integrity), a full check of each, and a rollback that
// makes an older checkpoint the one `--resume auto` continues from (train/lineage.h).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "lockstep/core/error.h"
#include "lockstep/train/checkpoint.h"
#include "lockstep/train/lineage.h"
#include "lockstep/train/run_start.h"

namespace lockstep::apps {

namespace {

namespace fs = std::filesystem;

struct CheckpointsArgs {
  std::string dir;
  int64_t step = -1;
  std::string lineage;
  bool prune = false;
};

// RUN_DIR/checkpoints, or the directory itself when it is a checkpoints directory.
fs::path checkpoints_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path p = dir;
  if (fs::is_directory(p / "checkpoints", ec)) return p / "checkpoints";
  if (fs::exists(p / "HEAD.json", ec) || !train::scan_checkpoints(p).empty()) return p;
  LOCKSTEP_THROW(DataError, dir,
                 ": no checkpoints here (expected a run directory with checkpoints/, or a "
                 "checkpoints directory)");
}

std::string metric(const nlohmann::json& eval, const char* key) {
  if (!eval.is_object() || !eval.contains(key) || !eval[key].is_number()) return "-";
  return str_cat(std::round(eval[key].get<double>() * 1e4) / 1e4);
}

// "ok", or what is wrong: state.json and the recorded files' sizes (`full`: and every
// file's CRC-32, decoded).
std::string integrity(const train::CheckpointEntry& e, bool full) {
  if (!e.error.empty()) return "BAD: " + e.error;
  std::string bad;
  if (full) {
    bad = train::verify_checkpoint(e.path);
  } else {
    try {
      train::load_manifest(e.path);
    } catch (const Error& err) {
      bad = err.what();
    }
  }
  return bad.empty() ? (full ? "ok" : "ok (sizes; `verify` checks CRCs)") : "BAD: " + bad;
}

int list(const CheckpointsArgs& a, bool full) {
  const fs::path ckpt = checkpoints_dir(a.dir);
  const auto all = train::scan_checkpoints(ckpt);
  const train::Lineage cur = train::current_lineage(ckpt, all);
  std::printf("%s: current lineage %s%s\n", ckpt.c_str(), train::short_id(cur.id).c_str(),
              cur.chain.empty() ? ""
                                : str_cat(" (grown from step ", cur.chain.back().until,
                                          " of lineage ", train::short_id(cur.chain.back().id), ")")
                                      .c_str());
  std::printf("%10s %6s %10s %9s  %-8s %-9s %-24s %s\n", "step", "epoch", "test_loss", "test_acc",
              "lineage", "", "path", "integrity");
  int bad = 0;
  for (const train::CheckpointEntry& e : all) {
    const std::string check = integrity(e, full);
    bad += check.rfind("BAD", 0) == 0;
    const bool current = e.error.empty() && cur.contains(e.lineage.id, e.step);
    std::printf("%10lld %6lld %10s %9s  %-8s %-9s %-24s %s\n", static_cast<long long>(e.step),
                static_cast<long long>(e.epoch), metric(e.eval, "test_loss").c_str(),
                metric(e.eval, "test_acc").c_str(),
                e.error.empty() ? train::short_id(e.lineage.id).c_str() : "?",
                current ? "current" : "abandoned", fs::relative(e.path, ckpt).c_str(),
                check.c_str());
  }
  if (!full) return 0;
  if (bad > 0) {
    std::fprintf(
        stderr,
        "lockstep checkpoints verify: %d of %zu checkpoint(s) in %s are damaged (see BAD above); "
        "`--resume auto` and restarts pass over them, or roll back past them with `lockstep "
        "checkpoints "
        "rollback`\n",
        bad, all.size(), ckpt.c_str());
    return 1;
  }
  std::printf("all %zu checkpoint(s) intact\n", all.size());
  return 0;
}

int rollback(const CheckpointsArgs& a) {
  const fs::path ckpt = checkpoints_dir(a.dir);
  const train::Rollback r = train::rollback_run(ckpt, a.step, a.lineage, a.prune);
  if (r.changed)
    std::printf(
        "rolled back to %s: new current lineage %s grows from step %lld of lineage %s; `lockstep "
        "train "
        "--resume auto` continues from it\n",
        r.to.path.c_str(), train::short_id(r.lineage.id).c_str(), static_cast<long long>(a.step),
        train::short_id(r.to.lineage.id).c_str());
  else
    std::printf("%s is already the newest checkpoint of the current lineage %s\n",
                r.to.path.c_str(), train::short_id(r.lineage.id).c_str());
  std::string steps;
  for (const auto& e : r.abandoned) steps += (steps.empty() ? "" : ", ") + std::to_string(e.step);
  if (!r.abandoned.empty())
    std::printf(
        a.prune
            ? "deleted %zu checkpoint(s) of other lineages (steps %s)\n"
            : "%zu checkpoint(s) of other lineages kept as abandoned branches (steps %s; --prune "
              "deletes them)\n",
        r.abandoned.size(), steps.c_str());
  return 0;
}

}  // namespace

Runner add_checkpoints_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "checkpoints",
      "Inspect, verify and roll back a run's checkpoints:\n"
      "  lockstep checkpoints list RUN_DIR      step, epoch, eval, lineage (current or abandoned), "
      "sizes\n"
      "  lockstep checkpoints verify RUN_DIR    CRC-32 of every file of every checkpoint; exit 1 "
      "naming bad ones\n"
      "  lockstep checkpoints rollback RUN_DIR --step N [--lineage ID] [--prune]\n"
      "                                         make step N the newest of the current lineage, so "
      "that\n"
      "                                         `lockstep train --resume auto` continues from it");
  cmd->require_subcommand(1);
  auto a = std::make_shared<CheckpointsArgs>();
  auto* ls = cmd->add_subcommand("list",
                                 "list the checkpoints of RUN_DIR (or of a checkpoints directory)");
  auto* verify = cmd->add_subcommand(
      "verify", "check every file of every checkpoint; exit 1 if any is damaged");
  auto* back = cmd->add_subcommand("rollback",
                                   "make checkpoint --step N the newest of the current lineage; "
                                   "the later ones become an abandoned "
                                   "branch (kept, or deleted with --prune)");
  for (CLI::App* sub : {ls, verify, back})
    sub->add_option("run_dir", a->dir, "run directory of `lockstep train` (or its checkpoints/)")
        ->required();
  back->add_option("--step", a->step, "step of the checkpoint to roll back to")
      ->required()
      ->check(CLI::NonNegativeNumber);
  back->add_option("--lineage", a->lineage,
                   "lineage id (or its first characters) when several have that step");
  back->add_flag("--prune", a->prune, "delete the checkpoints of every other lineage");
  return [a, ls, verify] {
    if (ls->parsed()) return list(*a, false);
    if (verify->parsed()) return list(*a, true);
    return rollback(*a);
  };
}

}  // namespace lockstep::apps
