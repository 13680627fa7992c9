// A text file as next-character windows in torch tensors, split as `lockstep train --model
// char-gpt --data FILE` splits it (src/lockstep/train/setup.cpp): lockstep's load_text cuts
// the file into windows of `block` characters (sample i starts at i * block, its targets are
// the same window shifted by one), the first 90 % train, the last 10 % are held out.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "lockstep/core/error.h"
#include "lockstep/data/text.h"

namespace lockstep_examples {

struct TextWindows {
  torch::Tensor train_x, train_y, val_x, val_y;  // [N, block] int64 token ids
  int vocab = 0;                                 // distinct bytes of the file
};

inline TextWindows load_text_windows(const std::string& path, int64_t block, int64_t max_vocab) {
  const lockstep::data::TextDataset t = lockstep::data::load_text(path, block);
  if (t.vocab.size() > max_vocab)
    LOCKSTEP_THROW(lockstep::DataError, path, ": ", t.vocab.size(),
                   " distinct bytes, but the model's vocabulary is ", max_vocab,
                   "; use plain ASCII text (as `lockstep train --model char-gpt` requires)");
  const int64_t n = t.data.size(), n_val = n / 10;
  if (n - n_val < 1)
    LOCKSTEP_THROW(lockstep::DataError, path, ": too short for one window of ", block,
                   " characters");
  auto x = torch::empty({n, block}, torch::kLong), y = torch::empty({n, block}, torch::kLong);
  auto xa = x.accessor<int64_t, 2>(), ya = y.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const auto f = t.data.u8_features(i);
    const auto g = t.data.targets(i);
    for (int64_t j = 0; j < block; ++j) {
      xa[i][j] = f[size_t(j)];
      ya[i][j] = g[size_t(j)];
    }
  }
  return {x.slice(0, 0, n - n_val), y.slice(0, 0, n - n_val), x.slice(0, n - n_val),
          y.slice(0, n - n_val), t.vocab.size()};
}

}  // namespace lockstep_examples
