"""PyTorch DDP on lockstep against DDP on gloo, in one process per rank: both wrap the same
model (same seed), see the same batches and step the same optimizer.

With 2 ranks every all-reduce adds two numbers, the same in any order, so the parameters
must stay bitwise equal for all steps. With more ranks the summation order of lockstep and
gloo differs: each result is within (W-1)*u*sum|x_r| of the exact sum (u = eps/2, the
classical bound for W-1 floating-point additions), so the two DDPs' first gradients may
differ by at most (W-1)*eps*sum_r|x_r| per element, x_r being rank r's gradient / W."""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

RANK = int(os.environ["RANK"])
WORLD = int(os.environ["WORLD_SIZE"])


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, 4))


def batch(step):
    g = torch.Generator().manual_seed(1000 * step + RANK)
    return torch.randn(16, 20, generator=g), torch.randn(16, 4, generator=g)


def train(group, steps, zero=False):
    # Small buckets: several all-reduces in flight per step, each completed through its future.
    model = DDP(make_model(), process_group=group, bucket_cap_mb=0.01,
                gradient_as_bucket_view=True)
    if zero:  # each rank steps its shard of the parameters, then broadcasts it
        opt = ZeroRedundancyOptimizer(model.parameters(), torch.optim.SGD, process_group=group,
                                      lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first_grads = None
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        if first_grads is None:
            first_grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
    return [p.detach().clone() for p in model.parameters()], first_grads


def local_grad_bound(gloo):
    """(W-1)*eps*sum_r |g_r / W| per element, from every rank's local (unreduced) gradient."""
    model = make_model()
    x, y = batch(0)
    ((model(x) - y) ** 2).mean().backward()
    bounds = []
    for p in model.parameters():
        s = (p.grad / WORLD).abs()
        dist.all_reduce(s, group=gloo)
        bounds.append((WORLD - 1) * torch.finfo(torch.float32).eps * s)
    return bounds


def main(init, steps):
    init()
    gloo = dist.new_group(backend="gloo")
    mine, mine_g = train(None, steps)
    ref, ref_g = train(gloo, steps)
    if WORLD <= 2:
        for i, (a, b) in enumerate(zip(mine, ref)):
            assert torch.equal(a, b), (f"rank {RANK}: parameter {i} after {steps} steps differs: "
                                       f"max |diff| {(a - b).abs().max()}")
        print(f"rank {RANK}: {len(mine)} parameters bitwise equal to gloo's after {steps} steps")
        mine, _ = train(None, steps, zero=True)
        ref, _ = train(gloo, steps, zero=True)
        for i, (a, b) in enumerate(zip(mine, ref)):
            assert torch.equal(a, b), f"rank {RANK}: ZeRO parameter {i} differs after {steps} steps"
        print(f"rank {RANK}: with ZeroRedundancyOptimizer too")
    else:
        for i, (a, b, bound) in enumerate(zip(mine_g, ref_g, local_grad_bound(gloo))):
            excess = ((a - b).abs() - bound).max()
            assert excess <= 0, f"rank {RANK}: gradient {i} differs beyond the bound by {excess}"
        print(f"rank {RANK}: first gradients within the reordering bound of gloo's")
    dist.destroy_process_group()
