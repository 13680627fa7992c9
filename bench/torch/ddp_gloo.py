#!/usr/bin/python3
"""PyTorch's Python DistributedDataParallel on gloo: the twin of torch_bench (same models from
models.py, batch, data shard, optimizer, warm-up, one compute thread per worker). A torchrun
script; run under `lockstep run` (Debian's torchrun of PyTorch 1.13 fails under Python 3.11)
or `python3 -m torch.distributed.run`. Each rank prints one JSON line, as torch_bench does.

    lockstep run --nproc-per-node 2 -- /usr/bin/python3 bench/torch/ddp_gloo.py --model gpt
"""
import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "common"))
import models  # noqa: E402
from torch_ddp_util import load_idx, timed_steps  # noqa: E402


def load_shard(a, rank, world):
    if a.model == "gpt":
        x, y, _, _ = models.load_text_windows(a.data or "/usr/share/common-licenses/GPL-3")
        per = x.shape[0] // world
        return x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
    d = a.data or "/usr/share/datasets/fashion-mnist"
    x = load_idx(f"{d}/train-images-idx3-ubyte.gz")
    y = load_idx(f"{d}/train-labels-idx1-ubyte.gz")
    n = x.shape[0] // world
    per = min(n, 160 * a.batch)
    s = slice(rank * n, rank * n + per)
    return (x[s].float().div_(255).sub_(0.286).div_(0.353).unsqueeze(1).contiguous(), y[s].long())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist-cnn", choices=["fmnist-cnn", "gpt"])
    p.add_argument("--batch", type=int, default=0, help="per worker (default 64, gpt 16)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data", default="")
    a = p.parse_args()
    a.batch = a.batch or (16 if a.model == "gpt" else 64)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = load_shard(a, rank, world)
    torch.manual_seed(1)
    if a.model == "gpt":
        net = models.CharGpt()
        loss_of = lambda xb, yb: models.gpt_loss(model(xb), yb)  # noqa: E731
        make_opt = lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.0)  # noqa: E731
    else:
        net = models.FmnistCnn()
        loss_of = lambda xb, yb: F.cross_entropy(model(xb), yb)  # noqa: E731
        make_opt = lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9)  # noqa: E731
    model = DDP(net)
    opt = make_opt(model.parameters())
    batches = x.shape[0] // a.batch
    cursor = [0]

    def step():
        s = (cursor[0] % batches) * a.batch
        cursor[0] += 1
        opt.zero_grad(set_to_none=False)  # as torch_bench (2.x's default is True)
        loss = loss_of(x[s:s + a.batch], y[s:s + a.batch])
        loss.backward()
        opt.step()
        return loss

    loss, el, cpu = timed_steps(step, a.warmup, a.steps)
    print(json.dumps({"impl": "python-ddp-gloo", "model": a.model, "world": world, "rank": rank,
                      "batch": a.batch, "steps": a.steps, "elapsed_s": el, "cpu_s": cpu,
                      "samples_per_s": a.steps * a.batch / el, "loss": float(loss.item()),
                      "params": sum(p.numel() for p in net.parameters())}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
