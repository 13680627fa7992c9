"""A torchrun-style script for `lockstep run`: env:// init on MASTER_ADDR/MASTER_PORT, the
variables torchrun sets, and (first attempt only) rank 1 killed by SIGKILL after one
all-reduce, so that the launcher restarts both workers."""

import datetime
import os
import signal

import torch
import torch.distributed as dist

import lockstep_torch  # noqa: F401

env = {k: os.environ.get(k) for k in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                                      "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RESTART_COUNT",
                                      "TORCHELASTIC_MAX_RESTARTS", "MASTER_ADDR", "MASTER_PORT"]}
missing = [k for k, v in env.items() if v is None]
assert not missing, f"not set: {missing}"
assert env["ROLE_RANK"] == env["RANK"] and env["GROUP_RANK"] == "0", env
dist.init_process_group("lockstep", timeout=datetime.timedelta(seconds=30))
rank, restart = dist.get_rank(), int(env["TORCHELASTIC_RESTART_COUNT"])
t = torch.full((1000,), float(rank + 1))
dist.all_reduce(t)
assert t[0].item() == 3.0, t[0]
if rank == 1 and restart == 0:
    os.kill(os.getpid(), signal.SIGKILL)
dist.all_reduce(t)
print(f"rank {rank} restart {restart} of {env['TORCHELASTIC_MAX_RESTARTS']}: ok, "
      f"sum {t[0].item()}", flush=True)
dist.destroy_process_group()
