"""The outputs of `lockstep sweep`: the table of trials, best.toml, and STUDY_DIR/report/
(report.md with the table, the optimisation history and each parameter against the metric).
Plots are drawn as `lockstep report` draws them: gnuplot, PNG when it can, else SVG; without
gnuplot report.md is still written and says what to install.
"""
import math
import shutil
import subprocess
from pathlib import Path

import optuna

from sweep_study import to_toml
from sweep_trial import trial_config

STATES = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
          optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running",
          optuna.trial.TrialState.WAITING: "waiting"}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _seconds(t):
    if t.datetime_start and t.datetime_complete:
        return f"{(t.datetime_complete - t.datetime_start).total_seconds():.1f}"
    return "-"


def _last_value(t):
    if t.value is not None:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def table(study, opt_study, markdown=False):
    names = [p.name for p in study.space]
    head = ["trial", *names, study.metric, "state", "seconds"]
    rows = []
    for t in opt_study.get_trials(deepcopy=False):
        v = _last_value(t)
        state = STATES.get(t.state, str(t.state))
        if t.user_attrs.get("interrupted"):
            state += " (interrupted, retried)"
        rows.append([str(t.number), *[_fmt(t.params.get(n, "-")) for n in names],
                     "-" if v is None else _fmt(v), state, _seconds(t)])
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                         ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [head, *rows])


def write_best(study, opt_study):
    """STUDY_DIR/best.toml: the best trial's configuration, training into STUDY_DIR/best."""
    try:
        best = opt_study.best_trial
    except ValueError:
        return None
    cfg = trial_config(study, best.params, (study.dir / "best").resolve())
    path = study.dir / "best.toml"
    path.write_text(to_toml(cfg, f"# best trial {best.number} of {study.path}: {study.metric} = {best.value:.6g}\n"
                                 f"# rerun: lockstep train --config {path}\n"))
    return path


def _terminal(gnuplot):
    p = subprocess.run([gnuplot, "-e", "set terminal pngcairo"], capture_output=True, text=True, timeout=30)
    return ("pngcairo noenhanced size 720,440", "png") if p.returncode == 0 else ("svg noenhanced size 720,440", "svg")


def _plots(study, opt_study, out):
    trials = [t for t in opt_study.get_trials(deepcopy=False) if _last_value(t) is not None]
    sign = 1 if study.direction == "maximize" else -1
    best, hist = -math.inf, []
    for t in sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.number):
        best = max(best, sign * t.value)
        hist.append(f"{t.number} {t.value:.9g} {sign * best:.9g}")
    (out / "history.dat").write_text("\n".join(hist) + "\n")
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return [], "gnuplot not found in PATH; install it (Debian: apt-get install gnuplot-nox) and rerun the sweep"
    term, ext = _terminal(gnuplot)
    script = [f"set terminal {term}", "set grid", "set key bottom right" if sign > 0 else "set key top right"]
    plots = []
    if hist:
        script += [f"set output 'history.{ext}'", "set title 'optimisation history'", "set xlabel 'trial'",
                   f"set ylabel '{study.metric}'", "plot 'history.dat' using 1:2 with points pt 7 title 'trial', "
                   "'' using 1:3 with steps lw 2 title 'best so far'"]
        plots.append(f"history.{ext}")
    for p in study.space:
        pts = [(t.params[p.name], _last_value(t), t.state) for t in trials if p.name in t.params]
        if not pts:
            continue
        cats = p.choices if p.kind == "categorical" else None
        lines = [f"{cats.index(x) if cats else x} {v:.9g} {0 if s == optuna.trial.TrialState.COMPLETE else 1}"
                 for x, v, s in pts]
        (out / f"param_{p.name}.dat").write_text("\n".join(lines) + "\n")
        script += [f"set output 'param_{p.name}.{ext}'", f"set title '{p.name} against {study.metric}'",
                   f"set xlabel '{p.name}'", f"set ylabel '{study.metric}'",
                   "set logscale x" if p.log else "unset logscale x",
                   ("set xtics (" + ", ".join(f"'{c}' {i}" for i, c in enumerate(cats)) + ")") if cats
                   else "set xtics autofreq",
                   f"plot 'param_{p.name}.dat' using 1:($3==0?$2:1/0) with points pt 7 title 'complete', "
                   "'' using 1:($3==1?$2:1/0) with points pt 6 title 'pruned (last value)'"]
        plots.append(f"param_{p.name}.{ext}")
    (out / "plots.gp").write_text("\n".join(script) + "\n")
    r = subprocess.run([gnuplot, "plots.gp"], cwd=out, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return [], f"gnuplot failed: {r.stderr.strip()[-300:]}"
    return plots, ""


def write_report(study, opt_study, best_path):
    out = study.dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots, err = _plots(study, opt_study, out)
    md = [f"# lockstep sweep: {study.name}", "", f"Study file: `{study.path}`; storage: `{study.dir / 'study.db'}`; "
          f"objective: {study.direction} `{study.metric}`; pruner: {study.pruner}; {study.workers} worker(s) per trial.",
          ""]
    if best_path:
        b = opt_study.best_trial
        md += [f"Best: trial {b.number}, {study.metric} = {b.value:.6g}, "
               + ", ".join(f"{k} = {_fmt(v)}" for k, v in b.params.items()),
               f"(rerun: `lockstep train --config {best_path}`).", ""]
    md += [table(study, opt_study, markdown=True), ""]
    md += [f"![{Path(p).stem}]({p})\n" for p in plots]
    if err:
        md.append(f"> Plots not drawn: {err}\n")
    (out / "report.md").write_text("\n".join(md))
    return out / "report.md", err
