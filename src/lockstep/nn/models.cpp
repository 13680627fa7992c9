#include "lockstep/nn/models.h"

#include "lockstep/core/error.h"
#include "lockstep/nn/blas.h"
#include "lockstep/nn/layers.h"

namespace lockstep::nn {
namespace {

std::unique_ptr<Module> fmnist_mlp() {
  auto s = std::make_unique<Sequential>();
  s->emplace<Flatten>().emplace<Linear>(784, 512).emplace<ReLU>();
  s->emplace<Linear>(512, 256).emplace<ReLU>().emplace<Linear>(256, 10);
  return s;
}

std::unique_ptr<Module> fmnist_cnn() {
  auto s = std::make_unique<Sequential>();
  s->emplace<Conv2d>(1, 32, 3, 1, 1).emplace<ReLU>().emplace<MaxPool2d>(2);
  s->emplace<Conv2d>(32, 64, 3, 1, 1).emplace<ReLU>().emplace<MaxPool2d>(2);
  s->emplace<Flatten>().emplace<Linear>(3136, 128).emplace<ReLU>().emplace<Linear>(128, 10);
  return s;
}

std::unique_ptr<Module> gpt_block(const CharGptConfig& c) {
  auto attn = std::make_unique<Sequential>();
  attn->emplace<LayerNorm>(c.dim).emplace<CausalSelfAttention>(c.dim, c.heads);
  auto mlp = std::make_unique<Sequential>();
  mlp->emplace<LayerNorm>(c.dim).emplace<Linear>(c.dim, 4 * c.dim).emplace<GELU>().emplace<Linear>(4 * c.dim, c.dim);
  auto block = std::make_unique<Sequential>();
  block->emplace<Residual>(std::move(attn)).emplace<Residual>(std::move(mlp));
  return block;
}

}  // namespace

std::vector<std::string> model_names() { return {"fmnist-mlp", "fmnist-cnn", "char-gpt"}; }

std::unique_ptr<Model> make_char_gpt(const CharGptConfig& c, uint64_t seed) {
  if (c.layers < 1 || c.heads < 1 || c.dim % c.heads != 0)
    LOCKSTEP_THROW(InvalidArgument, "make_char_gpt: need layers >= 1 and dim (", c.dim, ") divisible by heads (",
                   c.heads, ")");
  init_threads_from_env();
  auto s = std::make_unique<Sequential>();
  s->emplace<Embedding>(c.vocab, c.dim, 0.02f).emplace<PositionalEmbedding>(c.block, c.dim, 0.02f);
  for (int64_t i = 0; i < c.layers; ++i) s->add(gpt_block(c));
  s->emplace<LayerNorm>(c.dim).emplace<Linear>(c.dim, c.vocab);
  return std::make_unique<Model>(std::move(s), seed);
}

std::unique_ptr<Model> make_model(const std::string& name, uint64_t seed) {
  init_threads_from_env();
  if (name == "fmnist-mlp") return std::make_unique<Model>(fmnist_mlp(), seed);
  if (name == "fmnist-cnn") return std::make_unique<Model>(fmnist_cnn(), seed);
  if (name == "char-gpt") return make_char_gpt(CharGptConfig{}, seed);
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  LOCKSTEP_THROW(ConfigError, "unknown model '", name, "'; known models: ", known);
}

}  // namespace lockstep::nn
