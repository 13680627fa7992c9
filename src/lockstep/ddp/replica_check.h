// Replica consistency: the collectives DDP uses to start every rank from the same state
// and to notice when replicas stop being identical. All functions here are collective:
// every rank of `pg` must call them at the same point.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lockstep/comm/process_group.h"
#include "lockstep/ddp/params.h"

namespace lockstep::ddp {

// One line per parameter and buffer: "param 3: 2.weight [512, 784] float32".
std::vector<std::string> architecture_lines(const ParamSource& params);

// 64-bit hash of bytes (multiply-xorshift over 8-byte words; about 1 ns per word).
uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed = 0);

// Allgathers a hash of architecture_lines(); if any rank differs, exchanges the lines and
// throws ConfigError on every rank naming the first difference (rank, line, both sides).
void verify_same_architecture(comm::ProcessGroup& pg, const ParamSource& params, Millis timeout);

// Copies parameters and/or buffers from `root` to every rank (packed into one broadcast).
void broadcast_state(comm::ProcessGroup& pg, ParamSource& params, bool parameters, bool buffers, int root,
                     Millis timeout);

// Allgathers one hash per parameter; throws Error on every rank naming the first parameter
// (in use order) whose values differ and the ranks that disagree with rank 0.
void verify_replicas_identical(comm::ProcessGroup& pg, ParamSource& params, int64_t step, Millis timeout);

}  // namespace lockstep::ddp
