#!/usr/bin/python3
"""Where lockstep::torch DDP spends a step against the hand-written baseline: torch_bench
configurations at 2 workers, alternating (the order reverses every repetition), repeated,
with each step's parts per rank (issue 19's finding of docs/benchmarks.md):

    /usr/bin/python3 bench/torch/ab.py --model gpt --steps 15 --reps 5 \\
        ddp='--mode ddp' base='--mode baseline' noov='--mode ddp --overlap 0'

A configuration is NAME='torch_bench flags' (--overlap 0|1, --shared-grads 0|1 and
--first-bucket-kb N change DdpOptions; env:VAR=VALUE sets a variable, e.g.
env:LOCKSTEP_SHM_SPIN_US=0; build:DIR runs another build tree's torch_bench and launcher, e.g.
a worktree of the commit before a change: before='--mode ddp build:/work/wt/build/release').
Columns, medians over repetitions: samples/s (wall, slowest rank), samples per cpu-second
(summed over ranks), ms per step of forward and of backward (ddp: with its final wait), ms the
rank that waited least spent blocked on communication per step (ddp: finalize; baseline: its
all-reduces), voluntary / involuntary context switches per step and rank, CPU ms per step of
the compute thread and of all other threads (the group's), and the wall and cpu-rate ratios to
the first configuration, per repetition then median.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(a, flags):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    rest = []
    build = a.build
    for f in flags.split():
        if f.startswith("env:"):
            k, v = f[4:].split("=", 1)
            env[k] = v
        elif f.startswith("build:"):
            build = f[6:]
        else:
            rest.append(f)
    cmd = [os.path.join(build, "apps", "lockstep"), "run", "--nproc-per-node", "2", "--",
           os.path.join(build, "bench", "torch", "torch_bench"), "--model", a.model,
           "--warmup", str(a.warmup), "--steps", str(a.steps)] + rest
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    rows = [json.loads(l[l.index("{"):]) for l in (p.stdout + p.stderr).splitlines() if "{\"impl\"" in l]
    if p.returncode != 0 or len(rows) != 2:
        sys.exit(f"ab.py: {' '.join(cmd)} failed ({p.returncode}):\n{(p.stdout + p.stderr)[-3000:]}")
    n = a.steps

    def per_step(key):
        return 1e3 * statistics.mean(r[key] for r in rows) / n
    return {"wall": 2 * rows[0]["batch"] * n / max(r["elapsed_s"] for r in rows),
            "cpu": sum(r["batch"] * n / r["cpu_s"] for r in rows),
            "fwd_ms": per_step("fwd_s"), "bwd_ms": per_step("bwd_s"),
            "wait_ms": 1e3 * min(r["ddp_wait_s"] + r["comm_s"] for r in rows) / n,
            "vcsw": statistics.mean(r["vcsw"] for r in rows) / n,
            "ivcsw": statistics.mean(r["ivcsw"] for r in rows) / n,
            "main_cpu_ms": per_step("main_cpu_s"),
            "other_cpu_ms": 1e3 * statistics.mean(r["cpu_s"] - r["main_cpu_s"] for r in rows) / n}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+", help="NAME='torch_bench flags'")
    p.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--model", default="gpt")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--timeout", type=int, default=900)
    a = p.parse_args()
    cfgs = [c.split("=", 1) for c in a.configs]
    print(f"# /usr/bin/python3 bench/torch/ab.py {' '.join(sys.argv[1:])}\n# load "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])} (1/5/15 min)", flush=True)
    res = {name: [] for name, _ in cfgs}
    for r in range(a.reps):
        for name, flags in (cfgs if r % 2 == 0 else cfgs[::-1]):
            m = run(a, flags)
            res[name].append(m)
            print(f"rep {r + 1} {name:10s} " + " ".join(f"{k}={v:.2f}" for k, v in m.items()), flush=True)
    print(f"# load {' '.join(open('/proc/loadavg').read().split()[:3])} (1/5/15 min)")
    first = res[cfgs[0][0]]
    for name, _ in cfgs:
        ms = res[name]
        med = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
        wall = [m["wall"] / f["wall"] for m, f in zip(ms, first)]
        cpu = [m["cpu"] / f["cpu"] for m, f in zip(ms, first)]
        print(f"{name:10s} " + " ".join(f"{k}={v:.2f}" for k, v in med.items()) +
              f" | /{cfgs[0][0]}: wall {', '.join(f'{v:.3f}' for v in wall)} (median "
              f"{statistics.median(wall):.3f}), cpu rate median {statistics.median(cpu):.3f}")


if __name__ == "__main__":
    main()
