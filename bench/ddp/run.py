#!/usr/bin/python3
"""DDP training benchmark driver: lockstep (ddp_bench) against PyTorch DistributedDataParallel
(gloo, bench/ddp/torch_ddp_peer.py) in the same run, on the same machine, model, data, batch
and thread count (one compute thread per worker), with 1 and 2 worker processes. Then the
fraction of all-reduce time hidden behind backward, from lockstep's timeline, overlap on/off.

    /usr/bin/python3 bench/ddp/run.py [--build build/release] [--steps 100] [--repeat 2]

The machine ceiling: two lockstep single workers run at once with no communication, against
twice one alone (what this machine's shared memory bus and cores allow any two workers).

CPU binding: lockstep's workers are bound as `lockstep run` binds them by default
(--cpu-bind auto: each local worker its own slice of the CPUs, when there are at least as
many as workers), the independent pair alike; PyTorch's as torchrun leaves them (unbound)
unless --torch-cpu-bind auto.

Throughput = world * batch * steps / slowest rank's wall time over the timed steps (after
--warmup steps); with --repeat > 1 the best repetition is kept (the machine is shared).
"cpu" columns divide by process CPU time instead: what a worker that had its core to itself
would reach, minus time spent waiting for peers.
"""
import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_slices(world):
    """The CPUs of each of `world` local workers under `lockstep run --cpu-bind auto`
    (src/lockstep/launch/affinity.cpp); None when it does not bind."""
    allowed = sorted(os.sched_getaffinity(0))
    n = len(allowed)
    if world < 2 or world > n:
        return None
    out, nxt = [], 0
    for l in range(world):
        take = n // world + (1 if l < n % world else 0)
        out.append(allowed[nxt:nxt + take])
        nxt += take
    return out


def bind(cmds, mode):
    slices = cpu_slices(len(cmds)) if mode == "auto" else None
    if not slices:
        return cmds
    return [["taskset", "-c", ",".join(map(str, cpus))] + c for c, cpus in zip(cmds, slices)]


def launch(cmds, env, timeout):
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds]
    rows = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"run.py: {' '.join(cmds[0])} did not finish in {timeout} s")
        if p.returncode != 0:
            raise SystemExit(f"run.py: worker failed ({p.returncode}): {' '.join(p.args)}\n{err[-2000:]}")
        rows += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return rows


