#!/usr/bin/env python3
"""Where a PyTorch DDP step goes, per phase: bench/python/ddp.py's workers with timers.

Runs bench/ddp/torch_ddp_peer.py --phases in named variants, alternating the variants in every
repetition (the machine may be shared), and prints per variant the samples/s (2 workers: by
the slower rank; "pair": the two singles added), the per-step milliseconds of forward,
backward (DDP's all-reduces end it: finalize_backward waits for every bucket) and optimizer,
averaged over the ranks, and each process's context switches per step (voluntary: it
blocked; involuntary: it was preempted). Every variant runs with bench/python/ddp.py's
settings (one compute thread, batch 64, gradient_as_bucket_view, --keep-memory's malloc).

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python/ddp_steps.py \\
        [--variants pair,lockstep,nosync,gloo,bound] [--repeat 3] [--model fmnist-mlp]

Variants (VARIANTS below): pair (two independent single workers: the ceiling), lockstep and
gloo (one 2-worker job, unbound as under torchrun), nosync (lockstep, every step in
model.no_sync(): DDP without all-reduce), bound / gbound / pairbound (worker i bound to core
i), spin0 / spin1000 (LOCKSTEP_SHM_SPIN_US), onebucket / smallfirst / cap1 (DDP's first
bucket and bucket_cap_mb), caller / callerbound (LOCKSTEP_TORCH_FUTURES_ON_CALLER=1),
spare / sparebound (LOCKSTEP_SPARE_CORE=1: as if lockstep's thread had a core of its own),
base / basebound (lockstep_torch from --base DIR, another build:
A/B of a change in one run).
"""
import argparse
import datetime
import json
import os
import statistics
import sys

import ddp  # bench/python/ddp.py: launch()

# name -> (world, copies, backend, extra peer arguments, extra environment, bind rank r to core r)
VARIANTS = {
    "pair": (1, 2, "lockstep", [], {}, False),
    "pairbound": (1, 2, "lockstep", [], {}, True),
    "lockstep": (2, 1, "lockstep", [], {}, False),
    "gloo": (2, 1, "gloo", [], {}, False),
    "nosync": (2, 1, "lockstep", ["--no-sync"], {}, False),
    "bound": (2, 1, "lockstep", [], {}, True),
    "gbound": (2, 1, "gloo", [], {}, True),
    "spin0": (2, 1, "lockstep", [], {"LOCKSTEP_SHM_SPIN_US": "0"}, False),
    "spin1000": (2, 1, "lockstep", [], {"LOCKSTEP_SHM_SPIN_US": "1000"}, False),
    "onebucket": (2, 1, "lockstep", ["--first-bucket-mb", "25"], {}, False),
    "smallfirst": (2, 1, "lockstep", ["--first-bucket-mb", "0.25"], {}, False),
    "cap1": (2, 1, "lockstep", ["--bucket-cap-mb", "1", "--first-bucket-mb", "1"], {}, False),
    # DDP's bucket futures completed on the training thread (python/lockstep_torch/work.cpp;
    # the default where lockstep's thread has no spare core)
    "caller": (2, 1, "lockstep", [], {"LOCKSTEP_TORCH_FUTURES_ON_CALLER": "1"}, False),
    "callerbound": (2, 1, "lockstep", [], {"LOCKSTEP_TORCH_FUTURES_ON_CALLER": "1"}, True),
    # as if lockstep's thread had a core of its own (on a 2-core host: the behaviour before
    # ProcessGroup::spare_core): large operations start on lockstep's thread, DDP's futures
    # complete on the completer thread
    "spare": (2, 1, "lockstep", [], {"LOCKSTEP_SPARE_CORE": "1"}, False),
    "sparebound": (2, 1, "lockstep", [], {"LOCKSTEP_SPARE_CORE": "1"}, True),
    # with --base DIR: lockstep_torch from DIR (another build) instead of PYTHONPATH's
    "base": (2, 1, "lockstep", [], {"BASE": "1"}, False),
    "basebound": (2, 1, "lockstep", [], {"BASE": "1"}, True),
}


