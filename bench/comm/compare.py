#!/usr/bin/python3
"""Before/after collective benchmark: two bench_collectives programs (e.g. a build of main and
one of a branch) run alternately, REPEAT times per rank count, on this machine; prints the
median algbw of each per size and the ratio after/before (> 1: the change is faster).

    bench/comm/compare.py BEFORE_BENCH AFTER_BENCH [--nproc 2 4 8] [--repeat 3]
        [--min-bytes 8] [--max-bytes 256M] [--step-factor 4] [--hold 16M]
        [--env-before K=V] [--env-after K=V] (repeatable) [-- BENCH FLAGS...]
    bench/comm/compare.py /tmp/main/bench/comm/bench_collectives \\
        build/release/bench/comm/bench_collectives -- --shared-buffers

--hold SIZE adds, per side, each size's algbw divided by that side's algbw at SIZE (how well
a side holds its rate as buffers outgrow the caches). --env-before/--env-after set
environment variables for one side only (e.g. one binary with and without a setting).

Alternating (A B, B A, A B, ...) spreads the load of a shared machine over both sides; the median
of the repetitions drops single outliers. On a loaded machine read ratios, not rates.
"""
import argparse
import os
import statistics
import subprocess
import sys


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * mult[s[-1].upper()]) if s and s[-1].upper() in mult else int(s)


def run(bench, nproc, args, extra, env_pairs):
    cmd = [bench, "--nproc", str(nproc), "--min-bytes", args.min_bytes, "--max-bytes", args.max_bytes,
           "--step-factor", str(args.step_factor)] + extra
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in env_pairs)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if out.returncode != 0:
        sys.exit(f"compare.py: {' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    rows = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0].isdigit():
            algbw, wrong = columns(f)
            if wrong != "0":
                sys.exit(f"compare.py: {bench}: {wrong} wrong results at {f[0]} B")
            rows[int(f[0])] = float(algbw)  # GB/s
    return rows


def columns(f):
    """(algbw, #wrong) of one result row, in either layout bench_collectives has printed:
    before git 2026-12-06, `size count type redop time algbw busbw #wrong ...`; since, the
    nccl-tests layout `size count type redop root` + out-of-place `time algbw busbw #wrong` +
    in-place `time algbw busbw #wrong`, where the group lockstep does not have reads N/A."""
    if "." in f[4]:  # old layout: f[4] is the time
        return f[5], f[7]
    if f[5] == "N/A":  # only the in-place group
        return f[10], f[12]
    return f[6], f[8]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--nproc", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--min-bytes", default="8")
    p.add_argument("--max-bytes", default="256M")
    p.add_argument("--step-factor", type=int, default=4)
    p.add_argument("--timeout", type=int, default=900, help="seconds per bench run")
    p.add_argument("--hold", help="also print algbw / algbw at this size, per side (e.g. 16M)")
    p.add_argument("--env-before", action="append", default=[], metavar="K=V", help="repeatable")
    p.add_argument("--env-after", action="append", default=[], metavar="K=V", help="repeatable")
    # Flags after `--` go to both bench programs (argparse would take `--shared-buffers` as
    # one of its own options, so they are split off before it parses).
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra
    for nproc in args.nproc:
        got = {"before": [], "after": []}
        for rep in range(args.repeat):
            # A B, B A, A B, ...: a run that goes first in every pair gains (measured here: the
            # same binary against itself read 0.91 with A always first).
            for side in ("before", "after") if rep % 2 == 0 else ("after", "before"):
                got[side].append(run(getattr(args, side), nproc, args, args.extra, getattr(args, "env_" + side)))
        print(f"# nproc {nproc}, {args.repeat} alternating runs each, flags {' '.join(args.extra) or '-'}; "
              f"median algbw GB/s")
        med = {side: {size: statistics.median(r[size] for r in runs) for size in runs[0]}
               for side, runs in got.items()}
        hold = parse_size(args.hold) if args.hold else None
        if hold is not None and hold not in med["before"]:
            sys.exit(f"compare.py: --hold {args.hold}: {hold} B is not one of the measured sizes")
        print(f"{'size(B)':>12} {'before':>10} {'after':>10} {'after/before':>13}"
              + (f" {'before hold':>12} {'after hold':>11}" if hold else ""))
        ratios = []
        for size in sorted(med["before"]):
            b, a = med["before"][size], med["after"][size]
            ratio = a / b if b > 0 else float("nan")
            ratios.append(ratio)
            print(f"{size:>12} {b:>10.3f} {a:>10.3f} {ratio:>13.2f}"
                  + (f" {b / med['before'][hold]:>12.2f} {a / med['after'][hold]:>11.2f}" if hold else ""))
        print(f"# nproc {nproc}: geometric mean of after/before over sizes "
              f"{statistics.geometric_mean(r for r in ratios if r > 0):.2f}\n", flush=True)


if __name__ == "__main__":
    main()
