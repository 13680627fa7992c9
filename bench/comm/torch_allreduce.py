#!/usr/bin/python3
"""torch.distributed (gloo) all_reduce of float32, timed like bench_collectives: per size,
warm-up (>= 20 ms), then the best of `reps` batches of >= 10 ms (slowest rank per batch). Prints "size time_us".

    /usr/bin/python3 torch_allreduce.py --nproc 2 --min-bytes 8 --max-bytes 268435456 --factor 4
"""
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run(rank, world, port, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    reps, warmup = 5, 3
    buf = torch.zeros(args.max_bytes // 4 + 16, dtype=torch.float32)  # allocated and touched once
    b = args.min_bytes
    while b <= args.max_bytes:
        count = b // 4
        t = buf[:count]
        iters = max(2, min((1 << 30) // max(b, 1) // 8 // reps, 20 * 50))
        t.copy_(torch.arange(count, dtype=torch.float32).add_(rank).remainder_(4))
        # warm-up: >= warmup iterations and >= 20 ms in doubling batches (slowest rank decides);
        # then every batch lasts >= 10 ms — the same rule as bench_collectives
        warm, warm_us = 0, 0.0
        while warm < warmup or warm_us < 20e3:
            n = max(warm, warmup)
            t0 = time.perf_counter()
            for _ in range(n):
                dist.all_reduce(t)
            el = torch.tensor([(time.perf_counter() - t0) * 1e6], dtype=torch.float64)
            dist.all_reduce(el, op=dist.ReduceOp.MAX)
            warm_us += el.item()
            warm += n
        iters = max(iters, min(int(10e3 / (warm_us / warm)) + 1, 1000000))
        best = float("inf")
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(t)
            us = torch.tensor([(time.perf_counter() - t0) / iters * 1e6], dtype=torch.float64)
            dist.all_reduce(us, op=dist.ReduceOp.MAX)
            best = min(best, us.item())
        if rank == 0:
            print(f"{b} {best:.3f}", flush=True)
        b *= args.factor
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--min-bytes", type=int, default=8)
    p.add_argument("--max-bytes", type=int, default=256 << 20)
    p.add_argument("--factor", type=int, default=2)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(args.nproc, port, args), nprocs=args.nproc, join=True)


if __name__ == "__main__":
    main()
