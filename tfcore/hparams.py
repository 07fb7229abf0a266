"""Hyperparameter search spaces, trial sampling and bookkeeping, HParams summaries.

Pure functions behind `python -m train.search`; this module imports no TensorFlow
(only the two summary writers at the end do).

Search space: one entry per flag of the searched binary, `name=domain`:

    learning_rate=loguniform(0.01, 1.0)   log-uniform float in [low, high]
    eps=uniform(0.5, 3)                   uniform float in [low, high]
    units=int(32, 256)                    uniform integer in [low, high] (both included)
    dropout=choice(true, false)           one of the listed values
    optimizer=choice(adam, 'sgd')         strings: bare words or quoted
    epochs=3                              a fixed value (a choice of one)

Choice values are parsed as bool (`true` / `false`, any case), int, float, else
string (quotes optional; quote a string with commas or parentheses). For grid search,
`uniform`, `loguniform` and `int` take an optional third argument, the number of grid
points (`uniform(0.5, 3, 4)`: 0.5, 1.33, 2.17, 3.0; log-spaced for `loguniform`;
default `grid_points` of `grid_configs`). A space file (`parse_space_file`) is either
a JSON object `{"name": "domain string" | [values] | value}` or a text file with one
`name=domain` per line (`#` starts a comment).

Sampling: `random_configs(space, n, seed)` draws trial i's values from a generator
seeded by (seed, i), the flags in sorted name order, so trial i's configuration does
not depend on `n` or on the order of the entries (a rerun with more trials keeps the
first ones). `grid_configs` enumerates the cartesian product in entry order (the last
entry varies fastest).

Bookkeeping: `trial_name(i)` ('trial_007'), `find_metric(metrics, name)` (a top-level
key of a binary's metrics.json, else its `final` dict), `metrics_complete`,
`best_trial`, `check_selection_metric` (the guard against tuning on the test set),
`results_markdown` / `results_csv`.

HParams (TensorBoard's hparams plugin, `tensorboard/plugins/hparams/api.proto` and
`plugin_data.proto`): TF 2.21 does not install the `tensorboard` package, so
`tensorboard.plugins.hparams.api` is not available; the messages are built here from
descriptors with the same package, field numbers and types (`proto_classes`), and
written in the layout that api uses (plugin name 'hparams', its tags, an empty float
tensor as the value, step 0):
`write_hparams_config(logdir, ...)` puts the `Experiment` (tag
`_hparams_/experiment`) in the root run, `write_trial_hparams(logdir/trial_NNN, ...)`
a session's `SessionStartInfo`, its metrics as 'scalars' summaries and a
`SessionEndInfo`. `pip install tensorboard` and `tensorboard --logdir=<dir>` shows
them in the HParams tab.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import io
import itertools
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

Value = Union[bool, int, float, str]

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|nan)$",
                       re.IGNORECASE)
_CALL_RE = re.compile(r"^([A-Za-z_]+)\s*\((.*)\)$", re.DOTALL)


# -- domains -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values` (bools, numbers or strings; not mixed)."""
    values: Tuple[Value, ...]

    def kind(self) -> str:
        """'bool', 'number' or 'string'."""
        return _value_kind(self.values[0])

    def sample(self, rng: np.random.Generator) -> Value:
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self, grid_points: int) -> List[Value]:
        del grid_points
        return list(self.values)

    def describe(self) -> str:
        return f"choice({', '.join(format_value(v) for v in self.values)})"


@dataclasses.dataclass(frozen=True)
class Uniform:
    """A float uniform in [low, high]."""
    low: float
    high: float
    grid_points: Optional[int] = None

    def kind(self) -> str:
        return "number"

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.low + (self.high - self.low) * rng.random())

    def grid(self, grid_points: int) -> List[float]:
        return [float(v) for v in np.linspace(self.low, self.high,
                                              self.grid_points or grid_points)]

    def describe(self) -> str:
        return f"uniform({self.low!r}, {self.high!r}{_points(self.grid_points)})"


