#!/usr/bin/env python3
"""tabulate.py OUT_DIR LOCKSTEP [WORLD]: the validation table of validate_netns.sh from its files.

For every measured run OUT_DIR/meas-MODEL-RATE-REP.json two predictions from `lockstep plan`
(--algo auto, the link's calibration OUT_DIR/link-RATE.json):
  host: from the compute profile taken on this host just before (prof-MODEL-REP.json);
  own:  from the measured run's own compute (its forward, backward, ready times), which checks
        the communication and overlap model alone, whatever the machine's load did to compute.
meas_exposed is the measured run's median finalize (the wait for what backward did not hide);
hidden = 1 - meas_exposed / comm, comm being the model's time of all buckets on that link.
Each prediction is at the bucket cap the measured run had (its profile's bucket_cap_bytes);
delay_us comes from OUT_DIR/setting.json (validate_netns.sh's DELAY_US); runs at another cap
than the default (BUCKET_MB) are named meas-MODEL-RATE-cCAP-REP.json, prof-MODEL-cCAP-REP.json."""
import glob, json, os, re, subprocess, sys

out, lockstep = sys.argv[1], sys.argv[2]
world = sys.argv[3] if len(sys.argv) > 3 else "2"


def plan(profile, link, cap_mb):
    r = subprocess.run([lockstep, "plan", "--profile", profile, "--nodes", world, "--algo", "auto",
                        "--inter-calibration", link, "--bucket-mb", repr(cap_mb), "--json"],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["rows"][0]


setting = {"delay_us": 0}
if os.path.exists(os.path.join(out, "setting.json")):
    setting.update(json.load(open(os.path.join(out, "setting.json"))))
cols = ["rep", "model", "rate", "delay_us", "cap_mb", "pred_host_ms", "pred_own_ms", "measured_ms", "host/meas", "own/meas",
        "comm_ms", "pred_exposed_ms", "meas_exposed_ms", "meas_hidden"]
print("\t".join(cols))
rows = []
for meas in sorted(glob.glob(os.path.join(out, "meas-*.json"))):
    m = re.match(r"meas-(.+)-(\d+[mg]bit)(-c[\d.]+)?-(\d+)\.json$", os.path.basename(meas))
    if not m:
        continue
    model, rate, c, rep = m.groups()
    c = c or ""
    link = os.path.join(out, "link-%s.json" % rate)
    got = json.load(open(meas))
    cap_mb = got["bucket_cap_bytes"] / (1 << 20)
    host = plan(os.path.join(out, "prof-%s%s-%s.json" % (model, c, rep)), link, cap_mb)
    own = plan(meas, link, cap_mb)
    exposed = got["finalize_s"]
    hidden = max(0.0, 1 - exposed / own["comm_s"]) if own["comm_s"] > 0 else 1.0
    print("\t".join([rep, model, rate, str(setting["delay_us"]), "%g" % cap_mb, "%.1f" % (host["step_s"] * 1e3), "%.1f" % (own["step_s"] * 1e3),
                     "%.1f" % (got["step_s"] * 1e3), "%.2f" % (host["step_s"] / got["step_s"]),
                     "%.2f" % (own["step_s"] / got["step_s"]), "%.1f" % (own["comm_s"] * 1e3),
                     "%.1f" % (own["exposed_s"] * 1e3), "%.1f" % (exposed * 1e3), "%.2f" % hidden]))
