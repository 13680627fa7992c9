#!/usr/bin/python3
"""Before/after collective benchmark: two bench_collectives programs (e.g. a build of main and
one of a branch) run alternately, REPEAT times per rank count, on this machine; prints the
median algbw of each per size and the ratio after/before (> 1: the change is faster).

    bench/comm/compare.py BEFORE_BENCH AFTER_BENCH [--nproc 2 4 8] [--repeat 3]
        [--min-bytes 8] [--max-bytes 256M] [--step-factor 4] [-- BENCH FLAGS...]
    bench/comm/compare.py /tmp/main/bench/comm/bench_collectives \\
        build/release/bench/comm/bench_collectives -- --shared-buffers

Alternating (A B, B A, A B, ...) spreads the load of a shared machine over both sides; the median
of the repetitions drops single outliers. On a loaded machine read ratios, not rates.
"""
import argparse
import statistics
import subprocess
import sys


def run(bench, nproc, args, extra):
    cmd = [bench, "--nproc", str(nproc), "--min-bytes", args.min_bytes, "--max-bytes", args.max_bytes,
           "--step-factor", str(args.step_factor)] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
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
                got[side].append(run(getattr(args, side), nproc, args, args.extra))
        print(f"# nproc {nproc}, {args.repeat} alternating runs each, flags {' '.join(args.extra) or '-'}; "
              f"median algbw GB/s")
        print(f"{'size(B)':>12} {'before':>10} {'after':>10} {'after/before':>13}")
        ratios = []
        for size in sorted(got["before"][0]):
            b = statistics.median(r[size] for r in got["before"])
            a = statistics.median(r[size] for r in got["after"])
            ratio = a / b if b > 0 else float("nan")
            ratios.append(ratio)
            print(f"{size:>12} {b:>10.3f} {a:>10.3f} {ratio:>13.2f}")
        print(f"# nproc {nproc}: geometric mean of after/before over sizes "
              f"{statistics.geometric_mean(r for r in ratios if r > 0):.2f}\n", flush=True)


if __name__ == "__main__":
    main()
