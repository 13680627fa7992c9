#!/usr/bin/env python3
"""PyTorch DDP on the lockstep backend against gloo, with this machine's weak-scaling ceiling.

For each model and repetition, in alternating order (the machine may be shared: alternation
spreads the load over both backends), it runs bench/ddp/torch_ddp_peer.py:
  - "pair": two independent single workers (world 1 each, own store) at the same time, with
    the backend under test: what two workers get from this machine with no communication;
  - "ddp":  two workers of one DDP job (world 2) with the same backend.
Every worker times only its --steps steps after --warmup steps (and a barrier), one compute
thread each, gradient_as_bucket_view=True, unbound as under torchrun. Then per backend

    samples/s  = 2 x batch x steps / the slower rank's timed seconds          (ddp)
    ceiling    = the two single workers' samples/s added                      (pair)
    efficiency = samples/s / ceiling      (weak scaling against the machine's ceiling)

and lockstep / gloo for samples/s. The same with each worker's process CPU seconds in place
of wall seconds ("cpu" columns): on a machine shared with other jobs the wall figures follow
the scheduler (a job with more runnable threads gets more of the cores), the CPU figures
what each worker did with the CPU it got (waiting for a peer costs CPU only when spinning).
Medians over --repeat; every repetition is printed too.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python/ddp.py [--repeat 3] [--keep-memory]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = os.path.join(ROOT, "bench/ddp/torch_ddp_peer.py")
BACKENDS = ("lockstep", "gloo")
# --keep-memory: glibc malloc keeps what it got (as bench/torch/run.py's python-tm side). Stock
# PyTorch hands its activations back to the kernel every step; on this VM the page faults that
# follow make single workers' rates swing 2-3x between runs (pair ceilings of 1157 and 3032
# samples/s for fmnist-cnn five minutes apart), which swamps the efficiency being measured.
# Every side, both backends, runs with the same setting.
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
               "MALLOC_TOP_PAD_": "268435456"}


def launch(world, copies, backend, model, steps, a, extra=(), env_extra=None, bind=False):
    """`copies` jobs of `world` workers each, all at once; the JSON row of every worker.
    extra: more torch_ddp_peer.py arguments; bind: worker i (over all jobs) on core i."""
    cmds = []
    for c in range(copies):
        store = os.path.join(tempfile.mkdtemp(prefix="ddpbench-"), "store")
        for r in range(world):
            cpu = (c * world + r) % os.cpu_count() if bind else -1
            cmds.append([sys.executable, PEER, "--backend", backend, "--model", model,
                         "--rank", str(r), "--world", str(world), "--store", store,
                         "--batch", str(a.batch), "--steps", str(steps),
                         "--warmup", str(a.warmup), "--data", a.data, "--bucket-view", "1",
                         "--cpu", str(cpu), *extra])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               **(KEEP_MEMORY if a.keep_memory else {}), **(env_extra or {}))
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for c in cmds]
    rows = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=a.timeout)
            if p.returncode != 0:
                raise SystemExit(f"ddp.py: worker failed ({p.returncode}): "
                                 f"{' '.join(p.args)}\n{err[-2000:]}")
            rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finally:
        for p in procs:  # our own workers only, by pid
            if p.poll() is None:
                p.kill()
                p.wait()
    return rows


def measure(backend, model, steps, a):
    """One repetition for `backend`: (ddp samples/s, ceiling samples/s), by wall seconds and
    by CPU seconds."""
    pair = launch(1, 2, backend, model, steps, a)
    ddp = launch(2, 1, backend, model, steps, a)
    n = a.batch * steps
    wall = (2 * n / max(r["elapsed_s"] for r in ddp), sum(n / r["elapsed_s"] for r in pair))
    cpu = (2 * n / max(r["cpu_s"] for r in ddp), sum(n / r["cpu_s"] for r in pair))
    return wall, cpu


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fmnist-mlp,fmnist-cnn")
    p.add_argument("--steps", default="fmnist-mlp=400,fmnist-cnn=60",
                   help="timed steps per model (model=N,...)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--keep-memory", action="store_true",
                   help="glibc malloc keeps freed memory (every side alike): steadier rates")
    a = p.parse_args()
    if not os.path.exists(os.path.join(a.data, "train-images-idx3-ubyte.gz")):
        a.data = "synthetic"
    steps = dict((k, int(v)) for k, v in (kv.split("=") for kv in a.steps.split(",")))
    print(f"# command: {' '.join(sys.argv)}")
    print(f"# date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%M:%SZ}; {os.cpu_count()} cores, "
          f"load {open('/proc/loadavg').read().split()[:3]}; batch {a.batch}/worker, "
          f"{a.warmup} warm-up steps untimed, 1 compute thread/worker, data: {a.data}"
          + ("; malloc keeps memory" if a.keep_memory else ""))
    print(f"{'model':<11} {'rep':>3} {'backend':<9} {'DDP smp/s':>10} {'ceiling':>10} {'eff':>6} "
          f"{'cpu smp/s':>10} {'cpu ceil':>10} {'cpu eff':>8}")
    summary = []
    for model in a.models.split(","):
        res = {b: [] for b in BACKENDS}
        for rep in range(a.repeat):
            order = BACKENDS if rep % 2 == 0 else BACKENDS[::-1]
            for b in order:
                (thr, ceil), (cthr, cceil) = m = measure(b, model, steps[model], a)
                res[b].append(m)
                print(f"{model:<11} {rep:>3} {b:<9} {thr:10.1f} {ceil:10.1f} {thr / ceil:6.2f} "
                      f"{cthr:10.1f} {cceil:10.1f} {cthr / cceil:8.2f}", flush=True)
        summary.append((model, res))
    print(f"\nmedians over {a.repeat} repetitions")
    print(f"{'model':<11} {'backend':<9} {'DDP smp/s':>10} {'eff':>6} {'lockstep/gloo':>14} "
          f"{'cpu smp/s':>10} {'cpu eff':>8} {'lockstep/gloo':>14}")
    for model, res in summary:
        def med(b, k, f):
            return statistics.median(f(m[k]) for m in res[b])
        for b in BACKENDS:
            cols = []
            for k in (0, 1):
                thr = med(b, k, lambda x: x[0])
                eff = med(b, k, lambda x: x[0] / x[1])
                ratio = thr / med("gloo", k, lambda x: x[0])
                cols.append(f"{thr:10.1f} {eff:6.2f} " + (f"{ratio:13.2f}x" if b == "lockstep"
                                                          else " " * 14))
            print(f"{model:<11} {b:<9} {cols[0]} {cols[1]}")

if __name__ == "__main__":
    main()
