// lockstep's reference architectures in torch::nn (LibTorch), shared by the LibTorch examples
// (examples/libtorch_gpt) and the LibTorch benchmarks (bench/torch), so that every program
// that is compared trains the same model. bench/torch/models.py holds their PyTorch twins.
//
//   FmnistCnn   lockstep's fmnist-cnn: Conv2d(1,32,3,p1) ReLU MaxPool(2) Conv2d(32,64,3,p1)
//               ReLU MaxPool(2) Flatten Linear(3136,128) ReLU Linear(128,10)
//   CharGpt     lockstep's char-gpt shape (src/lockstep/nn/models.cpp): token and learned
//               position embeddings, `layers` pre-norm blocks x + attn(ln(x)), x + mlp(ln(x))
//               (causal self-attention with one qkv Linear, MLP dim -> 4 dim -> dim with tanh
//               GELU), final LayerNorm and Linear(dim, vocab). Token ids [B, T] (int64) in,
//               logits [B, T, vocab] out. No buffers: the causal mask is a plain member.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>

namespace lockstep_examples {

struct FmnistCnnImpl : torch::nn::Module {
  FmnistCnnImpl() {
    conv1 =
        register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)));
    conv2 =
        register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)));
    fc1 = register_module("fc1", torch::nn::Linear(3136, 128));
    fc2 = register_module("fc2", torch::nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2);
    return fc2->forward(torch::relu(fc1->forward(x.flatten(1))));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(FmnistCnn);

// The default is "a few M parameters" (3.2 M); lockstep's own char-gpt default is dim 128,
// 2 layers (0.4 M), which the flags of the programs reach too.
struct CharGptConfig {
  int64_t vocab = 96;
  int64_t block = 64;  // maximum sequence length
  int64_t dim = 256;
  int64_t heads = 4;
  int64_t layers = 4;
};

struct CausalSelfAttentionImpl : torch::nn::Module {
  CausalSelfAttentionImpl(int64_t dim, int64_t heads, int64_t block) : heads_(heads) {
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
    future_ = torch::ones({block, block}, torch::kBool).triu(1);  // not a buffer: never synced
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1), c = x.size(2), hd = c / heads_;
    auto parts = qkv->forward(x).view({b, t, 3, heads_, hd}).permute({2, 0, 3, 1, 4});
    auto q = parts[0], k = parts[1], v = parts[2];  // [B, H, T, hd]
    auto att = q.matmul(k.transpose(-2, -1)) * (1.0 / std::sqrt(double(hd)));
    att = att.masked_fill(future_.slice(0, 0, t).slice(1, 0, t), -INFINITY).softmax(-1);
    return proj->forward(att.matmul(v).transpose(1, 2).reshape({b, t, c}));
  }
  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_;
  torch::Tensor future_;
};
TORCH_MODULE(CausalSelfAttention);

struct GptBlockImpl : torch::nn::Module {
  explicit GptBlockImpl(const CharGptConfig& c) {
    ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
    attn = register_module("attn", CausalSelfAttention(c.dim, c.heads, c.block));
    ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
    fc1 = register_module("fc1", torch::nn::Linear(c.dim, 4 * c.dim));
    fc2 = register_module("fc2", torch::nn::Linear(4 * c.dim, c.dim));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn->forward(ln1->forward(x));
    return x + fc2->forward(torch::gelu(fc1->forward(ln2->forward(x)), "tanh"));
  }
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  CausalSelfAttention attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(GptBlock);

struct CharGptImpl : torch::nn::Module {
  explicit CharGptImpl(const CharGptConfig& c = {}) {
    TORCH_CHECK(c.dim % c.heads == 0 && c.layers >= 1,
                "CharGpt: need layers >= 1 and dim divisible by heads");
    tok = register_module("tok", torch::nn::Embedding(c.vocab, c.dim));
    pos = register_parameter("pos", torch::randn({c.block, c.dim}) * 0.02);
    {
      torch::NoGradGuard no_grad;
      tok->weight.normal_(0.0, 0.02);
    }
    for (int64_t i = 0; i < c.layers; ++i)
      blocks.push_back(register_module("block" + std::to_string(i), GptBlock(c)));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.dim})));
    head = register_module("head", torch::nn::Linear(c.dim, c.vocab));
  }
  torch::Tensor forward(const torch::Tensor& ids) {
    auto x = tok->forward(ids) + pos.slice(0, 0, ids.size(1));
    for (auto& b : blocks) x = b->forward(x);
    return head->forward(ln_f->forward(x));
  }
  torch::nn::Embedding tok{nullptr};
  torch::Tensor pos;
  std::vector<GptBlock> blocks;
  torch::nn::LayerNorm ln_f{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(CharGpt);

// Mean next-token cross-entropy of logits [B, T, V] against targets [B, T].
inline torch::Tensor gpt_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              targets.reshape({-1}));
}

inline int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace lockstep_examples
