#!/usr/bin/python3
"""PyTorch twin of nn_train_bench: the same model, batch, data, optimizer and thread count.

Prints samples/s over the timed steps (after the warm-up), a per-layer forward/backward split
from a separate instrumented pass (forward: a clock around each layer; backward: time between
successive full-backward hooks), and peak resident memory. The backward split is approximate:
a layer whose input needs no gradient fires its hook before its weight gradient is computed,
so the first layer's weight-gradient time shows up on the row before it (Flatten in the MLP).

    /usr/bin/python3 bench/nn/torch_peer.py --model fmnist-cnn [--batch 64] [--steps 200]
"""
import argparse
import gzip
import resource
import struct
import time

import numpy as np
import torch
import torch.nn as nn


def load_fmnist(data_dir, limit):
    with gzip.open(f"{data_dir}/train-images-idx3-ubyte.gz", "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803 and rows == 28 and cols == 28, "not an IDX3 file of 28x28 images"
        n = min(n, limit)
        images = np.frombuffer(f.read(n * 784), dtype=np.uint8).reshape(n, 1, 28, 28)
    with gzip.open(f"{data_dir}/train-labels-idx1-ubyte.gz", "rb") as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), dtype=np.uint8)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def make_model(name):
    if name == "fmnist-mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if name == "fmnist-cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    raise SystemExit(f"unknown model {name!r}; known: fmnist-mlp, fmnist-cnn")


class Feeder:
    def __init__(self, x, y, batch):
        self.x, self.y, self.batch, self.cursor = x, y, batch, 0

    def next(self):
        if (self.cursor + 1) * self.batch > self.x.shape[0]:
            self.cursor = 0
        s = self.cursor * self.batch
        self.cursor += 1
        return self.x[s:s + self.batch], self.y[s:s + self.batch]


def profile_layers(model, opt, loss_fn, feed, steps):
    layers = list(model)
    n = len(layers)
    fwd, bwd = [0.0] * n, [0.0] * n
    loss_t = opt_t = total = 0.0
    stamps = {}

    def hook(i):
        def h(module, gin, gout):
            stamps[i] = time.thread_time()
        return h

    handles = [m.register_full_backward_hook(hook(i)) for i, m in enumerate(layers)]
    for _ in range(steps):
        x, y = feed.next()
        t0 = time.thread_time()
        opt.zero_grad(set_to_none=False)
        cur = x
        for i, m in enumerate(layers):
            a = time.thread_time()
            cur = m(cur)
            fwd[i] += time.thread_time() - a
        a = time.thread_time()
        loss = loss_fn(cur, y)
        loss_t += time.thread_time() - a
        stamps.clear()
        b0 = time.thread_time()
        loss.backward()
        b_end = time.thread_time()
        prev = b0
        for i in reversed(range(n)):
            t = stamps.get(i, b_end if i == 0 else prev)
            bwd[i] += t - prev
            prev = t
        a = time.thread_time()
        opt.step()
        opt_t += time.thread_time() - a
        total += time.thread_time() - t0
    for h in handles:
        h.remove()
    k = 1e3 / steps
    print(f"  {'layer':<28} {'fwd ms':>10} {'bwd ms':>10} {'share':>7}")
    for i, m in enumerate(layers):
        name = f"{i} {m.__class__.__name__}"
        print(f"  {name:<28} {fwd[i]*k:10.3f} {bwd[i]*k:10.3f} {100*(fwd[i]+bwd[i])/total:6.1f}%")
    print(f"  {'loss (cross_entropy)':<28} {loss_t*k:10.3f} {'':>10} {100*loss_t/total:6.1f}%")
    print(f"  {'optimizer (SGD momentum)':<28} {opt_t*k:10.3f} {'':>10} {100*opt_t/total:6.1f}%")
    print(f"  {'total':<28} {total*k:10.3f} ms/step (instrumented, CPU time)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="fmnist-cnn")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--profile-steps", type=int, default=30)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = load_fmnist(a.data, 160 * a.batch)
    feed = Feeder(x, y, a.batch)
    model = make_model(a.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        xb, yb = feed.next()
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        loss = step()
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"torch {a.model} batch={a.batch} threads={torch.get_num_threads()} steps={a.steps}: "
          f"{a.steps * a.batch / el:.1f} samples/s ({1e3 * el / a.steps:.3f} ms/step) "
          f"cpu: {a.steps * a.batch / cpu:.1f} samples/s loss={loss.item():.4f} "
          f"peak_rss={rss:.1f} MiB")
    if a.profile_steps > 0:
        profile_layers(model, opt, loss_fn, feed, a.profile_steps)


if __name__ == "__main__":
    main()
