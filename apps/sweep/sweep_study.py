"""The study file of `lockstep sweep`: reads STUDY.toml and checks every key, so that a mistake
is an error naming the key (space.lr.low, objective.metric, ...) before any trial trains.

    [study]      name, dir, trials, parallel, workers, seed, trial_timeout
    [objective]  metric (test_acc | test_loss | train_loss), direction (maximize | minimize)
    [pruner]     type (none | median | successive_halving) and its settings
    [base]       training keys, as in `lockstep train --config` (or base = "train.toml")
    [space.KEY]  type = "float" (low, high, log, step) | "int" (low, high, log, step) |
                 "categorical" (choices)
    [[enqueue]]  trials to run first, with the values given (KEY = value)
"""
import difflib
import json
import math
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class SweepError(Exception):
    """A study that cannot run: the message names the file and the key."""


# Metric name -> (metrics.jsonl record kind, field, usual direction).
METRICS = {
    "test_acc": ("eval", "accuracy", "maximize"),
    "test_loss": ("eval", "loss", "minimize"),
    "train_loss": ("step", "loss", "minimize"),
}
# Keys the sweep sets itself for every trial.
OWNED_KEYS = {"run_dir": "each trial trains in STUDY_DIR/trials/NNNN", "nproc": "set study.workers",
              "resume": "every trial is a new run", "overwrite": "every trial is a new run"}
PRUNERS = {
    "none": {},
    "median": {"startup_trials": 2, "warmup_steps": 0},
    "successive_halving": {"min_resource": 1, "reduction_factor": 3},
}
SECTION_KEYS = {
    "study": {"name", "dir", "trials", "parallel", "workers", "seed", "trial_timeout"},
    "objective": {"metric", "direction"},
}
SPACE_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
              "categorical": {"type", "choices"}}


@dataclass
class Param:
    name: str
    kind: str  # float | int | categorical
    low: float = 0
    high: float = 0
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)


@dataclass
class Study:
    path: Path
    name: str
    dir: Path
    trials: int
    parallel: int
    workers: int
    seed: int
    trial_timeout: float
    metric: str
    direction: str
    pruner: str
    pruner_args: dict
    base: dict  # the resolved training configuration (every key)
    space: list
    enqueue: list


def _err(study_path, key, what):
    raise SweepError(f"{study_path}: key '{key}' {what}")


def _get(table, key, kinds, default, path, prefix):
    if key not in table:
        return default
    v = table[key]
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        names = " or ".join(k.__name__.replace("str", "a string").replace("int", "an integer")
                            .replace("float", "a number").replace("bool", "true/false") for k in kinds)
        _err(path, f"{prefix}{key}", f"must be {names}, got {v!r}")
    return v


def _check_keys(table, allowed, path, prefix):
    for k in table:
        if k not in allowed:
            _err(path, f"{prefix}{k}", f"is not a study key; accepted here: {', '.join(sorted(allowed))}")


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string has JSON's escapes
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    return str(v)


def to_toml(cfg, header=""):
    return header + "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items())


