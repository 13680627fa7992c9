#!/usr/bin/python3
"""LibTorch on lockstep, one command: samples/s of fmnist-cnn and the gpt (examples/common/
torch_models.h) at 1 and 2 workers, for every side in the same run, alternating, repeated:

  plain      LibTorch alone, no process group (torch_bench --mode plain), world size 1
  lockstep   lockstep::torch::DistributedDataParallel (--mode ddp)
  baseline   dist-mnist.cpp's hand-written approach: after backward, one blocking all-reduce
             per gradient through lockstep's ProcessGroup, no buckets, no overlap (--mode baseline)
  python     PyTorch's Python DistributedDataParallel on gloo (ddp_gloo.py), as installed
  python-tm  the same with glibc malloc told to keep its memory (MALLOC_MMAP_THRESHOLD_,
             MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, as bench/nn/run.sh's torch-tm): stock
             Python PyTorch hands its activations back to the kernel every step and the page
             faults that follow cost it ~3x on this VM (a PVM guest; perf: exc_page_fault),
             which the LibTorch programs do not suffer; python-tm is the compute-only peer
  pair       two independent plain workers at once (no communication): this machine's
             ceiling for two workers (weak scaling)

Every side runs under `lockstep run` (so every one is CPU-bound alike: --cpu-bind auto), one
compute thread per worker, the same batch per worker, data preloaded; warm-up steps are not
timed. samples/s = world * batch * steps / the slowest rank's wall time over the timed steps
(pair: the sum of the two workers' own rates). Ratios are taken within each repetition (the
sides of one repetition ran minutes apart at most) and the median over repetitions is shown.

    /usr/bin/python3 bench/torch/run.py [--build build/release] [--reps 3]

Targets (issue 19): 2 workers lockstep >= 1.3x python and >= 1.2x baseline; lockstep at 2
workers >= 0.9 of pair; lockstep at world size 1 costs <= 3 % over plain.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIDES = [("plain", 1), ("lockstep", 1), ("baseline", 1), ("python", 1), ("python-tm", 1),
         ("lockstep", 2), ("baseline", 2), ("python", 2), ("python-tm", 2), ("pair", 2)]
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
               "MALLOC_TOP_PAD_": "268435456"}


def command(a, side, world, model, steps):
    flags = ["--model", model, "--warmup", str(a.warmup), "--steps", str(steps)]
    if a.batch:
        flags += ["--batch", str(a.batch)]
    launcher = [os.path.join(a.build, "apps", "lockstep"), "run", "--nproc-per-node", str(world), "--"]
    if side.startswith("python"):
        # A .py program: lockstep run starts it with $LOCKSTEP_PYTHON and gives its c10d store
        # a MASTER_PORT of its own (as torchrun would).
        return launcher + [os.path.join(ROOT, "bench", "torch", "ddp_gloo.py")] + flags
    mode = {"plain": "plain", "pair": "plain", "lockstep": "ddp", "baseline": "baseline"}[side]
    return launcher + [os.path.join(a.build, "bench", "torch", "torch_bench"), "--mode", mode] + flags


def measure(a, side, world, model, steps):
    cmd = command(a, side, world, model, steps)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               LOCKSTEP_PYTHON=a.python, **(KEEP_MEMORY if side == "python-tm" else {}))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
    rows = [json.loads(l[l.index("{"):]) for l in (p.stdout + p.stderr).splitlines() if "{\"impl\"" in l]
    if p.returncode != 0 or len(rows) != world:
        sys.exit(f"run.py: {' '.join(cmd)} failed ({p.returncode}, {len(rows)} of {world} results):\n"
                 f"{(p.stdout + p.stderr)[-3000:]}")
    if side == "pair":
        wall = sum(r["samples_per_s"] for r in rows)
    else:
        wall = world * rows[0]["batch"] * steps / max(r["elapsed_s"] for r in rows)
    cpu = sum(r["batch"] * steps / r["cpu_s"] for r in rows)
    # baseline: the share of its step spent in all-reduces, by the rank that waited least
    # (the other also waits for its peer). Overlap can at best hide that share, so
    # lockstep / baseline <= 1 / (1 - comm) for any DDP on the same compute.
    comm = min(r.get("comm_s", 0.0) for r in rows) / max(r["elapsed_s"] for r in rows)
    return {"wall": wall, "cpu": cpu, "comm": comm, "params": rows[0]["params"], "batch": rows[0]["batch"]}


def ratio_rows(res, reps, key="wall"):
    """(name, target, per-repetition values) for each ratio the issue sets a target on."""
    def per(f):
        return [f(r) for r in range(reps)]
    return [
        ("2 workers: lockstep / python DDP gloo", ">= 1.30",
         per(lambda r: res[("lockstep", 2)][r][key] / res[("python", 2)][r][key])),
        ("2 workers: lockstep / python DDP gloo, malloc kept (python-tm)", "",
         per(lambda r: res[("lockstep", 2)][r][key] / res[("python-tm", 2)][r][key])),
        ("2 workers: lockstep / hand-written baseline", ">= 1.20",
         per(lambda r: res[("lockstep", 2)][r][key] / res[("baseline", 2)][r][key])),
        ("weak scaling: lockstep 2 workers / pair", ">= 0.90",
         per(lambda r: res[("lockstep", 2)][r][key] / res[("pair", 2)][r][key])),
        ("world size 1: lockstep / plain (overhead = 1 - x)", ">= 0.97",
         per(lambda r: res[("lockstep", 1)][r][key] / res[("plain", 1)][r][key])),
        ("(ref) 2 workers: python / pair", "",
         per(lambda r: res[("python", 2)][r][key] / res[("pair", 2)][r][key])),
        ("(ref) 2 workers: python-tm / pair", "",
         per(lambda r: res[("python-tm", 2)][r][key] / res[("pair", 2)][r][key])),
        ("(ref) 2 workers: baseline / pair", "",
         per(lambda r: res[("baseline", 2)][r][key] / res[("pair", 2)][r][key])),
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    p.add_argument("--python", default="/usr/bin/python3")
    p.add_argument("--models", default="fmnist-cnn,gpt")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps-cnn", type=int, default=40, help="timed steps of fmnist-cnn")
    p.add_argument("--steps-gpt", type=int, default=15, help="timed steps of the gpt")
    p.add_argument("--batch", type=int, default=0, help="per worker (default: cnn 64, gpt 16)")
    p.add_argument("--timeout", type=int, default=900, help="seconds for one run")
    p.add_argument("--json", default="", help="also write every measurement here")
    a = p.parse_args()
    print(f"# command: /usr/bin/python3 bench/torch/run.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {datetime.datetime.utcnow():%Y-%m-%dT%H:%M:%SZ}, {os.cpu_count()} cores, load "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])} (1/5/15 min)", flush=True)
    out = {}
    for model in a.models.split(","):
        steps = a.steps_gpt if model == "gpt" else a.steps_cnn
        res = {s: [] for s in SIDES}
        for r in range(a.reps):
            order = SIDES if r % 2 == 0 else SIDES[::-1]  # alternate: no side always runs last
            for side, world in order:
                m = measure(a, side, world, model, steps)
                res[(side, world)].append(m)
                print(f"  {model} rep {r + 1}: {side:9s} W={world}  {m['wall']:9.1f} samples/s "
                      f"(cpu-time rate {m['cpu']:9.1f})", flush=True)
        params, batch = res[("plain", 1)][0]["params"], res[("plain", 1)][0]["batch"]
        print(f"\n## {model}: {params} parameters, batch {batch} per worker, {a.warmup} warm-up + "
              f"{steps} timed steps, {a.reps} repetitions (median [min, max])")
        print("| side | workers | samples/s (wall) | samples per cpu-second |\n| --- | --- | --- | --- |")
        for side, world in SIDES:
            v = [m["wall"] for m in res[(side, world)]]
            c = [m["cpu"] for m in res[(side, world)]]
            print(f"| {side} | {world} | {statistics.median(v):.1f} [{min(v):.1f}, {max(v):.1f}] | "
                  f"{statistics.median(c):.1f} |")
        print("\n| ratio | target | median (wall) | per repetition | median (cpu-time rates) |\n"
              "| --- | --- | --- | --- | --- |")
        cpu_rows = ratio_rows(res, a.reps, "cpu")
        for (name, target, vals), (_, _, cpu) in zip(ratio_rows(res, a.reps), cpu_rows):
            print(f"| {name} | {target} | {statistics.median(vals):.3f} | "
                  f"{', '.join(f'{v:.3f}' for v in vals)} | {statistics.median(cpu):.3f} |")
        comm = [m["comm"] for m in res[("baseline", 2)]]
        print(f"\nbaseline, 2 workers: all-reduces take {100 * statistics.median(comm):.1f} % of its step "
              f"(median; rank that waited least), so no overlap can make lockstep more than "
              f"{1 / (1 - statistics.median(comm)):.3f}x the baseline on this compute")
        print(flush=True)
        out[model] = {f"{s}/{w}": v for (s, w), v in res.items()}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
