"""PyTorch DDP on one GPU, one process: step time with backend lockstep (CUDA tensors on
lockstep's nccl backend, LOCKSTEP_NCCL_SINGLE_RANK_ENGINE=1 so that a world of one still
goes through NCCL) against backend nccl, alternating, same model and batch.

    python3 bench/python/gpu_ddp.py [--steps 200] [--repeat 5] [--model fmnist-cnn]

Prints one line per backend and repetition, then the median step times and their ratio
(lockstep / nccl: below 1 is faster). Needs a CUDA device and lockstep_torch on PYTHONPATH.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.nn as nn



def model(name):
    if name == "fmnist-mlp":  # ../shared/BENCHMARKS.md's architectures
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256),
                             nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def run(backend, args, dev):
    store = dist.FileStore(tempfile.mktemp(prefix="gpu_ddp_"), 1)
    dist.init_process_group(backend, store=store, rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    net = model(args.model).to(dev)
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index],
                                              gradient_as_bucket_view=True)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    x = torch.randn(args.batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    step = (time.perf_counter() - t0) / args.steps
    checksum = float(sum(p.double().sum() for p in net.parameters()))
    dist.destroy_process_group()
    return step, checksum


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fmnist-cnn", choices=["fmnist-cnn", "fmnist-mlp"])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", choices=["nccl", "lockstep"],
                   help="time one backend (nccl needs no lockstep_torch)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_ddp.py: no CUDA device; this benchmark needs a GPU")
    os.environ.setdefault("LOCKSTEP_NCCL_SINGLE_RANK_ENGINE", "1")
    torch.backends.cudnn.deterministic = True  # the two runs comparable bit for bit
    dev = torch.device("cuda", 0)
    backends = [args.only] if args.only else ["nccl", "lockstep"]
    if "lockstep" in backends:
        import lockstep_torch  # noqa: F401  (registers backend "lockstep")
    times = {b: [] for b in backends}
    sums = {}
    for r in range(args.repeat):
        for backend in backends:
            step, checksum = run(backend, args, dev)
            times[backend].append(step)
            sums.setdefault(backend, checksum)
            print(f"{backend:9s} rep {r}: {step * 1e3:.3f} ms/step (parameters sum {checksum:.6f})",
                  flush=True)
    med = {b: statistics.median(t) for b, t in times.items()}
    line = (f"gpu_ddp {args.model} batch {args.batch}, {torch.cuda.get_device_name(0)}, torch "
            f"{torch.__version__}: " +
            ", ".join(f"{b} {med[b] * 1e3:.3f} ms/step ({args.batch / med[b]:.0f} samples/s)"
                      for b in backends))
    if len(backends) == 2:
        line += (f", lockstep/nccl {med['lockstep'] / med['nccl']:.3f}; same parameters after "
                 f"training: {sums['nccl'] == sums['lockstep']}")
    print(line)


if __name__ == "__main__":
    main()