def resolve_config(lockstep, toml_path):
    """The training configuration of a TOML file, every key present, checked by lockstep itself."""
    p = subprocess.run([lockstep, "sweep", "--resolve-config", str(toml_path)], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise SweepError(p.stderr.strip().removeprefix("lockstep: error: "))
    return json.loads(p.stdout)


def _param(name, spec, base, path):
    prefix = f"space.{name}."
    if not isinstance(spec, dict):
        _err(path, f"space.{name}", "must be a table: [space.KEY] with type, low, high, ... or choices")
    if name in OWNED_KEYS:
        _err(path, f"space.{name}", f"cannot be searched: {OWNED_KEYS[name]}")
    if name not in base:
        close = difflib.get_close_matches(name, list(base), n=1)
        _err(path, f"space.{name}", "is not a training option" + (f" (did you mean '{close[0]}'?)" if close else
                                                                   " (see `lockstep train --help` for the keys)"))
    kind = _get(spec, "type", (str,), None, path, prefix)
    if kind not in SPACE_KEYS:
        _err(path, f"{prefix}type", f"must be one of: float, int, categorical, got {kind!r}")
    _check_keys(spec, SPACE_KEYS[kind], path, prefix)
    p = Param(name, kind)
    if kind == "categorical":
        p.choices = _get(spec, "choices", (list,), None, path, prefix)
        if not p.choices:
            _err(path, f"{prefix}choices", "must be a non-empty list of values")
        return p
    num = (int,) if kind == "int" else (int, float)
    if isinstance(base[name], str) or isinstance(base[name], bool):
        _err(path, f"space.{name}", f"is a {type(base[name]).__name__} option; use type = \"categorical\"")
    if kind == "float" and isinstance(base[name], int):
        _err(path, f"{prefix}type", f"'{name}' takes integers; use type = \"int\"")
    for k in ("low", "high"):
        if k not in spec:
            _err(path, f"{prefix}{k}", "is missing")
    p.low, p.high = _get(spec, "low", num, None, path, prefix), _get(spec, "high", num, None, path, prefix)
    p.log = _get(spec, "log", (bool,), False, path, prefix)
    p.step = _get(spec, "step", num, None, path, prefix)
    if p.low > p.high:
        _err(path, f"{prefix}low", f"= {p.low} is greater than {prefix}high = {p.high} (swap them)")
    if p.log and p.low <= 0:
        _err(path, f"{prefix}low", f"= {p.low} must be > 0 with log = true (a log scale has no zero)")
    if p.log and p.step is not None and kind == "float":
        _err(path, f"{prefix}step", "cannot be combined with log = true")
    if p.step is not None and p.step <= 0:
        _err(path, f"{prefix}step", f"= {p.step} must be > 0")
    return p


def _base(doc, path, lockstep, study_dir):
    base = doc.get("base", {})
    if isinstance(base, str):
        base_file = (path.parent / base).resolve()
        if not base_file.exists():
            _err(path, "base", f"= {base!r}: {base_file} does not exist")
    elif isinstance(base, dict):
        study_dir.mkdir(parents=True, exist_ok=True)
        base_file = study_dir / "base.toml"
        base_file.write_text(to_toml(base, f"# [base] of {path}\n"))
    else:
        _err(path, "base", "must be a table of training keys or the path of a training TOML file")
    try:
        return resolve_config(lockstep, base_file)
    except SweepError as e:
        raise SweepError(f"{path}: [base]: {e}") from None


def _pruner(doc, path):
    t = doc.get("pruner", {})
    kind = _get(t, "type", (str,), "none", path, "pruner.")
    if kind not in PRUNERS:
        _err(path, "pruner.type", f"must be one of: {', '.join(PRUNERS)}, got {kind!r}")
    _check_keys(t, {"type", *PRUNERS[kind]}, path, "pruner.")
    args = {k: _get(t, k, (int,), d, path, "pruner.") for k, d in PRUNERS[kind].items()}
    for k, v in args.items():
        if v < (2 if k == "reduction_factor" else 0):
            _err(path, f"pruner.{k}", f"= {v} is out of range")
    return kind, args


def load_study(path, lockstep):
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"{path}: cannot read the study file: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path}: invalid TOML: {e}") from None
    _check_keys(doc, {"study", "objective", "pruner", "base", "space", "enqueue"}, path, "")
    s, o = doc.get("study", {}), doc.get("objective", {})
    _check_keys(s, SECTION_KEYS["study"], path, "study.")
    _check_keys(o, SECTION_KEYS["objective"], path, "objective.")
    name = _get(s, "name", (str,), path.stem, path, "study.")
    study_dir = Path(_get(s, "dir", (str,), f"runs/sweep-{name}", path, "study."))
    ints = {k: _get(s, k, (int,), d, path, "study.") for k, d in
            (("trials", 10), ("parallel", 1), ("workers", 1), ("seed", 0))}
    for k, v in ints.items():
        if v < (0 if k == "seed" else 1):
            _err(path, f"study.{k}", f"= {v} must be >= {0 if k == 'seed' else 1}")
    timeout = _get(s, "trial_timeout", (int, float), 3600, path, "study.")
    if timeout <= 0:
        _err(path, "study.trial_timeout", f"= {timeout} must be > 0 seconds")
    metric = _get(o, "metric", (str,), "test_acc", path, "objective.")
    if metric not in METRICS:
        _err(path, "objective.metric", f"= {metric!r} is not a metric `lockstep train` reports; it reports: "
             f"{', '.join(METRICS)}")
    direction = _get(o, "direction", (str,), METRICS[metric][2], path, "objective.")
    if direction not in ("maximize", "minimize"):
        _err(path, "objective.direction", f"must be maximize or minimize, got {direction!r}")
    pruner, pruner_args = _pruner(doc, path)
    base = _base(doc, path, lockstep, study_dir)
    space_doc = _get(doc, "space", (dict,), {}, path, "")
    if not space_doc:
        _err(path, "space", "is empty: add at least one [space.KEY] table")
    space = [_param(k, v, base, path) for k, v in space_doc.items()]
    enqueue = _get(doc, "enqueue", (list,), [], path, "")
    for i, e in enumerate(enqueue):
        for k in e:
            if k not in space_doc:
                _err(path, f"enqueue[{i}].{k}", "is not a key of [space]")
    return Study(path, name, study_dir, ints["trials"], ints["parallel"], ints["workers"], ints["seed"],
                 float(timeout), metric, direction, pruner, pruner_args, base, space, enqueue)
