// Reference models, by name:
//   fmnist-mlp  Flatten → Linear(784,512) → ReLU → Linear(512,256) → ReLU → Linear(256,10)
//   fmnist-cnn  Conv2d(1,32,3,p1) → ReLU → MaxPool(2) → Conv2d(32,64,3,p1) → ReLU → MaxPool(2)
//               → Flatten → Linear(3136,128) → ReLU → Linear(128,10)
//   char-gpt    a small GPT for characters (make_char_gpt for other sizes)
// Inputs: images [N, 1, 28, 28] (the MLP flattens them itself); char-gpt takes token ids
// as floats [B, T] and returns logits [B, T, vocab].
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lockstep/nn/model.h"

namespace lockstep::nn {

struct CharGptConfig {
  int64_t vocab = 96;
  int64_t block = 64;   // maximum sequence length
  int64_t dim = 128;
  int64_t heads = 4;
  int64_t layers = 2;
};

std::unique_ptr<Model> make_model(const std::string& name, uint64_t seed);
std::unique_ptr<Model> make_char_gpt(const CharGptConfig& cfg, uint64_t seed);
std::vector<std::string> model_names();

}  // namespace lockstep::nn
