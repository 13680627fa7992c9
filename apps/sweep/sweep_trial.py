"""One trial of `lockstep sweep`: a `lockstep train` job (study.workers workers) on the base
configuration with the trial's values, in STUDY_DIR/trials/NNNN. Its metrics.jsonl is read while it
trains and each value of the objective metric is reported to Optuna; when the pruner says so the
job is stopped (SIGTERM to its launcher, SIGKILL to the process group after a grace period).
"""
import ctypes
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna

from sweep_study import METRICS, to_toml

POLL_S = 0.2
STOP_GRACE_S = 15


class TrialFailed(Exception):
    """The trial's training crashed, diverged, timed out or never reported the metric."""


def _die_with_parent():
    # A `kill -9` of the sweep must not leave its trials training: the kernel sends SIGTERM to
    # the launcher when the thread that started it exits.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop(proc):
    """SIGTERM to the launcher; its whole process group is killed if it has not ended in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session), workers included
        proc.wait(timeout=STOP_GRACE_S)


class MetricTail:
    """The records of a growing metrics.jsonl, a complete line at a time."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, ""

    def new_records(self):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return []
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def trial_config(study, params, run_dir):
    cfg = dict(study.base)
    cfg.update(params)
    cfg.update(run_dir=str(run_dir), nproc=study.workers, overwrite=True, resume="")
    return cfg


def _values(records, metric):
    kind, key = METRICS[metric][:2]
    for r in records:
        if r.get("kind") == kind and isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), int):
            yield r["step"], float(r[key])


def _error_of(log_path):
    """The first error line of a trial's output (every rank prints it), else its last lines."""
    try:
        text = Path(log_path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "error:" in line]
    return errors[0] if errors else " | ".join(text[-3:])


def run_trial(trial, study, params, lockstep):
    run_dir = (study.dir / "trials" / f"{trial.number:04d}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir.parent / f"{trial.number:04d}.toml"
    cfg_path.write_text(to_toml(trial_config(study, params, run_dir), f"# trial {trial.number} of {study.path}\n"))
    log_path = run_dir.parent / f"{trial.number:04d}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([lockstep, "train", "--config", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
    trial.set_user_attr("pid", proc.pid)
    trial.set_user_attr("run_dir", str(run_dir))
    tail, last, deadline = MetricTail(run_dir / "metrics.jsonl"), None, time.monotonic() + study.trial_timeout
    try:
        while True:
            done = proc.poll() is not None
            for step, value in _values(tail.new_records(), study.metric):
                last = value
                trial.report(value, step)
                if trial.should_prune():
                    stop(proc)
                    trial.set_user_attr("stopped_at_step", step)
                    raise optuna.TrialPruned(f"pruned at step {step} ({study.metric} = {value:.4g})")
            if done:
                break
            if time.monotonic() > deadline:
                stop(proc)
                raise TrialFailed(f"stopped after study.trial_timeout = {study.trial_timeout:g} s")
            time.sleep(POLL_S)
    except BaseException:
        stop(proc)  # also on Ctrl-C or an error of the driver: no trial outlives the sweep
        raise
    if proc.returncode != 0:
        raise TrialFailed(f"lockstep train exited with code {proc.returncode}: {_error_of(log_path)} (log: {log_path})")
    if last is None:
        raise TrialFailed(f"objective.metric '{study.metric}' was never reported in {run_dir}/metrics.jsonl")
    return last
