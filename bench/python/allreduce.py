#!/usr/bin/env python3
"""torch.distributed.all_reduce with the lockstep backend against gloo, in one run.

Starts W processes per backend on this machine (tcp:// rendezvous on loopback), times
float32 all_reduce (sum) of ordinary torch tensors from --min-bytes to --max-bytes (x4
steps), checks every result (refilling the tensor before each call; --no-fill times all_reduce
alone), and prints nccl-tests columns for both backends and their
ratio. A tensor all-reduced again is moved by lockstep_torch into shared memory (from 256 KiB;
README), as a training loop's would be; --numpy keeps every tensor in numpy's memory, which
lockstep never moves: the path of ordinary memory, staged through lockstep's slots. Run with the Python that has torch and lockstep_torch on its path:

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python/allreduce.py --world 2
"""
import argparse
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sizes(lo, hi):
    n = lo
    while n <= hi:
        yield n
        n *= 4


def worker(rank, world, backend, port, args, out):
    torch.set_num_threads(1)
    if backend == "lockstep":
        import lockstep_torch  # noqa: F401  registers the backend
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    rows = []
    for nbytes in sizes(args.min_bytes, args.max_bytes):
        count = max(1, nbytes // 4)
        if args.numpy:
            import numpy as np
            x = torch.from_numpy(np.empty(count, np.float32))
        else:
            x = torch.empty(count, dtype=torch.float32)
        iters = max(args.min_iters, min(args.max_iters, int(args.budget_bytes // nbytes)))
        expect = world * (world + 1) / 2
        wrong = 0
        for _ in range(args.warmup):
            x.fill_(rank + 1)
            dist.all_reduce(x)
            wrong += int((x != expect).sum().item())
        if args.no_fill:  # zeros stay zeros under sum: no refill needed between operations
            x.zero_()
            expect = 0
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            if not args.no_fill:
                x.fill_(rank + 1)  # the same in both backends' loops
            dist.all_reduce(x)
        elapsed = (time.perf_counter() - t0) / iters
        wrong += int((x != expect).sum().item())
        t = torch.tensor([elapsed], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        rows.append((count * 4, count, float(t.item()), wrong))
    if rank == 0:
        out.put(rows)
    dist.destroy_process_group()


def run(backend, world, args):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(r, world, backend, port, args, out)) for r in range(world)]
    for p in procs:
        p.start()
    rows = out.get(timeout=args.timeout)
    for p in procs:
        p.join(timeout=args.timeout)
        if p.is_alive():
            p.kill()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--min-bytes", type=int, default=1024)
    ap.add_argument("--max-bytes", type=int, default=256 << 20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-iters", type=int, default=5)
    ap.add_argument("--max-iters", type=int, default=200)
    ap.add_argument("--budget-bytes", type=float, default=2e9, help="bytes reduced per size and backend")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-fill", action="store_true",
                    help="time all_reduce alone: the timed loop reduces zeros instead of refilling the "
                         "tensor before each call (a refill is a whole extra pass over memory, as costly as "
                         "the all-reduce itself once the tensor outgrows the caches); the warm-up still "
                         "checks filled values")
    ap.add_argument("--numpy", action="store_true",
                    help="tensors over numpy memory, which lockstep_torch never moves into shared "
                         "memory (the staged path of ordinary memory)")
    args = ap.parse_args()
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    print(f"# torch {torch.__version__}, {os.cpu_count()} cores, world {args.world}, float32 sum, "
          f"{'tensors over numpy memory' if args.numpy else 'ordinary tensors (reused: lockstep may move them)'}"
          f"{', no refill in the timed loop' if args.no_fill else ', refilled before each call (timed)'}")
    res = {b: run(b, args.world, args) for b in ("lockstep", "gloo")}
    factor = 2 * (args.world - 1) / args.world
    print(f"# {'size(B)':>10} {'count':>10} | {'lockstep us':>11} {'busbw':>7} {'#wrong':>6} | "
          f"{'gloo us':>11} {'busbw':>7} {'#wrong':>6} | {'speed-up':>8}")
    for (b, c, tl, wl), (_, _, tg, wg) in zip(res["lockstep"], res["gloo"]):
        bl, bg = b / tl * factor / 1e9, b / tg * factor / 1e9
        print(f"  {b:>10} {c:>10} | {tl * 1e6:>11.1f} {bl:>7.2f} {wl:>6} | {tg * 1e6:>11.1f} {bg:>7.2f} {wg:>6} | "
              f"{tg / tl:>7.2f}x")


if __name__ == "__main__":
    main()
