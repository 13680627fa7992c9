#!/usr/bin/python3
"""Before/after of lockstep's own DDP (bench/ddp/run.py's lockstep side): two ddp_bench
programs, 2 workers bound as `lockstep run` binds them, alternating A B, B A, ...

    bench/ddp/compare.py BEFORE_DDP_BENCH AFTER_DDP_BENCH [--repeat 4] [--steps 100] [--models ...]
"""
import argparse, os, statistics, sys, types
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as ddp_run  # bench/ddp/run.py

p = argparse.ArgumentParser()
p.add_argument("before"); p.add_argument("after")
p.add_argument("--repeat", type=int, default=4)
p.add_argument("--steps", type=int, default=100)
p.add_argument("--models", default="fmnist-mlp,fmnist-cnn")
a = p.parse_args()
cfg = types.SimpleNamespace(batch=64, steps=a.steps, warmup=20, data="/usr/share/datasets/fashion-mnist",
                            timeout=600, cpu_bind="auto", torch_cpu_bind="none", repeat=1)
for model in a.models.split(","):
    got = {"before": [], "after": []}
    for rep in range(a.repeat):
        for side in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            cfg.bin = getattr(a, side)
            r = ddp_run.run("lockstep", model, 2, cfg)
            got[side].append((r["thr"], r["cpu_thr"]))
            print(f"{model} rep {rep} {side:6} {r['thr']:10.1f} samples/s (cpu {r['cpu_thr']:10.1f})", flush=True)
    b = statistics.median(x[0] for x in got["before"]); f = statistics.median(x[0] for x in got["after"])
    bc = statistics.median(x[1] for x in got["before"]); fc = statistics.median(x[1] for x in got["after"])
    print(f"## {model}: 2 workers, median of {a.repeat}: before {b:.1f}, after {f:.1f} samples/s, "
          f"after/before {f / b:.3f} (cpu {fc / bc:.3f})", flush=True)