@dataclasses.dataclass(frozen=True)
class LogUniform:
    """A float whose log is uniform in [log low, log high] (low > 0)."""
    low: float
    high: float
    grid_points: Optional[int] = None

    def kind(self) -> str:
        return "number"

    def sample(self, rng: np.random.Generator) -> float:
        lo, hi = math.log(self.low), math.log(self.high)
        return float(math.exp(lo + (hi - lo) * rng.random()))

    def grid(self, grid_points: int) -> List[float]:
        return [float(v) for v in np.geomspace(self.low, self.high,
                                               self.grid_points or grid_points)]

    def describe(self) -> str:
        return f"loguniform({self.low!r}, {self.high!r}{_points(self.grid_points)})"


@dataclasses.dataclass(frozen=True)
class IntUniform:
    """An integer uniform in [low, high], both included."""
    low: int
    high: int
    grid_points: Optional[int] = None

    def kind(self) -> str:
        return "number"

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def grid(self, grid_points: int) -> List[int]:
        n = self.grid_points or grid_points
        points = np.round(np.linspace(self.low, self.high, n)).astype(np.int64)
        return [int(v) for v in dict.fromkeys(points.tolist())]  # unique, in order

    def describe(self) -> str:
        return f"int({self.low}, {self.high}{_points(self.grid_points)})"


Domain = Union[Choice, Uniform, LogUniform, IntUniform]
Space = Dict[str, Domain]


def _points(n: Optional[int]) -> str:
    return "" if n is None else f", {n}"


def _value_kind(v: Value) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "string"


def format_value(v: Value) -> str:
    """A value as it is written on a command line (`true`, `0.01`, `adam`)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


# -- parsing -----------------------------------------------------------------------

def _split_args(text: str, where: str) -> List[str]:
    """Splits 'a, "b,c", d' at top-level commas, keeping quotes on the pieces."""
    parts, current, quote = [], [], None
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch == ",":
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if quote:
        raise ValueError(f"{where}: unterminated quote {quote} in {text!r}")
    parts.append("".join(current).strip())
    if len(parts) == 1 and not parts[0]:
        return []
    if any(not p for p in parts):
        raise ValueError(f"{where}: empty value in {text!r}")
    return parts


def parse_value(text: str) -> Value:
    """'true' -> True, '3' -> 3, '0.5' / '1e-3' -> float, "'x'" / 'x' -> 'x'."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if _INT_RE.match(t):
        return int(t)
    if _FLOAT_RE.match(t):
        return float(t)
    return t


def _number(text: str, where: str, what: str) -> float:
    v = parse_value(text)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{where}: {what} must be a finite number, got {text!r}")
    return v


def _grid_points_arg(args: List[str], where: str) -> Optional[int]:
    if len(args) < 3:
        return None
    v = parse_value(args[2])
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ValueError(f"{where}: the number of grid points must be an integer >= 2, "
                         f"got {args[2]!r}")
    return v


def parse_domain(text: str, where: str = "domain") -> Domain:
    """Parses 'uniform(0.5, 3)', 'choice(a, b)', '0.1', ... (see the module doc).

    Args:
      text: the domain.
      where: how errors name the entry (e.g. "--space entry 'lr=...'").

    Raises:
      ValueError: unknown function, wrong argument count or type, low >= high,
        loguniform's low <= 0, an empty or mixed-type choice, duplicate choices.
    """
    t = str(text).strip()
    if not t:
        raise ValueError(f"{where}: empty domain")
    m = _CALL_RE.match(t)
    if not m:
        if "(" in t or ")" in t:
            raise ValueError(f"{where}: cannot parse domain {t!r}; expected e.g. "
                             f"uniform(0, 1), loguniform(1e-3, 1), int(1, 8), "
                             f"choice(a, b) or a single value")
        return _choice([parse_value(t)], where)
    func, body = m.group(1).lower(), m.group(2)
    args = _split_args(body, where)
    if func == "choice":
        if not args:
            raise ValueError(f"{where}: choice() needs at least one value")
        return _choice([parse_value(a) for a in args], where)
    if func not in ("uniform", "loguniform", "int", "randint"):
        raise ValueError(f"{where}: unknown domain {func!r}; expected uniform, "
                         f"loguniform, int or choice")
    if len(args) not in (2, 3):
        raise ValueError(f"{where}: {func}() takes (low, high[, grid_points]), got "
                         f"{len(args)} argument(s) in {t!r}")
    points = _grid_points_arg(args, where)
    if func in ("int", "randint"):
        low, high = (parse_value(a) for a in args[:2])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError(f"{where}: int() bounds must be integers, got {t!r}")
        if low > high:
            raise ValueError(f"{where}: int() needs low <= high, got {t!r}")
        return IntUniform(int(low), int(high), points)
    low = float(_number(args[0], where, f"{func}() low"))
    high = float(_number(args[1], where, f"{func}() high"))
    if not low < high:
        raise ValueError(f"{where}: {func}() needs low < high, got {t!r}")
    if func == "loguniform":
        if low <= 0:
            raise ValueError(f"{where}: loguniform() needs low > 0, got {t!r}")
        return LogUniform(low, high, points)
    return Uniform(low, high, points)


