"""`lockstep sweep` end to end: real `lockstep train` trials on a tiny Fashion-MNIST budget,
the study read back from its SQLite storage with Optuna. LOCKSTEP_BIN names the program."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

LOCKSTEP = os.environ.get("LOCKSTEP_BIN", "lockstep")
TIMEOUT = 240  # a whole sweep of a few trials on a loaded 2-core machine (each trial: seconds)
BASE = {"model": "fmnist-mlp", "epochs": 1, "batch": 32, "train_limit": 512, "test_limit": 256,
        "eval_every": 4, "log_every": 4}  # 16 steps at one worker, 8 at two


def value(v):
    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


def write_study(tmp_path, study=None, space=None, base=None, objective=None, pruner=None, enqueue=()):
    lines = ["[study]", f'dir = "{tmp_path / "study"}"']
    lines += [f"{k} = {value(v)}" for k, v in {"trials": 3, "workers": 1, "seed": 3, **(study or {})}.items()]
    for name, table in (("objective", objective), ("pruner", pruner), ("base", {**BASE, **(base or {})})):
        if table is not None:
            lines += [f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items()]
    space = space if space is not None else {"lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True}}
    for name, spec in space.items():
        lines += [f"[space.{name}]"] + [f"{k} = {value(v)}" for k, v in spec.items()]
    for e in enqueue:
        lines += ["[[enqueue]]"] + [f"{k} = {value(v)}" for k, v in e.items()]
    path = tmp_path / "study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep(path, **kw):
    return subprocess.run([LOCKSTEP, "sweep", str(path)], capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=path.parent, **kw)


def stored(tmp_path, name="study"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")


def states(study):
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_three_trials_complete_and_best_toml_reruns_to_the_same_result(tmp_path):
    path = write_study(tmp_path, study={"workers": 2},
                       space={"lr": {"type": "float", "low": 0.01, "high": 0.2, "log": True},
                              "momentum": {"type": "float", "low": 0.5, "high": 0.95},
                              "batch": {"type": "int", "low": 16, "high": 32, "step": 16},
                              "optimizer": {"type": "categorical", "choices": ["sgd", "adamw"]}})
    r = sweep(path)
    assert r.returncode == 0, r.stderr
    s = stored(tmp_path)
    assert states(s) == [optuna.trial.TrialState.COMPLETE] * 3
    for t in s.trials:  # a DDP job of two workers per trial, in its own run directory
        run = json.loads((Path(t.user_attrs["run_dir"]) / "run.json").read_text())
        assert run["world_size"] == 2
    report = tmp_path / "study" / "report"
    assert (report / "report.md").exists() and "| trial | lr |" in (report / "report.md").read_text()
    assert any(p.name.startswith("history.") for p in report.iterdir())
    assert any(p.name.startswith("param_optimizer.") for p in report.iterdir())
    assert "complete" in r.stdout and "best:" in r.stdout
    best = tmp_path / "study" / "best.toml"
    rerun = subprocess.run([LOCKSTEP, "train", "--config", str(best)], capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr
    evals = [json.loads(l) for l in (tmp_path / "study" / "best" / "metrics.jsonl").read_text().splitlines()]
    final = [e["accuracy"] for e in evals if e.get("kind") == "eval"][-1]
    assert final == s.best_value  # the same data order, seed and arithmetic: the same accuracy


def test_killed_sweep_resumes_without_repeating_finished_trials(tmp_path):
    path = write_study(tmp_path, base={"train_limit": 2048})
    p = subprocess.Popen([LOCKSTEP, "sweep", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         cwd=tmp_path)
    db, deadline = tmp_path / "study" / "study.db", time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:  # kill -9 once one trial finished and the next one trains
            # Not before the first trial's folder: opening the database while the sweep creates
            # it races the schema set-up of both (the sweep then failed with exit code 1).
            if (db.parent / "trials").exists():
                try:  # the last trial has drawn its values and started its launcher
                    trials = stored(tmp_path).get_trials(deepcopy=False)
                    st = [t.state for t in trials]
                    started = bool(trials) and "pid" in trials[-1].user_attrs
                except Exception:  # the study not yet created, or the database busy
                    st, started = [], False
                if optuna.trial.TrialState.COMPLETE in st and st[-1] == optuna.trial.TrialState.RUNNING and started:
                    break
            assert p.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no trial finished in time")
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    before = stored(tmp_path).trials
    finished = {t.number: (t.params, t.value) for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    running = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert finished and len(running) == 1
    # The killed sweep's trial does not train on (PR_SET_PDEATHSIG): its launcher is gone soon.
    pid = running[0].user_attrs.get("pid")
    for _ in range(300):
        if pid is None or not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"trial launcher pid {pid} outlived the killed sweep")
    mtimes = {n: (db.parent / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime_ns for n in finished}

    r = sweep(path)
    assert r.returncode == 0, r.stderr
    after = stored(tmp_path).trials
    complete = [t for t in after if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    for n, (params, v) in finished.items():  # kept, not trained again
        assert after[n].params == params and after[n].value == v
        assert (db.parent / "trials" / f"{n:04d}" / "metrics.jsonl").stat().st_mtime_ns == mtimes[n]
    lost = after[running[0].number]
    assert lost.state == optuna.trial.TrialState.FAIL and lost.user_attrs["interrupted"]
    assert any(t.params == lost.params and t.user_attrs.get("retry_of") == lost.number for t in complete)
    assert len(after) == len(before) + (3 - len(finished))  # no finished trial ran twice
    assert "interrupted, retried" in r.stdout


def test_pruner_stops_a_bad_trial(tmp_path):
    path = write_study(tmp_path, study={"trials": 2}, base={"epochs": 2},
                       pruner={"type": "median", "startup_trials": 1},
                       enqueue=[{"lr": 0.1}, {"lr": 0.0001}],
                       space={"lr": {"type": "float", "low": 0.0001, "high": 0.2, "log": True}})
    r = sweep(path)
    assert r.returncode == 0, r.stderr
    s = stored(tmp_path)
    assert states(s) == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert s.trials[1].user_attrs["stopped_at_step"] < 32  # of 32 steps: stopped at an early eval
    assert "pruned" in r.stdout


def test_crashing_trial_is_failed_and_the_sweep_goes_on(tmp_path):
    path = write_study(tmp_path, study={"trials": 2},
                       space={"model": {"type": "categorical", "choices": ["no-such-model", "fmnist-mlp"]}},
                       enqueue=[{"model": "no-such-model"}, {"model": "fmnist-mlp"}])
    r = sweep(path)
    assert r.returncode == 0, r.stderr
    s = stored(tmp_path)
    assert states(s) == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert "exited with code" in s.trials[0].user_attrs["error"]
    assert "no-such-model" in s.trials[0].user_attrs["error"]


@pytest.mark.parametrize("kw,key", [
    ({"space": {"lr": {"type": "float", "low": 0.5, "high": 0.1}}}, "space.lr.low"),
    ({"space": {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "space.lr.low"),
    ({"space": {"learning_rate": {"type": "float", "low": 0.01, "high": 0.1}}}, "space.learning_rate"),
    ({"space": {"optimizer": {"type": "categorical", "choices": []}}}, "space.optimizer.choices"),
    ({"objective": {"metric": "val_f1"}}, "objective.metric"),
    ({"space": {"run_dir": {"type": "categorical", "choices": ["a"]}}}, "space.run_dir"),
    ({"base": {"lr": -1.0}}, "lr"),
    ({"pruner": {"type": "hyperband"}}, "pruner.type"),
])
def test_bad_study_is_an_error_naming_the_key(tmp_path, kw, key):
    r = sweep(write_study(tmp_path, **kw))
    assert r.returncode != 0
    assert f"'{key}'" in r.stderr, r.stderr
    assert not (tmp_path / "study" / "study.db").exists()  # nothing ran


def test_missing_optuna_says_what_to_install(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "optuna.py").write_text("raise ImportError('No module named optuna')\n")
    r = sweep(write_study(tmp_path), env={**os.environ, "PYTHONPATH": str(fake)})
    assert r.returncode != 0
    assert "apt-get install python3-optuna" in r.stderr, r.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
