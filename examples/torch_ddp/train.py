"""PyTorch DDP on Fashion-MNIST, on lockstep's collectives or gloo's.

    lockstep run --nproc-per-node 2 examples/torch_ddp/train.py --backend lockstep
    python3 -m torch.distributed.run --nproc_per_node 2 examples/torch_ddp/train.py --backend gloo

A plain torchrun script: it reads the environment torchrun sets (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, ...) through init_process_group("env://"). Rank 0 prints one line:
`samples/s=N test_acc=X`. Data: Debian's dataset-fashion-mnist (--data to change).
"""

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ddp_util import load_idx  # noqa: E402


def load(data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")).float().div_(255)
    y = load_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).long()
    return x.sub_(0.2860).div_(0.3530).unsqueeze(1), y


def model(name):
    if name == "mlp":  # fmnist-mlp
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                             nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(  # fmnist-cnn
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="lockstep", choices=["lockstep", "gloo"])
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64, help="per worker")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()
    if args.backend == "lockstep":
        import lockstep_torch  # noqa: F401  (registers the backend)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    net = DDP(model(args.model), gradient_as_bucket_view=True)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    x, y = load(args.data, "train")
    steps = int(args.epochs * len(x) / (args.batch_size * world))
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(len(x), generator=g)[rank::world]  # this worker's shard
    t0 = time.perf_counter()
    for step in range(steps):
        i = order[(step * args.batch_size) % len(order):][:args.batch_size]
        opt.zero_grad()
        F.cross_entropy(net(x[i]), y[i]).backward()
        opt.step()
    elapsed = time.perf_counter() - t0
    tx, ty = load(args.data, "test")
    with torch.no_grad():
        correct = torch.tensor([(net.module(tx).argmax(1) == ty).sum().item()], dtype=torch.float64)
    dist.all_reduce(correct)  # every rank's replica is identical: the same count, averaged
    if rank == 0:
        samples = steps * args.batch_size * world
        print(f"backend={args.backend} model={args.model} world={world} steps={steps} "
              f"samples/s={samples / elapsed:.0f} test_acc={correct.item() / world / len(ty):.4f}",
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