def _choice(values: Sequence[Value], where: str) -> Choice:
    kinds = {_value_kind(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"{where}: choice values must all be bools, all numbers or all "
                         f"strings, got {[format_value(v) for v in values]}")
    seen = []
    for v in values:
        if any(v == s and type(v) is type(s) for s in seen):  # noqa: E721
            raise ValueError(f"{where}: duplicate choice value {format_value(v)!r}")
        seen.append(v)
    return Choice(tuple(values))


def _check_name(name: str, where: str) -> str:
    name = name.strip()
    if name.startswith("--"):
        name = name[2:]
    if not _NAME_RE.match(name):
        raise ValueError(f"{where}: {name!r} is not a valid flag name")
    return name


def parse_space_entry(entry: str) -> Tuple[str, Domain]:
    """'learning_rate=loguniform(0.01, 1)' -> ('learning_rate', LogUniform(0.01, 1))."""
    where = f"--space entry {entry!r}"
    if "=" not in str(entry):
        raise ValueError(f"{where}: expected name=domain, e.g. "
                         f"'learning_rate=loguniform(0.01, 1.0)'")
    name, domain = str(entry).split("=", 1)
    return _check_name(name, where), parse_domain(domain, where)


def _add(space: Space, name: str, domain: Domain, where: str) -> None:
    if name in space:
        raise ValueError(f"{where}: flag {name!r} is given more than once")
    space[name] = domain


def parse_space(entries: Sequence[str]) -> Space:
    """Parses `--space` entries into an ordered {flag name: domain}.

    Raises:
      ValueError: a malformed entry (named in the message), or a flag given twice.
    """
    space: Space = {}
    for entry in entries:
        name, domain = parse_space_entry(entry)
        _add(space, name, domain, f"--space entry {entry!r}")
    return space


def parse_space_text(text: str, source: str = "space file") -> Space:
    """A space from a JSON object or from `name=domain` lines (see the module doc)."""
    stripped = text.strip()
    space: Space = {}
    if stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: invalid JSON: {e}") from None
        for name, spec in obj.items():
            where = f"{source}: entry {name!r}"
            flag = _check_name(str(name), where)
            if isinstance(spec, str):
                domain = parse_domain(spec, where)
            elif isinstance(spec, list):
                if not spec:
                    raise ValueError(f"{where}: empty list of choices")
                if not all(isinstance(v, (bool, int, float, str)) for v in spec):
                    raise ValueError(f"{where}: choices must be bools, numbers or "
                                     f"strings, got {spec!r}")
                domain = _choice(spec, where)
            elif isinstance(spec, (bool, int, float)):
                domain = _choice([spec], where)
            else:
                raise ValueError(f"{where}: expected a domain string, a list of choices "
                                 f"or a value, got {spec!r}")
            _add(space, flag, domain, where)
        return space
    for lineno, line in enumerate(text.splitlines(), 1):
        line = _strip_comment(line)
        if not line:
            continue
        where = f"{source}, line {lineno} ({line!r})"
        try:
            name, domain = parse_space_entry(line)
        except ValueError as e:
            raise ValueError(str(e).replace(f"--space entry {line!r}", where)) from None
        _add(space, name, domain, where)
    return space


def _strip_comment(line: str) -> str:
    """The line without a `#` comment (a `#` inside quotes is kept), stripped."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i].strip()
    return line.strip()


def parse_space_file(path: str) -> Space:
    """Reads `parse_space_text` from a file; a missing file raises ValueError."""
    if not os.path.isfile(path):
        raise ValueError(f"--space_file {path!r} does not exist")
    with open(path, "r", encoding="utf-8") as f:
        return parse_space_text(f.read(), f"--space_file {path!r}")


def merge_spaces(*spaces: Space) -> Space:
    """Union of spaces; a flag in two of them raises ValueError."""
    out: Space = {}
    for s in spaces:
        for name, domain in s.items():
            _add(out, name, domain, "search space")
    return out


def describe_space(space: Space) -> Dict[str, str]:
    """{name: canonical domain string}: what a search records to detect changes."""
    return {name: d.describe() for name, d in space.items()}


# -- sampling ----------------------------------------------------------------------

def random_configs(space: Space, num_trials: int, seed: int) -> List[Dict[str, Value]]:
    """`num_trials` random configurations; trial i's from PCG64 seeded by (seed, i).

    Flags are drawn in sorted name order, so a configuration depends only on the
    seed, the trial index and the domains.
    """
    if not isinstance(num_trials, int) or num_trials < 1:
        raise ValueError(f"--trials must be a positive integer, got {num_trials!r}")
    if not space:
        raise ValueError("the search space is empty: give at least one --space entry "
                         "or a --space_file")
    configs = []
    for i in range(num_trials):
        rng = np.random.Generator(np.random.PCG64([int(seed) % 2 ** 32, i]))
        drawn = {name: space[name].sample(rng) for name in sorted(space)}
        configs.append({name: drawn[name] for name in space})
    return configs


def grid_size(space: Space, grid_points: int = 3) -> int:
    return int(np.prod([len(d.grid(grid_points)) for d in space.values()]))


def grid_configs(space: Space, grid_points: int = 3) -> List[Dict[str, Value]]:
    """Every combination (cartesian product, last entry fastest).

    Continuous domains contribute `grid_points` values (or their own third
    argument): linspace for uniform / int, geomspace for loguniform.
    """
    if not isinstance(grid_points, int) or grid_points < 2:
        raise ValueError(f"--grid_points must be an integer >= 2, got {grid_points!r}")
    if not space:
        raise ValueError("the search space is empty: give at least one --space entry "
                         "or a --space_file")
    names = list(space)
    axes = [space[n].grid(grid_points) for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*axes)]


def check_against_flags(space: Space, binary_flags: Mapping[str, str],
                        binary: str) -> None:
    """Every space entry must be a flag of the binary, bools only for bool flags.

    Args:
      binary_flags: {flag name: absl type ('bool', 'int', 'float', 'string', ...)}.
    """
    for name, domain in space.items():
        if name not in binary_flags:
            raise ValueError(f"search space entry {name!r}: {binary} has no flag "
                             f"--{name}")
        ftype = binary_flags[name]
        kind = domain.kind()
        if ftype == "bool" and kind != "bool":
            raise ValueError(f"search space entry {name!r}: --{name} is a boolean flag "
                             f"of {binary}; use choice(true, false), got "
                             f"{domain.describe()}")
        if ftype in ("int", "float") and kind != "number":
            raise ValueError(f"search space entry {name!r}: --{name} is a {ftype} flag "
                             f"of {binary}, got {domain.describe()}")
        if ftype == "int" and isinstance(domain, (Uniform, LogUniform)):
            raise ValueError(f"search space entry {name!r}: --{name} is an int flag of "
                             f"{binary}; use int(low, high) or choice(...), got "
                             f"{domain.describe()}")


def config_to_flags(config: Mapping[str, Value]) -> List[str]:
    """{'lr': 0.1, 'dropout': False} -> ['--lr=0.1', '--nodropout'] (absl syntax)."""
    out = []
    for name, v in config.items():
        if isinstance(v, bool):
            out.append(f"--{name}" if v else f"--no{name}")
        else:
            out.append(f"--{name}={format_value(v)}")
    return out


# -- trials ------------------------------------------------------------------------

def trial_name(index: int) -> str:
    return f"trial_{index:03d}"


def find_metric(metrics: Optional[Mapping[str, Any]], name: str) -> Optional[float]:
    """The finite number `metrics[name]`, else `metrics['final'][name]`, else None."""
    if not isinstance(metrics, Mapping):
        return None
    for source in (metrics, metrics.get("final")):
        if isinstance(source, Mapping) and name in source:
            v = source[name]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                return float(v)
    return None


def numeric_metrics(metrics: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """Every finite scalar of metrics.json's top level and of its `final` dict."""
    out: Dict[str, float] = {}
    if not isinstance(metrics, Mapping):
        return out
    for source in (metrics.get("final"), metrics):
        if isinstance(source, Mapping):
            for k, v in source.items():
                if (isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v)):
                    out[str(k)] = float(v)
    return out


