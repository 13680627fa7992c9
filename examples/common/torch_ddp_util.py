"""Helpers the PyTorch DDP scripts share: examples/torch_ddp/train.py, bench/torch/ddp_gloo.py and
bench/ddp/torch_ddp_peer.py (each puts this folder on sys.path). Reading IDX files (Fashion-MNIST
as Debian's dataset-fashion-mnist ships it) and the timed loop of the benchmark twins."""
import gzip
import time

import numpy as np
import torch
import torch.distributed as dist


def load_idx(path):
    """A gzipped IDX file (images or labels) as a uint8 tensor of its shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.from_numpy(np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy())


def timed_steps(step, warmup, steps, on_start=None, on_end=None):
    """step() `warmup` times untimed, then `steps` times between two barriers of the default
    process group: (the last step's result, wall seconds, this process's CPU seconds).
    on_start() runs just before the timed steps, on_end() just after (counters to difference)."""
    for _ in range(warmup):
        step()
    dist.barrier()
    if on_start:
        on_start()
    t0, c0 = time.perf_counter(), time.process_time()
    out = None
    for _ in range(steps):
        out = step()
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    if on_end:
        on_end()
    dist.barrier()
    return out, el, cpu
