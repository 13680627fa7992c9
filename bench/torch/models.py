"""PyTorch twins of examples/common/torch_models.h (fmnist-cnn, and the gpt of lockstep's
char-gpt shape) and of examples/common/torch_text.h (text file -> next-character windows,
split 90/10 as `lockstep train --model char-gpt` splits it), for bench/torch/ddp_gloo.py."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class FmnistCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(3136, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, heads, block):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.future = torch.ones(block, block, dtype=torch.bool).triu(1)  # not a buffer

    def forward(self, x):
        b, t, c = x.shape
        hd = c // self.heads
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        att = q.matmul(k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        att = att.masked_fill(self.future[:t, :t], float("-inf")).softmax(-1)
        return self.proj(att.matmul(v).transpose(1, 2).reshape(b, t, c))


class GptBlock(nn.Module):
    def __init__(self, dim, heads, block):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, block)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class CharGpt(nn.Module):
    def __init__(self, vocab=96, block=64, dim=256, heads=4, layers=4):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        nn.init.normal_(self.tok.weight, 0.0, 0.02)
        self.pos = nn.Parameter(torch.randn(block, dim) * 0.02)
        self.blocks = nn.ModuleList(GptBlock(dim, heads, block) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:ids.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def gpt_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def load_text_windows(path, block=64, max_vocab=96):
    """(train_x, train_y, val_x, val_y) int64 [N, block], as lockstep's load_text cuts them."""
    raw = open(path, "rb").read()
    vocab = sorted(set(raw))
    if len(vocab) > max_vocab:
        raise SystemExit(f"{path}: {len(vocab)} distinct bytes, more than the model's {max_vocab}")
    lut = torch.zeros(256, dtype=torch.long)
    lut[torch.tensor(vocab)] = torch.arange(len(vocab))
    ids = lut[torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()]
    n = (len(ids) - 1) // block
    x = ids[:n * block].view(n, block)
    y = ids[1:n * block + 1].view(n, block)
    n_val = n // 10
    return x[:n - n_val], y[:n - n_val], x[n - n_val:], y[n - n_val:]
