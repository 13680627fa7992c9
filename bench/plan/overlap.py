#!/usr/bin/env python3
"""overlap.py TRACE... : when each bucket became ready against when its all-reduce ran.

TRACE: a rank's DDP timeline (LOCKSTEP_TIMELINE, or FILE.rank<r>.trace.json beside a
`lockstep train --profile FILE`). Steps are split at each forward; the first 3 and the last
are left out, as the profile does. Prints per bucket the medians over steps, in ms from the
start of backward: launched (all its gradients final), done (its all-reduce complete, as
the reducer saw it), and the share of its time in flight that lay inside backward; then
backward's end and finalize (the wait after backward: the exposed communication)."""
import json, statistics, sys


def steps_of(path, skip=3):
    ev = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    ev.sort(key=lambda e: e["ts"])
    steps = []
    for e in ev:
        if e["name"] == "forward":
            steps.append({"buckets": {}})
        elif steps:
            s = steps[-1]
            if e["name"] == "backward":
                s["bwd"] = (e["ts"], e["ts"] + e["dur"])
            elif e["name"] == "finalize":
                s["fin"] = e["dur"]
            elif e["name"].startswith("allreduce b"):
                s["buckets"][int(e["name"][11:])] = (e["ts"], e["ts"] + e["dur"],
                                                    e.get("args", {}).get("bytes", 0))
    return [s for s in steps[skip:-1] if "bwd" in s and "fin" in s]


for path in sys.argv[1:]:
    steps = steps_of(path)
    med = lambda xs: statistics.median(xs) / 1e3 if xs else float("nan")
    print("%s: %d steps" % (path, len(steps)))
    nb = max((len(s["buckets"]) for s in steps), default=0)
    for b in range(nb):
        rows = [(s["buckets"][b], s["bwd"]) for s in steps if b in s["buckets"]]
        launch = [l - b0 for (l, d, n), (b0, b1) in rows]
        done = [d - b0 for (l, d, n), (b0, b1) in rows]
        inside = [max(0.0, min(d, b1) - l) / (d - l) if d > l else 1.0 for (l, d, n), (b0, b1) in rows]
        print("  bucket %d: %8.0f bytes, launched %7.2f ms, done %7.2f ms, in flight during backward %3.0f %%"
              % (b, rows[0][0][2], med(launch), med(done), 100 * statistics.median(inside)))
    print("  backward ends %.2f ms; finalize (exposed) %.2f ms"
          % (med([s["bwd"][1] - s["bwd"][0] for s in steps]), med([s["fin"] for s in steps])))