def launch(name, a):
    world, copies, backend, extra, env_extra, bind = VARIANTS[name]
    env_extra = dict(env_extra)
    if env_extra.pop("BASE", None):
        if not a.base:
            raise SystemExit(f"ddp_steps.py: variant {name} needs --base DIR")
        env_extra["PYTHONPATH"] = a.base
    rows = ddp.launch(world, copies, backend, a.model, a.steps, a, ["--phases", *extra],
                      env_extra, bind)
    n = a.batch * a.steps
    if world == 1:
        thr = sum(n / r["elapsed_s"] for r in rows)
    else:
        thr = world * n / max(r["elapsed_s"] for r in rows)
    mean = lambda k: statistics.fmean(r[k] for r in rows)  # noqa: E731
    return {"thr": thr, **{k: mean(k) for k in ("fwd_ms", "bwd_ms", "opt_ms", "vcsw", "ivcsw",
                                           "main_cpu_ms", "helper_cpu_ms")},
            "cpu_thr": world * copies * n / max(r["cpu_s"] for r in rows) if world > 1
            else sum(n / r["cpu_s"] for r in rows),
            "step_ms": 1e3 * statistics.fmean(r["elapsed_s"] for r in rows) / a.steps}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="pair,lockstep,nosync,gloo")
    p.add_argument("--model", default="fmnist-mlp")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--base", default="",
                   help="PYTHONPATH with another build's lockstep_torch (variants base, basebound)")
    a = p.parse_args()
    a.keep_memory = True
    names = a.variants.split(",")
    for n in names:
        if n not in VARIANTS:
            raise SystemExit(f"ddp_steps.py: unknown variant {n!r}; known: {', '.join(VARIANTS)}")
    if not os.path.exists(os.path.join(a.data, "train-images-idx3-ubyte.gz")):
        a.data = "synthetic"
    print(f"# command: {' '.join(sys.argv)}")
    print(f"# date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%M:%SZ}; {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}; {a.model}, batch {a.batch}/worker, "
          f"{a.steps} timed steps after {a.warmup}; per step: ms (mean over ranks), context "
          f"switches per process")
    head = (f"{'variant':<11} {'rep':>3} {'smp/s':>9} {'step ms':>8} {'fwd':>6} {'bwd':>6} "
            f"{'opt':>6} {'vcsw':>6} {'ivcsw':>6} {'main cpu':>8} {'helpers':>7} {'cpu smp/s':>9}")
    print(head)
    res = {n: [] for n in names}
    for rep in range(a.repeat):
        for n in (names if rep % 2 == 0 else names[::-1]):
            m = launch(n, a)
            res[n].append(m)
            print(f"{n:<11} {rep:>3} {m['thr']:9.1f} {m['step_ms']:8.3f} {m['fwd_ms']:6.3f} "
                  f"{m['bwd_ms']:6.3f} {m['opt_ms']:6.3f} {m['vcsw']:6.2f} {m['ivcsw']:6.2f} "
                  f"{m['main_cpu_ms']:8.3f} {m['helper_cpu_ms']:7.3f} {m['cpu_thr']:9.1f}",
                  flush=True)
    print(f"\nmedians over {a.repeat} repetitions")
    print(head.replace(" rep", "    "))
    for n in names:
        med = {k: statistics.median(m[k] for m in res[n]) for k in res[n][0]}
        print(f"{n:<11}     {med['thr']:9.1f} {med['step_ms']:8.3f} {med['fwd_ms']:6.3f} "
              f"{med['bwd_ms']:6.3f} {med['opt_ms']:6.3f} {med['vcsw']:6.2f} {med['ivcsw']:6.2f} "
              f"{med['main_cpu_ms']:8.3f} {med['helper_cpu_ms']:7.3f} {med['cpu_thr']:9.1f}")


if __name__ == "__main__":
    main()
