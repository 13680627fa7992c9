// Init: how a parameter's first values are drawn. Every scheme reduces to constant, uniform
// or normal, sampled from nn::Rng so that a seed gives the same weights on every platform.
//
//   Init::torch_default(fan_in)        // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's Linear/Conv default
//   Init::kaiming_normal(fan_in)       // N(0, 2/fan_in), for ReLU networks
//   Init::xavier_uniform(fan_in, fan_out)
#pragma once

#include <cstdint>
#include <span>

#include "lockstep/nn/rng.h"

namespace lockstep::nn {

struct Init {
  enum class Kind : uint8_t { constant, uniform, normal };
  Kind kind = Kind::constant;
  float a = 0.0f;  // constant value | uniform low | normal mean
  float b = 0.0f;  // uniform high | normal std

  static Init zeros() { return {Kind::constant, 0.0f, 0.0f}; }
  static Init ones() { return {Kind::constant, 1.0f, 0.0f}; }
  static Init constant(float v) { return {Kind::constant, v, 0.0f}; }
  static Init uniform(float lo, float hi) { return {Kind::uniform, lo, hi}; }
  static Init normal(float mean, float std) { return {Kind::normal, mean, std}; }
  static Init torch_default(int64_t fan_in);
  static Init kaiming_uniform(int64_t fan_in);  // gain sqrt(2) (ReLU)
  static Init kaiming_normal(int64_t fan_in);
  static Init xavier_uniform(int64_t fan_in, int64_t fan_out);
  static Init xavier_normal(int64_t fan_in, int64_t fan_out);
};

void apply_init(const Init& init, std::span<float> values, Rng& rng);

}  // namespace lockstep::nn
