"""Hyperparameter search spaces on Optuna, the searched binary's flags, HParams.

The parts of `python -m train.search` that do not run trials: the `--space` syntax,
Optuna samplers and pruners for a space, the searched binary's flags (and the
`--val_size` hand-off), reading a trial's metrics.json, the guard against selecting on
test data, and TensorBoard HParams through TensorBoard's own `hparams` API.

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
default `grid_points` of `grid_values`). A space file (`parse_space_file`) is either
a JSON object `{"name": "domain string" | [values] | value}` or a text file with one
`name=domain` per line (`#` starts a comment).

Sampling is Optuna's: `Domain.suggest(trial, name)` asks an `optuna.Trial` for a value
(`suggest_float(..., log=True)` for loguniform, `suggest_int`, `suggest_categorical`);
`make_sampler` gives TPE / random / CMA-ES, each drawing trial n's values from a
generator seeded by `trial_seed(seed, n)` (`TrialSeededSampler`), or a grid over
`grid_values`; `make_pruner` the median or Hyperband pruner.

The binary: `binary_flags` (its absl flags from `--helpxml`), `check_against_flags`,
`trial_flags` (the extra flags every trial gets, with `--val_size`), `config_to_flags`.
A trial's metrics.json (`tfcore.training.metrics_io`): `find_metric`,
`numeric_metrics`, `metrics_problem`, `report_epochs` (its per-epoch `history` of the
metric to `trial.report`). `check_selection_metric`: a `test*` metric is refused.

HParams: `write_hparams_config(logdir, space, metrics)` writes the experiment (the
hparams with their domains, the metrics) into the root run with
`tensorboard.plugins.hparams.api.hparams_config`, and `write_trial_hparams(logdir /
<trial>, ...)` one session: `api.hparams` (its values), its metrics as scalars and a
`SessionEndInfo` (`tensorboard.plugins.hparams.summary.session_end_pb`). View with
`tensorboard --logdir=<dir>` (HParams tab).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import optuna

from tfcore.checks import ArgumentError

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

    def suggest(self, trial: Any, name: str) -> Value:
        """`trial.suggest_categorical(name, values)` (an `optuna.Trial`)."""
        return trial.suggest_categorical(name, list(self.values))

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

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high))

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

    def suggest(self, trial: Any, name: str) -> float:
        return float(trial.suggest_float(name, self.low, self.high, log=True))

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

    def suggest(self, trial: Any, name: str) -> int:
        return int(trial.suggest_int(name, self.low, self.high))

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
        raise ArgumentError(f"{where}: unterminated quote {quote} in {text!r}")
    parts.append("".join(current).strip())
    if len(parts) == 1 and not parts[0]:
        return []
    if any(not p for p in parts):
        raise ArgumentError(f"{where}: empty value in {text!r}")
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
        raise ArgumentError(f"{where}: {what} must be a finite number, got {text!r}")
    return v


def _grid_points_arg(args: List[str], where: str) -> Optional[int]:
    if len(args) < 3:
        return None
    v = parse_value(args[2])
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ArgumentError(f"{where}: the number of grid points must be an integer >= 2, "
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
        raise ArgumentError(f"{where}: empty domain")
    m = _CALL_RE.match(t)
    if not m:
        if "(" in t or ")" in t:
            raise ArgumentError(f"{where}: cannot parse domain {t!r}; expected e.g. "
                             f"uniform(0, 1), loguniform(1e-3, 1), int(1, 8), "
                             f"choice(a, b) or a single value")
        return _choice([parse_value(t)], where)
    func, body = m.group(1).lower(), m.group(2)
    args = _split_args(body, where)
    if func == "choice":
        if not args:
            raise ArgumentError(f"{where}: choice() needs at least one value")
        return _choice([parse_value(a) for a in args], where)
    if func not in ("uniform", "loguniform", "int", "randint"):
        raise ArgumentError(f"{where}: unknown domain {func!r}; expected uniform, "
                         f"loguniform, int or choice")
    if len(args) not in (2, 3):
        raise ArgumentError(f"{where}: {func}() takes (low, high[, grid_points]), got "
                         f"{len(args)} argument(s) in {t!r}")
    points = _grid_points_arg(args, where)
    if func in ("int", "randint"):
        low, high = (parse_value(a) for a in args[:2])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise ArgumentError(f"{where}: int() bounds must be integers, got {t!r}")
        if low > high:
            raise ArgumentError(f"{where}: int() needs low <= high, got {t!r}")
        return IntUniform(int(low), int(high), points)
    low = float(_number(args[0], where, f"{func}() low"))
    high = float(_number(args[1], where, f"{func}() high"))
    if not low < high:
        raise ArgumentError(f"{where}: {func}() needs low < high, got {t!r}")
    if func == "loguniform":
        if low <= 0:
            raise ArgumentError(f"{where}: loguniform() needs low > 0, got {t!r}")
        return LogUniform(low, high, points)
    return Uniform(low, high, points)


def _choice(values: Sequence[Value], where: str) -> Choice:
    kinds = {_value_kind(v) for v in values}
    if len(kinds) > 1:
        raise ArgumentError(f"{where}: choice values must all be bools, all numbers or all "
                         f"strings, got {[format_value(v) for v in values]}")
    seen = []
    for v in values:
        if any(v == s and type(v) is type(s) for s in seen):  # noqa: E721
            raise ArgumentError(f"{where}: duplicate choice value {format_value(v)!r}")
        seen.append(v)
    return Choice(tuple(values))


def _check_name(name: str, where: str) -> str:
    name = name.strip()
    if name.startswith("--"):
        name = name[2:]
    if not _NAME_RE.match(name):
        raise ArgumentError(f"{where}: {name!r} is not a valid flag name")
    return name


def parse_space_entry(entry: str) -> Tuple[str, Domain]:
    """'learning_rate=loguniform(0.01, 1)' -> ('learning_rate', LogUniform(0.01, 1))."""
    where = f"--space entry {entry!r}"
    if "=" not in str(entry):
        raise ArgumentError(f"{where}: expected name=domain, e.g. "
                         f"'learning_rate=loguniform(0.01, 1.0)'")
    name, domain = str(entry).split("=", 1)
    return _check_name(name, where), parse_domain(domain, where)


def _add(space: Space, name: str, domain: Domain, where: str) -> None:
    if name in space:
        raise ArgumentError(f"{where}: flag {name!r} is given more than once")
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
            raise ArgumentError(f"{source}: invalid JSON: {e}") from None
        for name, spec in obj.items():
            where = f"{source}: entry {name!r}"
            flag = _check_name(str(name), where)
            if isinstance(spec, str):
                domain = parse_domain(spec, where)
            elif isinstance(spec, list):
                if not spec:
                    raise ArgumentError(f"{where}: empty list of choices")
                if not all(isinstance(v, (bool, int, float, str)) for v in spec):
                    raise ArgumentError(f"{where}: choices must be bools, numbers or "
                                     f"strings, got {spec!r}")
                domain = _choice(spec, where)
            elif isinstance(spec, (bool, int, float)):
                domain = _choice([spec], where)
            else:
                raise ArgumentError(f"{where}: expected a domain string, a list of choices "
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
            raise ArgumentError(str(e).replace(f"--space entry {line!r}", where)) from None
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
        raise ArgumentError(f"--space_file {path!r} does not exist")
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


# -- grids -------------------------------------------------------------------------

def grid_values(space: Space, grid_points: int = 3) -> Dict[str, List[Value]]:
    """{name: the values a grid search tries}: a choice's values; `grid_points` (or the
    domain's own third argument) points of a range: linspace for uniform / int,
    geomspace for loguniform. The grid is their cartesian product."""
    if not isinstance(grid_points, int) or grid_points < 2:
        raise ArgumentError(f"--grid_points must be an integer >= 2, got {grid_points!r}")
    return {name: domain.grid(grid_points) for name, domain in space.items()}


def grid_size(space: Space, grid_points: int = 3) -> int:
    """The number of points of the grid (the product of `grid_values`' lengths)."""
    return int(np.prod([len(v) for v in grid_values(space, grid_points).values()]))


# -- the searched binary's flags ----------------------------------------------------

def check_against_flags(space: Space, binary_flags: Mapping[str, str],
                        binary: str) -> None:
    """Every space entry must be a flag of the binary, bools only for bool flags.

    Args:
      binary_flags: {flag name: absl type ('bool', 'int', 'float', 'string', ...)}.
    """
    for name, domain in space.items():
        if name not in binary_flags:
            raise ArgumentError(f"search space entry {name!r}: {binary} has no flag "
                             f"--{name}")
        ftype = binary_flags[name]
        kind = domain.kind()
        if ftype == "bool" and kind != "bool":
            raise ArgumentError(f"search space entry {name!r}: --{name} is a boolean flag "
                             f"of {binary}; use choice(true, false), got "
                             f"{domain.describe()}")
        if ftype in ("int", "float") and kind != "number":
            raise ArgumentError(f"search space entry {name!r}: --{name} is a {ftype} flag "
                             f"of {binary}, got {domain.describe()}")
        if ftype == "int" and isinstance(domain, (Uniform, LogUniform)):
            raise ArgumentError(f"search space entry {name!r}: --{name} is an int flag of "
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


def _flag_names(args: Sequence[str]) -> Dict[str, Optional[str]]:
    """{'lr': '0.1', 'export': None} from ['--lr=0.1', '--export'] (extra flags)."""
    out: Dict[str, Optional[str]] = {}
    for a in args:
        if not a.startswith("--") or len(a) < 3:
            raise ArgumentError(f"extra flag (after --) {a!r}: expected --name=value or "
                             f"--name")
        name, _, value = a[2:].partition("=")
        out[name] = value if "=" in a else None
    return out


def binary_flags(binary: str, env: Optional[Mapping[str, str]] = None
                 ) -> Optional[Dict[str, str]]:
    """{flag name: absl type} from `python -m <binary> --helpxml`; None when the
    output holds no absl flag list. Raises ValueError when the module cannot run."""
    try:
        proc = subprocess.run([sys.executable, "-m", binary, "--helpxml"],
                              capture_output=True, text=True, timeout=300,
                              env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        raise ArgumentError(f"--binary={binary}: --helpxml did not answer in 300 s") from None
    start = proc.stdout.find("<?xml")
    if start < 0:
        lines = [s for s in (proc.stderr or proc.stdout).splitlines() if s.strip()]
        if proc.returncode != 0:
            raise ArgumentError(f"--binary={binary} cannot be run (exit code "
                             f"{proc.returncode}): {lines[-1] if lines else ''}")
        return None
    try:
        root = ElementTree.fromstring(proc.stdout[start:])
    except ElementTree.ParseError:
        return None
    return {f.findtext("name"): f.findtext("type") or "string"
            for f in root.iter("flag") if f.findtext("name")}


def trial_flags(binary: str, space: Space, extra_flags: Sequence[str], val_flag: str,
                val_size: int, env: Optional[Mapping[str, str]] = None
                ) -> Tuple[List[str], List[str]]:
    """(flags every trial gets after the sampled ones, warnings).

    `extra_flags` (`--name[=value]`) are checked against the binary's flags (from
    --helpxml), as is the space; `--<val_flag>=<val_size>` is added when the binary
    has that flag and neither the space nor `extra_flags` set it.

    Raises:
      ValueError: a flag the binary lacks, --workdir given, a flag both in the space and
        in `extra_flags`, or a validation split that can be 0 (no held-out data).
    """
    given = _flag_names(extra_flags)
    for source, names in (("extra flag --workdir", given),
                          ("search space entry 'workdir'", space)):
        if "workdir" in names:
            raise ArgumentError(f"{source}: the search sets each trial's --workdir itself")
    both = sorted(set(given) & set(space))
    if both:
        raise ArgumentError(f"flag(s) {', '.join('--' + b for b in both)} given both in "
                         f"the search space and after --")
    known = binary_flags(binary, env)
    if known is not None:
        check_against_flags(space, known, binary)
        unknown = [n for n in given if n not in known
                   and not (n.startswith("no") and n[2:] in known)]
        if unknown:
            raise ArgumentError(f"extra flag(s) {', '.join('--' + n for n in unknown)}: "
                             f"not flags of {binary}")
    extra = list(extra_flags)
    if not val_flag:
        return extra, ["--val_flag is empty: make sure the binary's val_* metrics come "
                       "from data held out of training."]
    if val_flag in space:
        domain = space[val_flag]
        if 0 in (domain.values if isinstance(domain, Choice) else (domain.low,)):
            raise ArgumentError(f"search space entry {val_flag!r} can be 0, which disables "
                             f"the validation split; selection needs held-out data")
        return extra, []
    if val_flag in given:
        if (given[val_flag] or "").strip() in ("0", "0.0"):
            raise ArgumentError(f"extra flag --{val_flag}={given[val_flag]} disables the "
                             f"validation split: selecting on it would have no held-out "
                             f"data")
        return extra, []
    if known is None or val_flag not in known:
        return extra, [f"{binary} has no --{val_flag} flag (or lists no flags): make "
                       f"sure its val_* metrics come from data held out of training."]
    if val_size == 0:
        raise ArgumentError(f"--val_size=0 would train the trials of {binary} without a "
                         f"validation split; selection needs held-out data")
    return extra + [f"--{val_flag}={val_size}"], []


# -- Optuna samplers and pruners ---------------------------------------------------

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("none", "median", "hyperband")


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s random draws: SeedSequence((seed, number))."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """`make(trial_seed(seed, n))`: a fresh sampler for each trial n.

    TPE, random and CMA-ES read their model from the study's trials, so only the random
    stream changes: trial n draws the same values whichever worker, process or machine
    runs it, and concurrent workers never share a stream (a seeded sampler object per
    process would hand two machines the same draws). Not shared between threads.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def before_trial(self, study, trial):
        self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name,
                                              param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self._inner.reseed_rng()


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its `study.stop()` (valid only inside
    `Study.optimize`; the search's workers count the grid themselves)."""

    def after_trial(self, study, trial, state, values):
        del study, trial, state, values


def make_sampler(name: str, space: Space, seed: int = 0, grid_points: int = 3,
                 startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """A sampler for `space`: 'grid' (the points of `grid_values`, in an order fixed by
    `seed`), else 'tpe' (constant liar for concurrent trials), 'random' or 'cmaes'
    (`startup_trials` random trials first), each as a `TrialSeededSampler`.

    Raises:
      ValueError: an unknown name, or 'cmaes' without the `cmaes` package.
    """
    if name not in SAMPLERS:
        raise ArgumentError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    if name == "grid":
        return GridSampler(grid_values(space, grid_points), seed=seed)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            raise ArgumentError("--sampler=cmaes needs the cmaes package (pip install "
                             "cmaes)") from None

    def make(s: int) -> optuna.samplers.BaseSampler:
        if name == "random":
            return optuna.samplers.RandomSampler(seed=s)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=s, n_startup_trials=startup_trials,
                                                warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=s, constant_liar=True,
                                          n_startup_trials=startup_trials)
    return TrialSeededSampler(make, seed)


def make_pruner(name: str, startup_trials: int = 5,
                warmup_epochs: int = 0) -> optuna.pruners.BasePruner:
    """'median' (Optuna's MedianPruner: stop a trial whose epoch value is worse than
    the median of earlier trials at that epoch, once `startup_trials` trials finished
    and after `warmup_epochs`), 'hyperband' (HyperbandPruner, min resource 1 epoch,
    reduction factor 3) or 'none'."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                           n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ArgumentError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


# -- a trial's metrics.json ---------------------------------------------------------

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


def metrics_problem(metrics: Optional[Mapping[str, Any]], metric: str) -> Optional[str]:
    """None when a metrics.json is final (no `status`, or done / stopped_early) and
    holds `metric` as a finite number; else what is wrong, in words."""
    if not isinstance(metrics, Mapping):
        return "no metrics.json written"
    status = metrics.get("status")
    if status is not None and status not in DONE_STATUSES:
        return f"metrics.json has status {status!r}"
    if find_metric(metrics, metric) is None:
        names = ", ".join(sorted(numeric_metrics(metrics))) or "none"
        return f"metric {metric!r} missing from metrics.json (numeric: {names})"
    return None


def metrics_complete(metrics: Optional[Mapping[str, Any]], metric: str) -> bool:
    """True when `metrics_problem` finds nothing wrong."""
    return metrics_problem(metrics, metric) is None


def read_json(path: str) -> Optional[Any]:
    """A JSON file's content; None when missing or not valid JSON (half-written)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def report_epochs(trial: Any, path: str, metric: str, reported: int) -> int:
    """Reports to `trial` (an `optuna.Trial`) each epoch of the metrics.json at `path`
    past the first `reported`: `trial.report(history[metric][e], e)` (NaN where the
    value is missing: diverged); returns how many epochs are reported now."""
    metrics = read_json(path)
    history = metrics.get("history") if isinstance(metrics, dict) else None
    values = history.get(metric) if isinstance(history, dict) else None
    if not isinstance(values, list):
        return reported
    for epoch in range(reported, len(values)):
        v = values[epoch]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        trial.report(float(v) if ok else float("nan"), epoch)
    return max(reported, len(values))


def check_selection_metric(metric: str, allow_non_validation: bool = False) -> List[str]:
    """The guard against tuning on the test set.

    Returns a list of warnings (empty when `metric` is a validation metric).

    Raises:
      ValueError: `metric` names a test metric (always refused), or is not a `val_`
        metric and `allow_non_validation` is False.
    """
    m = str(metric).strip()
    if not m:
        raise ArgumentError("--metric must name a metric of the binary's metrics.json, "
                         "e.g. val_accuracy")
    if m.lower().startswith("test"):
        raise ArgumentError(
            f"--metric={m!r} selects on the TEST set: choosing hyperparameters by test "
            f"performance leaks the test set into the model and makes the reported test "
            f"score optimistic. Select on a validation split instead (e.g. "
            f"--metric=val_accuracy; the search passes the binary --val_size) and look "
            f"at test metrics only for the final, chosen trial.")
    if not m.lower().startswith("val_"):
        if not allow_non_validation:
            raise ArgumentError(
                f"--metric={m!r} is not a validation metric (no 'val_' prefix). "
                f"Select on held-out data (e.g. --metric=val_accuracy), or pass "
                f"--allow_non_validation_metric if you really mean to select on "
                f"{m!r}.")
        bar = "!" * 78
        return [f"{bar}\nWARNING: selecting trials on {m!r}, which is NOT a validation "
                f"metric (--allow_non_validation_metric).\nThe best trial is chosen on "
                f"data that is not held out; its scores are optimistic.\n{bar}"]
    return []


# -- TensorBoard HParams (tensorboard.plugins.hparams) -------------------------------

def _hparam(name: str, domain: Domain):
    from tensorboard.plugins.hparams import api  # pylint: disable=import-outside-toplevel
    if isinstance(domain, Choice):
        values = list(domain.values)
        if domain.kind() == "number":  # TensorBoard's Discrete wants one dtype
            values = [float(v) for v in values]
        return api.HParam(name, api.Discrete(values))
    if isinstance(domain, IntUniform):
        return api.HParam(name, api.IntInterval(domain.low, domain.high))
    return api.HParam(name, api.RealInterval(float(domain.low), float(domain.high)))


def _fresh_writer(logdir: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    os.makedirs(logdir, exist_ok=True)
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        os.remove(path)  # one current summary per run: rewritten, not appended
    return tf.summary.create_file_writer(logdir)


def write_hparams_config(logdir: str, space: Space, metrics: Sequence[str],
                         time_created_secs: Optional[float] = None) -> None:
    """Writes (replacing earlier ones) the experiment into `logdir`'s root run:
    `api.hparams_config` with one `HParam` per space entry (Discrete for a choice,
    IntInterval / RealInterval for a range) and one `Metric` per name (VALIDATION for
    `val_*`)."""
    from tensorboard.plugins.hparams import api  # pylint: disable=import-outside-toplevel
    hparams = [_hparam(name, domain) for name, domain in space.items()]
    metric_infos = [api.Metric(m, dataset_type=api.Metric.VALIDATION if
                               m.startswith("val_") else None) for m in metrics]
    writer = _fresh_writer(logdir)
    with writer.as_default():
        api.hparams_config(hparams=hparams, metrics=metric_infos,
                           time_created_secs=time_created_secs)
    writer.close()


HPARAMS_STATUS = ("success", "failure", "running", "unknown")


def write_trial_hparams(logdir: str, values: Mapping[str, Value],
                        metrics: Mapping[str, float], status: str, trial_id: str,
                        start_time_secs: Optional[float] = None,
                        end_time_secs: Optional[float] = None) -> None:
    """Writes (replacing earlier ones) one session into its run directory `logdir`:
    `api.hparams(values, trial_id)`, each metric as a scalar at step 0 (the tags the
    experiment names) and, unless `status` is 'running', a SessionEndInfo with
    `status` ('success', 'failure' or 'unknown')."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    from tensorboard.plugins.hparams import api, api_pb2
    from tensorboard.plugins.hparams import summary as hp_summary
    if status not in HPARAMS_STATUS:
        raise ArgumentError(f"status must be one of {', '.join(HPARAMS_STATUS)}, got "
                         f"{status!r}")
    writer = _fresh_writer(logdir)
    with writer.as_default():
        api.hparams(dict(values), trial_id=trial_id, start_time_secs=start_time_secs)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=0)
        if status != "running":
            code = {"success": api_pb2.STATUS_SUCCESS, "failure": api_pb2.STATUS_FAILURE,
                    "unknown": api_pb2.STATUS_UNKNOWN}[status]
            pb = hp_summary.session_end_pb(code, end_time_secs)
            tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)
    writer.close()