DONE_STATUSES = ("done", "stopped_early")


def metrics_complete(metrics: Optional[Mapping[str, Any]], metric: str) -> bool:
    """True when a metrics.json is final (no `status`, or done / stopped_early) and
    holds `metric` as a finite number."""
    if not isinstance(metrics, Mapping):
        return False
    status = metrics.get("status")
    if status is not None and status not in DONE_STATUSES:
        return False
    return find_metric(metrics, metric) is not None


def read_json(path: str) -> Optional[Any]:
    """A JSON file's content; None when missing or not valid JSON (half-written)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_selection_metric(metric: str, allow_non_validation: bool = False) -> List[str]:
    """The guard against tuning on the test set.

    Returns a list of warnings (empty when `metric` is a validation metric).

    Raises:
      ValueError: `metric` names a test metric (always refused), or is not a `val_`
        metric and `allow_non_validation` is False.
    """
    m = str(metric).strip()
    if not m:
        raise ValueError("--metric must name a metric of the binary's metrics.json, "
                         "e.g. val_accuracy")
    if m.lower().startswith("test"):
        raise ValueError(
            f"--metric={m!r} selects on the TEST set: choosing hyperparameters by test "
            f"performance leaks the test set into the model and makes the reported test "
            f"score optimistic. Select on a validation split instead (e.g. "
            f"--metric=val_accuracy; the search passes the binary --val_size) and look "
            f"at test metrics only for the final, chosen trial.")
    if not m.lower().startswith("val_"):
        if not allow_non_validation:
            raise ValueError(
                f"--metric={m!r} is not a validation metric (no 'val_' prefix). "
                f"Select on held-out data (e.g. --metric=val_accuracy), or pass "
                f"--allow_non_validation_metric if you really mean to select on "
                f"{m!r}.")
        bar = "!" * 78
        return [f"{bar}\nWARNING: selecting trials on {m!r}, which is NOT a validation "
                f"metric (--allow_non_validation_metric).\nThe best trial is chosen on "
                f"data that is not held out; its scores are optimistic.\n{bar}"]
    return []


def best_trial(trials: Sequence[Mapping[str, Any]], metric: str,
               mode: str = "max") -> Optional[Mapping[str, Any]]:
    """The completed trial with the best `metric` (ties: the lowest index)."""
    if mode not in ("max", "min"):
        raise ValueError(f"--mode must be 'max' or 'min', got {mode!r}")
    best, best_value = None, None
    for t in trials:
        if t.get("status") != "ok":
            continue
        v = find_metric(t.get("metrics"), metric)
        if v is None:
            continue
        if best is None or (v > best_value if mode == "max" else v < best_value):
            best, best_value = t, v
    return best


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def result_columns(trials: Sequence[Mapping[str, Any]], space_names: Sequence[str],
                   metric: str) -> Tuple[List[str], List[str]]:
    """(hparam columns, metric columns): the selection metric first, then the other
    val_* and test_* metrics found in any trial, sorted."""
    found = set()
    for t in trials:
        for k in numeric_metrics(t.get("metrics")):
            if k != metric and (k.startswith("val_") or k.startswith("test_")):
                found.add(k)
    return list(space_names), [metric] + sorted(found)


def results_rows(trials: Sequence[Mapping[str, Any]], space_names: Sequence[str],
                 metric: str) -> Tuple[List[str], List[List[Any]]]:
    """Header and rows of the results table (one row per trial)."""
    hp_cols, metric_cols = result_columns(trials, space_names, metric)
    header = ["trial", "status"] + hp_cols + metric_cols + ["seconds"]
    rows = []
    for t in trials:
        values = numeric_metrics(t.get("metrics"))
        cfg = t.get("config", {})
        rows.append([t.get("name"), t.get("status")] + [cfg.get(c) for c in hp_cols]
                    + [values.get(c) for c in metric_cols] + [t.get("seconds")])
    return header, rows


def results_markdown(trials: Sequence[Mapping[str, Any]], space_names: Sequence[str],
                     metric: str, mode: str, best_name: Optional[str] = None) -> str:
    """A markdown table of the trials; the best one marked with '*'."""
    header, rows = results_rows(trials, space_names, metric)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_fmt(c) for c in row]
        if best_name is not None and row[0] == best_name:
            cells[0] += " *"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Selection: {mode} of {metric}" +
                 (f"; best (*): {best_name}" if best_name else "; no completed trial"))
    return "\n".join(lines) + "\n"


def results_csv(trials: Sequence[Mapping[str, Any]], space_names: Sequence[str],
                metric: str) -> str:
    header, rows = results_rows(trials, space_names, metric)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if c is None else (format_value(c) if isinstance(c, (bool, float))
                                          else c) for c in row])
    return buf.getvalue()


# -- HParams protos (tensorboard.hparams, built from descriptors) ----------------------

PLUGIN_NAME = "hparams"
PLUGIN_DATA_VERSION = 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"

DATA_TYPE_STRING, DATA_TYPE_BOOL, DATA_TYPE_FLOAT64 = 1, 2, 3
DATASET_UNKNOWN, DATASET_TRAINING, DATASET_VALIDATION = 0, 1, 2
STATUS_UNKNOWN, STATUS_SUCCESS, STATUS_FAILURE, STATUS_RUNNING = 0, 1, 2, 3

_PROTO_CLASSES: Dict[str, Any] = {}


def proto_classes() -> Dict[str, Any]:
    """Message classes of the hparams plugin's protos (the fields written here).

    Field numbers and types follow tensorboard/plugins/hparams/api.proto and
    plugin_data.proto (package `tensorboard.hparams`), so bytes written with them
    are read by TensorBoard's hparams plugin. Returns {'Experiment', 'HParamInfo',
    'Interval', 'MetricName', 'MetricInfo', 'HParamsPluginData', 'SessionStartInfo',
    'SessionEndInfo'}.
    """
    if _PROTO_CLASSES:
        return _PROTO_CLASSES
    # pylint: disable=import-outside-toplevel
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    struct_file = descriptor_pb2.FileDescriptorProto()
    struct_pb2.DESCRIPTOR.CopyToProto(struct_file)
    pool.Add(struct_file)

    fd = descriptor_pb2.FileDescriptorProto(
        name="tfcore/tensorboard_hparams.proto", package="tensorboard.hparams",
        syntax="proto3", dependency=["google/protobuf/struct.proto"])

    def enum(name, values):
        e = fd.enum_type.add(name=name)
        for i, v in enumerate(values):
            e.value.add(name=v, number=i)

    enum("DataType", ["DATA_TYPE_UNSET", "DATA_TYPE_STRING", "DATA_TYPE_BOOL",
                      "DATA_TYPE_FLOAT64"])
    enum("DatasetType", ["DATASET_UNKNOWN", "DATASET_TRAINING", "DATASET_VALIDATION"])
    enum("Status", ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                    "STATUS_RUNNING"])

    def message(name, fields, oneofs=()):
        m = fd.message_type.add(name=name)
        for o in oneofs:
            m.oneof_decl.add(name=o)
        for spec in fields:
            fname, number, ftype = spec[:3]
            type_name = spec[3] if len(spec) > 3 else None
            label = F.LABEL_REPEATED if (len(spec) > 4 and spec[4] == "repeated") \
                else F.LABEL_OPTIONAL
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if len(spec) > 4 and spec[4] not in ("repeated", None):
                f.oneof_index = list(oneofs).index(spec[4])
        return m

    T = F
    message("Interval", [("min_value", 1, T.TYPE_DOUBLE), ("max_value", 2, T.TYPE_DOUBLE)])
    message("MetricName", [("group", 1, T.TYPE_STRING), ("tag", 2, T.TYPE_STRING)])
    message("HParamInfo", [
        ("name", 1, T.TYPE_STRING), ("display_name", 2, T.TYPE_STRING),
        ("description", 3, T.TYPE_STRING),
        ("type", 4, T.TYPE_ENUM, ".tensorboard.hparams.DataType"),
        ("domain_discrete", 5, T.TYPE_MESSAGE, ".google.protobuf.ListValue", "domain"),
        ("domain_interval", 6, T.TYPE_MESSAGE, ".tensorboard.hparams.Interval", "domain"),
    ], oneofs=("domain",))
    message("MetricInfo", [
        ("name", 1, T.TYPE_MESSAGE, ".tensorboard.hparams.MetricName"),
        ("display_name", 3, T.TYPE_STRING), ("description", 4, T.TYPE_STRING),
        ("dataset_type", 5, T.TYPE_ENUM, ".tensorboard.hparams.DatasetType"),
    ])
    message("Experiment", [
        ("name", 6, T.TYPE_STRING), ("description", 1, T.TYPE_STRING),
        ("user", 2, T.TYPE_STRING), ("time_created_secs", 3, T.TYPE_DOUBLE),
        ("hparam_infos", 4, T.TYPE_MESSAGE, ".tensorboard.hparams.HParamInfo", "repeated"),
        ("metric_infos", 5, T.TYPE_MESSAGE, ".tensorboard.hparams.MetricInfo", "repeated"),
    ])
    start = message("SessionStartInfo", [
        ("hparams", 1, T.TYPE_MESSAGE,
         ".tensorboard.hparams.SessionStartInfo.HparamsEntry", "repeated"),
        ("model_uri", 2, T.TYPE_STRING), ("monitor_url", 3, T.TYPE_STRING),
        ("group_name", 4, T.TYPE_STRING), ("start_time_secs", 5, T.TYPE_DOUBLE),
    ])
    entry = start.nested_type.add(name="HparamsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                    type_name=".google.protobuf.Value")
    message("SessionEndInfo", [
        ("status", 1, T.TYPE_ENUM, ".tensorboard.hparams.Status"),
        ("end_time_secs", 2, T.TYPE_DOUBLE),
    ])
    message("HParamsPluginData", [
        ("version", 1, T.TYPE_INT32),
        ("experiment", 2, T.TYPE_MESSAGE, ".tensorboard.hparams.Experiment", "data"),
        ("session_start_info", 3, T.TYPE_MESSAGE, ".tensorboard.hparams.SessionStartInfo",
         "data"),
        ("session_end_info", 4, T.TYPE_MESSAGE, ".tensorboard.hparams.SessionEndInfo",
         "data"),
    ], oneofs=("data",))
    pool.Add(fd)
    for name in ("Experiment", "HParamInfo", "Interval", "MetricName", "MetricInfo",
                 "HParamsPluginData", "SessionStartInfo", "SessionEndInfo"):
        desc = pool.FindMessageTypeByName(f"tensorboard.hparams.{name}")
        _PROTO_CLASSES[name] = message_factory.GetMessageClass(desc)
    return _PROTO_CLASSES


def _set_value(pb_value, v: Value) -> None:
    """Fills a google.protobuf.Value as TensorBoard does (bool, number, string)."""
    if isinstance(v, bool):
        pb_value.bool_value = v
    elif isinstance(v, (int, float)):
        pb_value.number_value = float(v)
    else:
        pb_value.string_value = str(v)


def experiment_plugin_data(space: Space, metrics: Sequence[str],
                           time_created_secs: float = 0.0,
                           description: str = "") -> bytes:
    """Serialized `HParamsPluginData{experiment}`: hparam infos with their domains
    (discrete lists for choices, intervals for ranges) and metric infos."""
    c = proto_classes()
    exp = c["Experiment"](description=description, time_created_secs=time_created_secs)
    for name, domain in space.items():
        info = exp.hparam_infos.add(name=name)
        kind = domain.kind()
        if isinstance(domain, Choice):
            info.type = {"bool": DATA_TYPE_BOOL, "number": DATA_TYPE_FLOAT64,
                         "string": DATA_TYPE_STRING}[kind]
            for v in sorted(domain.values):  # sorted, as hp.Discrete does
                _set_value(info.domain_discrete.values.add(), v)
        else:
            info.type = DATA_TYPE_FLOAT64
            info.domain_interval.min_value = float(domain.low)
            info.domain_interval.max_value = float(domain.high)
    for m in metrics:
        dataset = DATASET_VALIDATION if m.startswith("val_") else DATASET_UNKNOWN
        exp.metric_infos.add(name=c["MetricName"](tag=m), dataset_type=dataset)
    data = c["HParamsPluginData"](version=PLUGIN_DATA_VERSION)
    data.experiment.CopyFrom(exp)
    return data.SerializeToString()


def session_start_plugin_data(config: Mapping[str, Value], group_name: str = "",
                              start_time_secs: float = 0.0, model_uri: str = "") -> bytes:
    c = proto_classes()
    data = c["HParamsPluginData"](version=PLUGIN_DATA_VERSION)
    info = data.session_start_info
    info.group_name = group_name
    info.start_time_secs = float(start_time_secs)
    info.model_uri = model_uri
    for name, v in config.items():
        _set_value(info.hparams[name], v)
    return data.SerializeToString()


def session_end_plugin_data(ok: bool, end_time_secs: float = 0.0) -> bytes:
    c = proto_classes()
    data = c["HParamsPluginData"](version=PLUGIN_DATA_VERSION)
    data.session_end_info.status = STATUS_SUCCESS if ok else STATUS_FAILURE
    data.session_end_info.end_time_secs = float(end_time_secs)
    return data.SerializeToString()


def parse_plugin_data(content: bytes):
    """`HParamsPluginData` from a summary's plugin content (tests, scripts)."""
    return proto_classes()["HParamsPluginData"].FromString(content)