def run(impl, model, world, a, env_extra=None, extra_args=()):
    tmp = tempfile.mkdtemp(prefix="ddpbench-")
    store = os.path.join(tmp, "store")
    cmds = []
    for r in range(world):
        common = ["--model", model, "--rank", str(r), "--world", str(world), "--store", store,
                  "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup), "--data", a.data]
        if impl == "lockstep":
            cmds.append([a.bin] + common + list(extra_args))
        else:
            cmds.append(["/usr/bin/python3", os.path.join(ROOT, "bench/ddp/torch_ddp_peer.py")] + common)
    env = dict(os.environ, LOCKSTEP_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.update(env_extra or {})
    rows = launch(bind(cmds, a.cpu_bind if impl == "lockstep" else a.torch_cpu_bind), env, a.timeout)
    el = max(r["elapsed_s"] for r in rows)
    cpu = max(r["cpu_s"] for r in rows)
    n = world * a.batch * a.steps
    return {"thr": n / el, "cpu_thr": n / cpu, "step_ms": 1e3 * el / a.steps, "rows": rows, "tmp": tmp}


def independent(model, copies, a):
    """`copies` lockstep single workers (world 1, own store) at once: what the machine gives
    two workers with no communication at all (shared memory bus, caches, the VM's cores)."""
    cmds = [[a.bin, "--model", model, "--rank", "0", "--world", "1",
             "--store", os.path.join(tempfile.mkdtemp(prefix="ddpbench-"), "store"),
             "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup), "--data", a.data]
            for _ in range(copies)]
    env = dict(os.environ, LOCKSTEP_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    rows = launch(bind(cmds, a.cpu_bind), env, a.timeout)
    return {"thr": sum(a.batch * a.steps / r["elapsed_s"] for r in rows)}


def best(impl, model, world, a, **kw):
    rs = [run(impl, model, world, a, **kw) for _ in range(a.repeat)]
    return max(rs, key=lambda r: r["thr"])


def hidden_fraction(pattern):
    """Sum over ranks and buckets of |allreduce ∩ backward| / sum of allreduce durations."""
    hidden = total = 0.0
    for path in glob.glob(pattern):
        with open(path) as f:
            ev = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
        back = [(e["ts"], e["ts"] + e["dur"]) for e in ev if e["name"] == "backward"]
        for e in ev:
            if not e["name"].startswith("allreduce"):
                continue
            b, t = e["ts"], e["ts"] + e["dur"]
            total += t - b
            hidden += sum(max(0, min(t, be) - max(b, bb)) for bb, be in back)
    return hidden / total if total else float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--models", default="fmnist-mlp,fmnist-cnn")
    p.add_argument("--cpu-bind", choices=("auto", "none"), default="auto",
                   help="lockstep workers: bound as `lockstep run` does (auto, its default) or not")
    p.add_argument("--torch-cpu-bind", choices=("auto", "none"), default="none",
                   help="PyTorch workers: unbound as under torchrun (none, default) or bound like lockstep's")
    a = p.parse_args()
    a.bin = os.path.join(a.build, "bench/ddp/ddp_bench")
    if not os.path.exists(a.bin):
        raise SystemExit(f"run.py: {a.bin} not found; build it: cmake --build {a.build} --target ddp_bench")
    if a.data != "synthetic" and not os.path.exists(os.path.join(a.data, "train-images-idx3-ubyte.gz")):
        print(f"# {a.data} has no Fashion-MNIST; using synthetic input of the same shape")
        a.data = "synthetic"
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1048576
    print(f"# command: /usr/bin/python3 bench/ddp/run.py {' '.join(sys.argv[1:])}")
    print(f"# machine: {os.cpu_count()} cores, {mem:.1f} GiB, load {open('/proc/loadavg').read().split()[:3]}")
    print(f"# date: {datetime.datetime.utcnow():%Y-%m-%dT%H:%M:%SZ}; batch {a.batch}/worker, {a.steps} timed steps "
          f"after {a.warmup}, 1 compute thread/worker, data: {a.data}; cpu binding: lockstep {a.cpu_bind}, "
          f"torch {a.torch_cpu_bind}")
    res = {}
    for model in a.models.split(","):
        for world in (1, 2):
            for impl in ("lockstep", "torch"):
                res[impl, model, world] = best(impl, model, world, a)
    print(f"\n{'model':<11} {'impl':<9} {'W':>2} {'samples/s':>10} {'ms/step':>8} {'cpu smp/s':>10} "
          f"{'eff':>6} {'cpu eff':>8} {'vs torch':>9}")
    for model in a.models.split(","):
        for impl in ("lockstep", "torch"):
            for world in (1, 2):
                r, one = res[impl, model, world], res[impl, model, 1]
                eff = r["thr"] / (world * one["thr"])
                ceff = r["cpu_thr"] / (world * one["cpu_thr"])
                vs = r["thr"] / res["torch", model, world]["thr"]
                print(f"{model:<11} {impl:<9} {world:>2} {r['thr']:10.1f} {r['step_ms']:8.2f} {r['cpu_thr']:10.1f} "
                      f"{eff:6.2f} {ceff:8.2f} {vs:8.2f}x")
    print("\nMachine ceiling: 2 independent lockstep single workers at once (no communication) against "
          "2 x one alone;\n'DDP eff / ceiling' is the part of the loss that DDP itself costs.")
    print(f"{'model':<11} {'2 alone smp/s':>14} {'ceiling':>8} {'DDP eff':>8} {'DDP eff / ceiling':>18}")
    for model in a.models.split(","):
        two = max((independent(model, 2, a) for _ in range(a.repeat)), key=lambda r: r["thr"])
        one = res["lockstep", model, 1]["thr"]
        ceiling = two["thr"] / (2 * one)
        eff = res["lockstep", model, 2]["thr"] / (2 * one)
        print(f"{model:<11} {two['thr']:14.1f} {ceiling:8.2f} {eff:8.2f} {eff / ceiling:18.2f}")
    print(f"\n{'model':<11} {'overlap':<13} {'samples/s':>10} {'comm ms/step':>13} {'wait ms/step':>13} "
          f"{'hidden (timeline)':>18}")
    configs = (("on", ("--overlap", "1")), ("off", ("--overlap", "0")),
               ("on, 256K 1st", ("--overlap", "1", "--first-bucket-kb", "256")))
    for model in a.models.split(","):
        for label, extra in configs:
            tl = os.path.join(tempfile.mkdtemp(prefix="ddptl-"), "trace.json")
            r = best("lockstep", model, 2, a, env_extra={"LOCKSTEP_TIMELINE": tl}, extra_args=extra)
            comm = sum(x["comm_ms_per_step"] for x in r["rows"]) / len(r["rows"])
            wait = sum(x["wait_ms_per_step"] for x in r["rows"]) / len(r["rows"])
            frac = hidden_fraction(tl.replace(".json", ".rank*.json"))
            print(f"{model:<11} {label:<13} {r['thr']:10.1f} {comm:13.2f} {wait:13.2f} {frac:18.2f}")


if __name__ == "__main__":
    main()
