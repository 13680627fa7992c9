// `lockstep train --profile FILE`: a short run whose DDP timelines (ddp/timeline.h, one
// Chrome trace per rank, kept as FILE.rank<r>.trace.json) become a step profile for
// `lockstep plan` (plan/profile.h): bucket sizes, when each bucket became ready in backward,
// forward/backward/optimizer time, medians over the steps after the first three.
#pragma once

#include <string>

#include "lockstep/train/config.h"

namespace lockstep::apps {

// Before the workers start: checks the configuration can be profiled (ConfigError naming the
// flag otherwise), caps the run at 20 steps unless --max-steps says otherwise, and points
// LOCKSTEP_TIMELINE (inherited by the workers) at the per-rank trace files.
void prepare_profile(train::TrainConfig& c, const std::string& file, int world);

// After the run: reads the traces of ranks [0, ranks) and writes FILE. Prints one line.
void finish_profile(const train::TrainConfig& c, const std::string& file, int world, int ranks);

}  // namespace lockstep::apps
