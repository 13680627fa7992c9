"""`lockstep sweep STUDY.toml`: hyper-parameter search with Optuna over `lockstep train` jobs.

Started by the `lockstep sweep` command (apps/cmd_sweep.cpp), which passes its own path as
--lockstep. The study lives in STUDY_DIR/study.db (SQLite): a sweep run again on the same study
loads it, marks the trials a killed sweep left running as failed (interrupted), enqueues them
again, and runs only the trials still missing; finished trials are never repeated.
"""
import argparse
import fcntl
import os
import sys
from pathlib import Path

PROG = "lockstep sweep"


def _import_optuna(python):
    try:
        import optuna  # noqa: F401
    except ImportError as e:
        sys.exit(f"{PROG}: error: Optuna is not installed for {python} ({e}); install it: apt-get install "
                 "python3-optuna (scripts/install-deps does), or pass --python with an interpreter that has it")


def _lock(study_dir):
    """One sweep per study at a time: a second one would mark the first's running trials failed."""
    f = open(study_dir / ".sweep.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        sys.exit(f"{PROG}: error: {study_dir} is in use by another lockstep sweep (pid {f.read().strip() or '?'}); "
                 "wait for it to end, or give this study another study.dir")
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    return f


def _sampler_and_pruner(study, n_existing):
    import optuna
    # Seeded, and offset by the trials already stored so that a resumed sweep does not draw
    # the same random start-up points again.
    sampler = optuna.samplers.TPESampler(seed=study.seed + n_existing)
    if study.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=study.pruner_args["startup_trials"],
                                             n_warmup_steps=study.pruner_args["warmup_steps"])
    elif study.pruner == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=study.pruner_args["min_resource"],
                                                        reduction_factor=study.pruner_args["reduction_factor"])
    else:
        pruner = optuna.pruners.NopPruner()
    return sampler, pruner


def _recover(opt_study, space):
    """Trials a killed sweep left RUNNING: recorded as failed (interrupted) and enqueued again."""
    import optuna
    storage = opt_study._storage
    for t in opt_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if len(t.params) < len(space):
            # Killed before all its values were drawn (nothing trained): there is nothing to
            # repeat, and a partial set of values would fix only some of the next trial's.
            print(f"{PROG}: trial {t.number} was left starting by a killed sweep: recorded as failed",
                  flush=True)
            continue
        opt_study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        print(f"{PROG}: trial {t.number} was left running by a killed sweep: recorded as failed, enqueued again",
              flush=True)


def _finished(opt_study):
    import optuna
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return [t for t in opt_study.get_trials(deepcopy=False, states=done) if not t.user_attrs.get("interrupted")]


def _suggest(trial, p):
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, p.choices)
    if p.kind == "int":
        return trial.suggest_int(p.name, p.low, p.high, step=p.step or 1, log=p.log)
    return trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)


def _objective(study, lockstep):
    import optuna
    from sweep_trial import TrialFailed, run_trial

    def objective(trial):
        params = {p.name: _suggest(trial, p) for p in study.space}
        try:
            value = run_trial(trial, study, params, lockstep)
        except optuna.TrialPruned as e:
            print(f"{PROG}: trial {trial.number} {params}: {e}", flush=True)
            raise
        except TrialFailed as e:
            trial.set_user_attr("error", str(e))
            print(f"{PROG}: trial {trial.number} {params} failed: {e}", flush=True)
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            study_ = trial.study
            study_.enqueue_trial(params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            raise
        print(f"{PROG}: trial {trial.number} {params}: {study.metric} = {value:.6g}", flush=True)
        return value

    return objective


def main():
    ap = argparse.ArgumentParser(prog=PROG)
    ap.add_argument("study_file")
    ap.add_argument("--lockstep", required=True, help="the lockstep program (passed by `lockstep sweep`)")
    args = ap.parse_args()
    from sweep_study import SweepError, load_study

    try:  # before Optuna is imported (seconds on a loaded machine): a bad study fails fast
        study = load_study(args.study_file, args.lockstep)
    except SweepError as e:
        sys.exit(f"{PROG}: error: {e}")
    _import_optuna(sys.executable)
    import optuna
    from sweep_report import table, write_best, write_report
    from sweep_trial import TrialFailed
    study.dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(study.dir)  # noqa: F841 (held until exit)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the driver prints one line per trial
    storage = f"sqlite:///{(study.dir / 'study.db').resolve()}"
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage)] if (study.dir / "study.db").exists() else []
    n_existing = 0
    if study.name in existing:
        n_existing = len(optuna.load_study(study_name=study.name, storage=storage).trials)
    sampler, pruner = _sampler_and_pruner(study, n_existing)
    opt_study = optuna.create_study(study_name=study.name, storage=storage, direction=study.direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    if opt_study.direction.name.lower() != study.direction:
        sys.exit(f"{PROG}: error: {study.path}: key 'objective.direction' = {study.direction!r}, but the study stored "
                 f"in {study.dir} was made with {opt_study.direction.name.lower()}; use another study.dir or name")
    _recover(opt_study, study.space)
    if n_existing == 0:
        for values in study.enqueue:
            opt_study.enqueue_trial(values)
    remaining = study.trials - len(_finished(opt_study))
    print(f"{PROG}: study '{study.name}' in {study.dir}: {len(_finished(opt_study))} of {study.trials} trials "
          f"finished, {max(0, remaining)} to run, {study.parallel} at once, {study.workers} worker(s) each", flush=True)
    if remaining > 0:
        opt_study.optimize(_objective(study, args.lockstep), n_trials=remaining, n_jobs=study.parallel,
                           catch=(TrialFailed,), gc_after_trial=False)
    print(table(study, opt_study))
    best = write_best(study, opt_study)
    report, plot_err = write_report(study, opt_study, best)
    if best:
        print(f"best: {best} (rerun: lockstep train --config {best})")
    else:
        print(f"{PROG}: no trial completed; see the errors above and {study.dir}/trials/*.log", file=sys.stderr)
    print(f"report: {report}")
    if plot_err:
        print(f"{PROG}: plots not drawn: {plot_err}", file=sys.stderr)
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
