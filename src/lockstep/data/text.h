// Plain text for a character model. The vocabulary is the set of distinct bytes of the
// text (sorted, so every rank derives the same ids from the same file); sample i is the
// window of seq_len tokens starting at i * seq_len, and its targets are the same window
// shifted by one (the next character at every position).
//
//   TextDataset t = load_text("input.txt", 64);
//   t.data.size();            // (tokens - 1) / 64 samples, shape {64}, 64 targets each
//   t.vocab.decode(ids);      // back to text
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lockstep/data/dataset.h"

namespace lockstep::data {

class CharVocab {
 public:
  CharVocab() = default;
  // The distinct bytes of `text`, in increasing order.
  static CharVocab from_bytes(std::span<const uint8_t> text);

  int size() const { return static_cast<int>(bytes_.size()); }
  uint8_t byte_of(int id) const { return bytes_.at(static_cast<size_t>(id)); }
  // -1 when the byte is not in the vocabulary.
  int id_of(uint8_t byte) const { return ids_[byte]; }
  std::vector<int32_t> encode(std::string_view text) const;  // InvalidArgument on unknown bytes
  std::string decode(std::span<const int32_t> ids) const;
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
  std::array<int16_t, 256> ids_{};
};

struct TextDataset {
  Dataset data;  // FeatureKind::token_u8, shape {seq_len}, seq_len targets per sample
  CharVocab vocab;
};

TextDataset parse_text(std::span<const uint8_t> text, const std::string& name, int64_t seq_len);
// Reads a text file (gzipped or not).
TextDataset load_text(const std::string& path, int64_t seq_len);

}  // namespace lockstep::data