# -- writing (TensorFlow) ----------------------------------------------------------

def _clear_events(logdir: str) -> None:
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        os.remove(path)


def _write_plugin_summaries(logdir: str, items: Sequence[Tuple[str, bytes]],
                            scalars: Mapping[str, float] = (), step: int = 0) -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    os.makedirs(logdir, exist_ok=True)
    _clear_events(logdir)
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        for tag, content in items:
            md = tf.compat.v1.SummaryMetadata()
            md.plugin_data.plugin_name = PLUGIN_NAME
            md.plugin_data.content = content
            tf.summary.write(tag, tf.zeros([0], tf.float32), step=step, metadata=md)
        for name, value in dict(scalars).items():
            md = tf.compat.v1.SummaryMetadata()
            md.plugin_data.plugin_name = "scalars"
            md.data_class = 1  # DATA_CLASS_SCALAR
            tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                             metadata=md)
    writer.close()


def write_hparams_config(logdir: str, space: Space, metrics: Sequence[str],
                         time_created_secs: float = 0.0, description: str = "") -> None:
    """Writes (replacing earlier ones) the experiment summary into `logdir`'s root run,
    like `hp.hparams_config(hparams=..., metrics=...)`."""
    _write_plugin_summaries(logdir, [(EXPERIMENT_TAG, experiment_plugin_data(
        space, metrics, time_created_secs, description))])


def write_trial_hparams(logdir: str, config: Mapping[str, Value],
                        metrics: Mapping[str, float], ok: bool,
                        start_time_secs: float = 0.0, end_time_secs: float = 0.0,
                        group_name: str = "", model_uri: str = "") -> None:
    """Writes (replacing earlier ones) one session into its run directory `logdir`:
    `hp.hparams(config)`'s SessionStartInfo, each metric as a scalar at step 0 (the
    tag the experiment's MetricInfo names), and a SessionEndInfo (success/failure)."""
    _write_plugin_summaries(
        logdir,
        [(SESSION_START_INFO_TAG, session_start_plugin_data(
            config, group_name, start_time_secs, model_uri)),
         (SESSION_END_INFO_TAG, session_end_plugin_data(ok, end_time_secs))],
        scalars=metrics)
