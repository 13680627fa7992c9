#!/usr/bin/python3
"""PyTorch DistributedDataParallel twin of ddp_bench: the same model, batch, data, optimizer,
warm-up and one compute thread per worker. Prints one JSON line per rank. --backend lockstep
runs PyTorch's DDP on lockstep_torch's collectives (bench/python/ddp.py compares it with gloo).

    /usr/bin/python3 bench/ddp/torch_ddp_peer.py --model fmnist-cnn --rank 0 --world 2 --store /tmp/f
"""
import argparse
import gzip
import json
import os
import resource
import struct
import sys
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "common"))
from torch_ddp_util import timed_steps  # noqa: E402


def load_shard(data_dir, rank, world, want):
    if data_dir == "synthetic":
        i = np.arange(want * 784, dtype=np.uint64)
        x = ((i * 2654435761) % 255).astype(np.float32).reshape(want, 1, 28, 28) / 255.0
        return torch.from_numpy(x), torch.from_numpy(np.arange(want) % 10)
    with gzip.open(f"{data_dir}/train-images-idx3-ubyte.gz", "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803 and rows == 28 and cols == 28, "not an IDX3 file of 28x28 images"
        images = np.frombuffer(f.read(n * 784), dtype=np.uint8).reshape(n, 1, 28, 28)
    with gzip.open(f"{data_dir}/train-labels-idx1-ubyte.gz", "rb") as f:
        f.read(8)
        labels = np.frombuffer(f.read(n), dtype=np.uint8)
    per = n // world
    idx = rank * per + np.arange(want) % per
    return (torch.from_numpy(images[idx].astype(np.float32) / 255.0),
            torch.from_numpy(labels[idx].astype(np.int64)))


def thread_cpu_s():
    """CPU seconds of each thread of this process, by thread id (Linux /proc; {} elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    except OSError:
        pass
    return out


def make_model(name):
    if name == "fmnist-mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if name == "fmnist-cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    raise SystemExit(f"unknown model {name!r}; known: fmnist-mlp, fmnist-cnn")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="fmnist-cnn")
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--store", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--backend", default="gloo", choices=["gloo", "lockstep"])
    p.add_argument("--bucket-view", type=int, default=0, help="DDP gradient_as_bucket_view")
    p.add_argument("--phases", action="store_true",
                   help="also the CPU time of the main thread and of the others (the "
                   "backend's) per step (bench/python/ddp_steps.py)")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP bucket_cap_mb")
    p.add_argument("--first-bucket-mb", type=float, default=None,
                   help="DDP's first bucket (dist._DEFAULT_FIRST_BUCKET_BYTES; default 1 MiB)")
    p.add_argument("--no-sync", action="store_true",
                   help="every timed step inside model.no_sync(): DDP without communication")
    p.add_argument("--cpu", type=int, default=-1, help="bind this worker to one core (-1: unbound)")
    a = p.parse_args()
    if a.cpu >= 0:
        os.sched_setaffinity(0, {a.cpu})
    torch.set_num_threads(1)
    torch.manual_seed(1)
    if a.backend == "lockstep":
        import lockstep_torch  # noqa: F401  (registers the backend)
    dist.init_process_group(a.backend, init_method=f"file://{a.store}", rank=a.rank, world_size=a.world)
    x, y = load_shard(a.data, a.rank, a.world, 160 * a.batch)
    if a.first_bucket_mb is not None:
        dist._DEFAULT_FIRST_BUCKET_BYTES = int(a.first_bucket_mb * 1024 * 1024)
    model = DDP(make_model(a.model), gradient_as_bucket_view=bool(a.bucket_view),
                bucket_cap_mb=a.bucket_cap_mb)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    cursor = [0]
    phases = [0.0, 0.0, 0.0]  # forward (with zero_grad), backward, optimizer: seconds
    clock = time.perf_counter

    def step():
        t0 = clock()
        if (cursor[0] + 1) * a.batch > x.shape[0]:
            cursor[0] = 0
        s = cursor[0] * a.batch
        cursor[0] += 1
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x[s:s + a.batch]), y[s:s + a.batch])
        t1 = clock()
        loss.backward()
        t2 = clock()
        opt.step()
        t3 = clock()
        phases[0] += t1 - t0
        phases[1] += t2 - t1
        phases[2] += t3 - t2
        return loss

    no_sync = model.no_sync()  # kept: dropping it would run its exit (sync again)
    if a.no_sync:
        no_sync.__enter__()  # DDP's hooks still run; no bucket is reduced

    snap = {}

    def on_start():
        phases[:] = [0.0, 0.0, 0.0]
        snap["ru0"] = resource.getrusage(resource.RUSAGE_SELF)
        snap["th0"] = thread_cpu_s() if a.phases else {}

    def on_end():
        snap["ru1"] = resource.getrusage(resource.RUSAGE_SELF)
        snap["th1"] = thread_cpu_s() if a.phases else {}

    loss, el, cpu = timed_steps(step, a.warmup, a.steps, on_start, on_end)
    ru0, ru1, th0, th1 = snap["ru0"], snap["ru1"], snap["th0"], snap["th1"]
    main_tid = threading.get_native_id()
    helpers = sum(v - th0.get(t, 0.0) for t, v in th1.items() if t != main_tid)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "torch", "backend": a.backend, "model": a.model, "world": a.world, "rank": a.rank, "batch": a.batch,
                      "steps": a.steps, "elapsed_s": el, "cpu_s": cpu, "samples_per_s": a.steps * a.batch / el,
                      "loss": float(loss.item()), "peak_rss_mib": rss,
                      # per timed step: context switches of the whole process (all threads)
                      "vcsw": (ru1.ru_nvcsw - ru0.ru_nvcsw) / a.steps,
                      "ivcsw": (ru1.ru_nivcsw - ru0.ru_nivcsw) / a.steps,
                      "fwd_ms": 1e3 * phases[0] / a.steps, "bwd_ms": 1e3 * phases[1] / a.steps,
                      "opt_ms": 1e3 * phases[2] / a.steps,
                      # storages lockstep_torch moved into shared memory (DDP's buckets)
                      "moved_to_shared": shared_moved(a.backend),
                      **({  # CPU ms per step of the main thread and of all the others (backend)
                          "main_cpu_ms": 1e3 * (th1.get(main_tid, 0) - th0.get(main_tid, 0)) / a.steps,
                          "helper_cpu_ms": 1e3 * helpers / a.steps} if a.phases else {})}), flush=True)
    dist.destroy_process_group()


def shared_moved(backend):
    if backend != "lockstep":
        return 0
    import lockstep_torch
    return lockstep_torch.stats().get("moved_to_shared", 0)


if __name__ == "__main__":
    main()
