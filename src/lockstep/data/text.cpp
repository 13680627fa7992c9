#include "lockstep/data/text.h"

#include "lockstep/core/error.h"
#include "lockstep/data/file_reader.h"

namespace lockstep::data {

CharVocab CharVocab::from_bytes(std::span<const uint8_t> text) {
  std::array<bool, 256> seen{};
  for (uint8_t c : text) {
    seen[c] = true;
  }
  CharVocab v;
  v.ids_.fill(-1);
  for (int c = 0; c < 256; ++c) {
    if (!seen[static_cast<size_t>(c)]) {
      continue;
    }
    v.ids_[static_cast<size_t>(c)] = static_cast<int16_t>(v.bytes_.size());
    v.bytes_.push_back(static_cast<uint8_t>(c));
  }
  return v;
}

std::vector<int32_t> CharVocab::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const int id = ids_[static_cast<uint8_t>(text[i])];
    if (id < 0) {
      LOCKSTEP_THROW(InvalidArgument, "character 0x", std::to_string(static_cast<uint8_t>(text[i])),
                     " at position ", i, " is not in the vocabulary of ", size(),
                     " characters; use characters that occur in the training text");
    }
    ids.push_back(id);
  }
  return ids;
}

std::string CharVocab::decode(std::span<const int32_t> ids) const {
  std::string s;
  s.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= size()) {
      LOCKSTEP_THROW(InvalidArgument, "token id ", id, " outside the vocabulary [0, ", size(), ")");
    }
    s.push_back(static_cast<char>(bytes_[static_cast<size_t>(id)]));
  }
  return s;
}

TextDataset parse_text(std::span<const uint8_t> text, const std::string& name, int64_t seq_len) {
  if (seq_len < 1) {
    LOCKSTEP_THROW(InvalidArgument, "text dataset: sequence length must be >= 1, got ", seq_len);
  }
  if (static_cast<int64_t>(text.size()) < seq_len + 1) {
    LOCKSTEP_THROW(DataError, name, ": text is ", text.size(),
                   " bytes, too short for one sequence "
                   "of ",
                   seq_len,
                   " characters plus its next-character target; use a longer "
                   "text or a shorter sequence length");
  }
  TextDataset t;
  t.vocab = CharVocab::from_bytes(text);
  const auto n = static_cast<size_t>((static_cast<int64_t>(text.size()) - 1) / seq_len);
  const auto len = static_cast<size_t>(seq_len);
  std::vector<uint8_t> inputs(n * len);
  std::vector<int32_t> targets(n * len);
  for (size_t i = 0; i < n * len; ++i) {
    inputs[i] = static_cast<uint8_t>(t.vocab.id_of(text[i]));
    targets[i] = t.vocab.id_of(text[i + 1]);
  }
  t.data = Dataset::from_u8(name, FeatureKind::token_u8, {seq_len}, std::move(inputs),
                            std::move(targets), seq_len, t.vocab.size());
  return t;
}

TextDataset load_text(const std::string& path, int64_t seq_len) {
  return parse_text(read_data_file(path), path, seq_len);
}

}  // namespace lockstep::data
